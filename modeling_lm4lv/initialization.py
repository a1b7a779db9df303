"""Initialisations of LM4LV's trainable parts fitted to the frozen models (sample-efficiency options; the paper
initialises the adapters randomly): `in_adapter` into the LLM's token-embedding subspace, `out_adapter` by ridge
regression. Every tensor they create lives on the model's device."""

import torch

from .engines import readable_parameters


@torch.no_grad()
def init_in_adapter_from_features(model, features: torch.Tensor):
    """
    `config.in_adapter_init="embedding_subspace"`: set `model.in_adapter` to rotate the principal axes of `features`
    (a sample of vision features, `(..., vision_hidden_size)`) onto the top principal axes of the LLM's token
    embeddings, with one scale that matches their total variance, and the mean feature onto the mean embedding.
    (A scale per axis would blow up the features' weakest directions, where generated features carry errors.)
    """
    features = features.reshape(-1, features.shape[-1]).double()
    with readable_parameters(model.get_input_embeddings().parameters()):
        embeddings = model.get_input_embeddings().weight.double()
    feature_var, feature_axes = torch.linalg.eigh(torch.cov(features.T))
    embedding_var, embedding_axes = torch.linalg.eigh(torch.cov(embeddings.T))
    rank = min(features.shape[1], embeddings.shape[1])
    scale = (embedding_var[-rank:].clamp(min=0).sum() / feature_var[-rank:].clamp(min=1e-12).sum()).sqrt()
    weight = scale * embedding_axes[:, -rank:] @ feature_axes[:, -rank:].T
    adapter = model.in_adapter
    adapter.weight.copy_(weight.to(adapter.weight))
    adapter.bias.copy_((embeddings.mean(0) - weight @ features.mean(0)).to(adapter.bias))


@torch.no_grad()
def init_out_adapter_by_ridge(model, states: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-3):
    """
    `config.out_adapter_init="ridge"`: set `model.out_adapter` to the ridge regression of `targets` (the features to
    predict, `(n, vision_hidden_size)`) on `states` (the LLM's last hidden states that predict them, `(n,
    text_hidden_size)`), centred so the bias is not penalised; the penalty is `ridge` times the states' mean
    variance, so its strength does not depend on their scale.
    """
    states, targets = states.double(), targets.double()
    state_mean, target_mean = states.mean(0), targets.mean(0)
    centred = states - state_mean
    gram = centred.T @ centred
    penalty = ridge * gram.trace() / gram.shape[0]
    identity = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    weight = torch.linalg.solve(gram + penalty * identity, centred.T @ (targets - target_mean)).T
    adapter = model.out_adapter
    adapter.weight.copy_(weight.to(adapter.weight))
    adapter.bias.copy_((target_mean - weight @ state_mean).to(adapter.bias))
