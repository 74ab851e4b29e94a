"""Hidden neurons of a network: which layer feeds which, dormant scores, and ReDo's recycling.

A *hidden layer* is a linear layer inside an ``nn.Sequential`` that is followed there by an
activation module and whose output another linear layer reads (its *consumers*: the next linear
layer of the same ``Sequential``, or, for the last one, the network's top-level linear heads of
matching width, e.g. SAC's ``mu`` and ``log_std``). Output layers have no consumers.

A neuron is τ-dormant (Sokar et al. 2023, ReDo) when its mean |activation| over a batch, divided
by the mean of that over its layer, is ≤ τ; it is *dead* when it has no incoming active weight.
:func:`redo_reinit` is the one place that writes weights directly (re-initialised incoming
weights, zeroed outgoing weights and their optimizer moments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sparse_rl.layers import SparseLinear
from sparse_rl.masks import is_masked_layer


@dataclass(frozen=True)
class HiddenLayer:
    """A hidden layer: the activation module after it and the names of the layers that read its output."""

    activation: nn.Module
    consumers: tuple[str, ...]


def hidden_layers(network: nn.Module) -> dict[str, HiddenLayer]:
    """The hidden linear layers of ``network`` by qualified name (see the module docstring)."""
    heads = {name: child for name, child in network.named_children() if isinstance(child, nn.Linear)}
    found: dict[str, HiddenLayer] = {}
    for seq_name, seq in network.named_modules():
        if not isinstance(seq, nn.Sequential) or "features_extractor" in seq_name:
            continue
        items = list(seq.named_children())
        linears = [i for i, (_, module) in enumerate(items) if isinstance(module, nn.Linear)]
        for position, index in enumerate(linears):
            layer = items[index][1]
            if index + 1 >= len(items) \
                    or isinstance(items[index + 1][1], nn.Linear):
                continue
            if position + 1 < len(linears):
                consumers: tuple[str, ...] = (_join(seq_name, items[linears[position + 1]][0]),)
            else:
                consumers = tuple(n for n, h in heads.items() if h.in_features == layer.out_features)
            if consumers:
                found[_join(seq_name, items[index][0])] = HiddenLayer(items[index + 1][1], consumers)
    return found


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def dormant_scores(activations: torch.Tensor) -> torch.Tensor:
    """Each neuron's mean |activation| over the batch (dim 0), divided by its layer's mean of that;
    a layer whose activations are all 0 scores 0 everywhere."""
    mean_abs = activations.detach().abs().mean(dim=0)
    layer_mean = mean_abs.mean()
    return mean_abs / layer_mean if bool(layer_mean > 0) else torch.zeros_like(mean_abs)


def dormant_neurons(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """The τ-dormant neurons (a boolean vector) of one layer's :func:`dormant_scores`."""
    return scores <= tau


def dead_neurons(layer: nn.Linear) -> torch.Tensor:
    """Neurons of ``layer`` with no incoming active weight (a boolean vector); a layer without a
    ``mask`` counts its non-zero weights."""
    return ~(layer.mask if is_masked_layer(layer) else layer.weight != 0).any(dim=1)


@torch.no_grad()
def redo_reinit(layer: SparseLinear, consumers: list[SparseLinear], neurons: torch.Tensor,
                optimizer: torch.optim.Optimizer | None, sparse_init: bool = False,
                generator: torch.Generator | None = None) -> None:
    """ReDo's recycling of ``neurons`` (a boolean vector over ``layer``'s outputs), the only direct
    weight write of this package outside the layers: their active incoming weights are drawn anew
    from PyTorch's ``nn.Linear`` initialisation U(±1/sqrt(fan-in)) (the active fan-in with
    ``sparse_init``), their bias set to 0, their outgoing weights in every consumer set to 0, and
    the optimizer's per-element state of all of these zeroed. Either layout: the entries are those of
    the trainable weight (the dense ``weight`` or the compact ``values``)."""
    rows = neurons.nonzero().squeeze(1)
    if rows.numel() == 0:
        return
    weight = layer.trainable_weight()
    incoming, entry_rows = _entries(layer, rows=rows)
    if sparse_init:
        fan_in = torch.bincount(entry_rows, minlength=layer.out_features).clamp_min(1)[entry_rows]
        bound = 1.0 / torch.sqrt(fan_in.to(weight.dtype))
    else:
        bound = torch.full((entry_rows.numel(),), 1.0 / math.sqrt(layer.in_features), dtype=weight.dtype)
    fresh = torch.rand(entry_rows.numel(), generator=generator, dtype=weight.dtype) * 2 - 1
    weight[incoming] = (fresh * bound).to(weight.device)
    _zero_state(optimizer, weight, incoming)
    if layer.bias is not None:
        layer.bias[rows] = 0
        _zero_state(optimizer, layer.bias, rows)
    for consumer in consumers:
        outgoing, _ = _entries(consumer, cols=rows)
        consumer.trainable_weight()[outgoing] = 0
        _zero_state(optimizer, consumer.trainable_weight(), outgoing)


def _entries(layer: SparseLinear, rows: torch.Tensor | None = None,
             cols: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The active entries of ``layer``'s trainable weight in output ``rows`` (else input ``cols``): a boolean over
    that tensor's elements, and each selected entry's row."""
    if layer.layout == "compact":
        positions = layer.compact_structure().positions
        entry_rows, entry_cols = positions // layer.in_features, positions % layer.in_features
        selected = torch.isin(entry_rows, rows) if rows is not None else torch.isin(entry_cols, cols)  # type: ignore[arg-type]
        return selected, entry_rows[selected]
    selected = torch.zeros_like(layer.mask)
    if rows is not None:
        selected[rows] = layer.mask[rows]
    else:
        selected[:, cols] = layer.mask[:, cols]
    return selected, selected.nonzero()[:, 0]


def _zero_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, index: torch.Tensor) -> None:
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value[index] = 0
