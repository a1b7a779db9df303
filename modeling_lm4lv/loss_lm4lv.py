"""LM4LV's training loss on the answer: next-token cross-entropy on its text, MSE on its visual tokens' features, and
an optional pixel MSE through the frozen decoder (`lm4lv_loss`, what `LM4LVForConditionalGeneration.forward` returns
with `labels`).

Every position is gathered by index into tensors whose shapes the batch fixes (the visual positions' count is the
targets', the text positions come as a padded index tensor, `text_label_positions`), so with `check_inputs=False` the
loss never reads a tensor back to the host: the training step needs no device synchronisation and compiles whole.
"""

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


def text_label_positions(labels: torch.LongTensor) -> torch.LongTensor:
    """`(batch, k)` positions of each row's supervised text in `labels[:, 1:]` (the next-token labels), padded with -1
    to the longest row: what the collator computes on the host so that the loss needs no device synchronisation."""
    supervised = labels[:, 1:] >= 0
    counts = supervised.sum(-1)
    width = int(counts.max()) if counts.numel() else 0
    positions = torch.full((labels.shape[0], width), -1, dtype=torch.long, device=labels.device)
    rows, columns = supervised.nonzero(as_tuple=True)
    slots = torch.arange(columns.numel(), device=labels.device) - (counts.cumsum(0) - counts)[rows]
    positions[rows, slots] = columns
    return positions


def text_loss(lm_head: nn.Module, states: torch.Tensor, next_labels: torch.LongTensor, positions: torch.LongTensor,
              config) -> torch.Tensor:
    """Cross-entropy of the next token at the supervised text `positions` (`(batch, k)`, -1 = none; 0 if there are
    none); the answer's image delimiters weigh `config.delimiter_loss_weight`."""
    if positions.shape[1] == 0:
        return states.new_zeros((), dtype=torch.float32)
    supervised, index = positions >= 0, positions.clamp(min=0)
    logits = lm_head(states.gather(1, index[..., None].expand(-1, -1, states.shape[-1]))).float()
    token_losses = nn.functional.cross_entropy(
        logits.flatten(0, 1), next_labels.gather(1, index).flatten(), reduction="none"
    ).view_as(index)
    if config.delimiter_loss_weight != 1.0:
        delimiters = delimiter_positions(next_labels, config).gather(1, index)
        token_losses = torch.where(delimiters, config.delimiter_loss_weight * token_losses, token_losses)
    return torch.where(supervised, token_losses, 0).sum() / supervised.sum()


def predicted_features(out_adapter: nn.Module, states: torch.Tensor, visual_positions: torch.BoolTensor,
                       input_features, target_features, config) -> torch.Tensor:
    """`out_adapter` of the states before each target visual token, `(n, vision_hidden_size)` (plus the input
    image's feature with `config.visual_skip_connection`); `n` is the targets' count, which the labels must mark."""
    count = target_features.shape[0] * target_features.shape[1]
    index = visual_positions.flatten().nonzero_static(size=count).squeeze(1)
    predicted = out_adapter(states.flatten(0, 1)[index].float())
    if config.visual_skip_connection:
        if input_features is None or input_features.shape != target_features.shape:
            raise ValueError("visual_skip_connection needs one input image per target image")
        predicted = predicted + input_features.reshape(-1, input_features.shape[-1])
    return predicted


def check_visual_labels(visual_positions: torch.BoolTensor, target_features) -> bool:
    """Whether the labels mark target visual tokens (a device synchronisation): none is allowed, otherwise exactly as
    many as the targets have."""
    marked = int(visual_positions.sum())
    if marked and target_features is None:
        raise ValueError("labels mark target visual tokens but no target_pixel_values were given")
    if marked and marked != target_features.shape[0] * target_features.shape[1]:
        raise ValueError(
            f"labels mark {marked} target visual tokens but the targets have "
            f"{target_features.shape[0] * target_features.shape[1]}"
        )
    return marked > 0


def lm4lv_loss(model, hidden_states: torch.Tensor, labels: torch.LongTensor, input_features, target_features,
               target_pixel_values, text_positions: torch.LongTensor | None = None,
               check_inputs: bool = True) -> dict[str, torch.Tensor | None]:
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
        text_positions (`torch.LongTensor` of shape `(batch, k)`, *optional*): `text_label_positions(labels)`,
            computed from `labels` when not given.
        check_inputs (`bool`): Check that the labels mark as many visual tokens as the targets have. Without the
            check, given targets are taken to be marked, and the loss never synchronises with the device.

    Returns:
        `dict` with `loss`, `text_loss`, `vision_loss` (both 0 where nothing of their kind is supervised) and
        `pixel_loss` (`None` unless `config.pixel_loss_weight > 0` and visual tokens are supervised).
    """
    config = model.config
    states, next_labels = hidden_states[:, :-1], labels[:, 1:]
    if text_positions is None:
        text_positions = text_label_positions(labels)
    text = text_loss(model.get_output_embeddings(), states, next_labels, text_positions, config)
    visual_positions = next_labels == config.image_token_id
    has_visual = check_visual_labels(visual_positions, target_features) if check_inputs else target_features is not None
    vision = states.new_zeros((), dtype=torch.float32)
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
