"""LM4LV's training loss on the answer: next-token cross-entropy on its text, MSE on its visual tokens' features, and
an optional pixel MSE through the frozen decoder (`lm4lv_loss`, what `LM4LVForConditionalGeneration.forward` returns
with `labels`)."""

import torch
from torch import nn

IGNORE_INDEX = -100  # label of positions without a loss (PyTorch's cross-entropy default)


def delimiter_positions(labels: torch.LongTensor, config) -> torch.BoolTensor:
    """Positions of `labels` that hold an image delimiter: the `len(<Img>)` positions right before each run of
    visual labels and the `len(</Img>)` positions right after it."""
    visual = labels == config.image_token_id
    previous = nn.functional.pad(visual[:, :-1], (1, 0))
    following = nn.functional.pad(visual[:, 1:], (0, 1))
    run_starts, run_ends = visual & ~previous, visual & ~following
    delimiters = torch.zeros_like(visual)
    for shift in range(1, len(config.image_start_token_ids or []) + 1):
        delimiters[:, :-shift] |= run_starts[:, shift:]
    for shift in range(1, len(config.image_end_token_ids or []) + 1):
        delimiters[:, shift:] |= run_ends[:, :-shift]
    return delimiters & ~visual


def text_loss(lm_head: nn.Module, states: torch.Tensor, next_labels: torch.LongTensor, config) -> torch.Tensor:
    """Cross-entropy of the next token at the supervised text positions (0 if there are none); the answer's image
    delimiters weigh `config.delimiter_loss_weight`."""
    text_positions = next_labels >= 0
    if not text_positions.any():
        return states.new_zeros((), dtype=torch.float32)
    logits = lm_head(states[text_positions]).float()
    token_losses = nn.functional.cross_entropy(logits, next_labels[text_positions], reduction="none")
    if config.delimiter_loss_weight != 1.0:
        delimiters = delimiter_positions(next_labels, config)[text_positions]
        token_losses = torch.where(delimiters, config.delimiter_loss_weight * token_losses, token_losses)
    return token_losses.mean()


def predicted_features(out_adapter: nn.Module, states: torch.Tensor, visual_positions: torch.BoolTensor,
                       input_features, target_features, config) -> torch.Tensor:
    """`out_adapter` of the states before each target visual token, `(n, vision_hidden_size)` (plus the input
    image's feature with `config.visual_skip_connection`), checked against the targets' count."""
    if target_features is None:
        raise ValueError("labels mark target visual tokens but no target_pixel_values were given")
    predicted = out_adapter(states[visual_positions].float())
    if config.visual_skip_connection:
        if input_features is None or input_features.shape != target_features.shape:
            raise ValueError("visual_skip_connection needs one input image per target image")
        predicted = predicted + input_features.reshape(-1, input_features.shape[-1])
    if predicted.shape[0] != target_features.shape[0] * target_features.shape[1]:
        raise ValueError(
            f"labels mark {predicted.shape[0]} target visual tokens but the targets have "
            f"{target_features.shape[0] * target_features.shape[1]}"
        )
    return predicted


def lm4lv_loss(model, hidden_states: torch.Tensor, labels: torch.LongTensor, input_features, target_features,
               target_pixel_values) -> dict[str, torch.Tensor | None]:
    r"""
    The loss on the answer, next-element prediction (the state at position t predicts element t + 1):
    `loss = text_loss + vision_loss_weight * vision_loss (+ pixel_loss_weight * pixel_loss)`.

    Args:
        model ([`LM4LVForConditionalGeneration`]): Gives the LM head, `out_adapter`, the vision decoder and the config.
        hidden_states (`torch.Tensor` of shape `(batch, seq_len, hidden)`): The LLM's last hidden states.
        labels (`torch.LongTensor` of shape `(batch, seq_len)`): Token ids where text is supervised,
            `config.image_token_id` where a target visual token is, -100 elsewhere.
        input_features, target_features (`torch.Tensor` of shape `(batch, num_visual_tokens, vision_hidden_size)`):
            MAE features of the degraded and the clean images (`None` when absent).
        target_pixel_values (`torch.Tensor`): The clean images, normalised (for the pixel loss).

    Returns:
        `dict` with `loss`, `text_loss`, `vision_loss` (both 0 where nothing of their kind is supervised) and
        `pixel_loss` (`None` unless `config.pixel_loss_weight > 0` and visual tokens are supervised).
    """
    config = model.config
    states, next_labels = hidden_states[:, :-1], labels[:, 1:]
    visual_positions = next_labels == config.image_token_id
    text = text_loss(model.get_output_embeddings(), states, next_labels, config)
    vision = states.new_zeros((), dtype=torch.float32)
    has_visual = visual_positions.any()
    if has_visual:
        predicted = predicted_features(model.out_adapter, states, visual_positions, input_features, target_features,
                                       config)
        vision = nn.functional.mse_loss(predicted, target_features.reshape(-1, target_features.shape[-1]))
    loss = text + config.vision_loss_weight * vision
    pixel = None
    if config.pixel_loss_weight > 0 and has_visual:
        decoded = model.vision_model.decode(predicted.reshape(target_features.shape)).float()
        pixel = nn.functional.mse_loss(decoded, target_pixel_values.float())
        loss = loss + config.pixel_loss_weight * pixel
    return {"loss": loss, "text_loss": text, "vision_loss": vision, "pixel_loss": pixel}
