"""The mask helpers every method kind shares: the :class:`MaskedLayer` interface, finding a network's sparse
layers, first masks, one prune-and-grow step on one tensor, and resetting the optimizer state of changed
positions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeGuard

import torch
from torch import nn

from sparse_rl.distributions import layer_counts, layer_densities
from sparse_rl.layer_state import apply_to_slots
from sparse_rl.layers import SparseLinear


def random_positions(shape: tuple[int, ...], count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` distinct flat positions of a ``shape`` tensor, drawn uniformly at random, ascending (int64).
    The permutation is drawn as int32 where it fits: the same permutation and random draws as int64, half the
    memory (a 4096×4096 layer's is 64 MB, its peak at construction)."""
    numel = math.prod(shape)
    if not 0 <= count <= numel:
        raise ValueError(f"count must be in [0, {numel}], got {count}")
    dtype = torch.int32 if numel <= torch.iinfo(torch.int32).max else torch.int64
    return torch.randperm(numel, generator=generator, dtype=dtype)[:count].sort().values.long()


def positions_mask(positions: torch.Tensor, shape: tuple[int, ...],
                   device: torch.device | str | None = None) -> torch.Tensor:
    """The boolean mask of ``shape`` that is ``True`` at the flat ``positions``."""
    flat = torch.zeros(math.prod(shape), dtype=torch.bool)
    flat[positions] = True
    return flat.view(shape).to(device)


def random_mask(shape: tuple[int, ...], count: int, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """A boolean mask of ``shape`` with exactly ``count`` ``True`` entries placed uniformly at random."""
    return positions_mask(random_positions(shape, count, generator), shape, device)


class MaskedLayer(Protocol):
    """What every method kind's linear layer declares (``SparseLinear``, ``HaloLinear``, ``ThresholdLinear``):
    it computes with ``weight ⊙ mask``. FLOP accounting and the neuron readers ask :func:`is_masked_layer`;
    a plain ``nn.Linear`` is not one and counts as dense."""

    in_features: int
    out_features: int
    weight: torch.Tensor
    dense_weight_grad: bool
    """The backward pass computes the whole weight gradient (the learned thresholds), not only the active part."""

    @property
    def mask(self) -> torch.Tensor:
        """Boolean ``(out, in)``: the active positions."""

    @property
    def nnz(self) -> int:
        """Active weights."""

    @property
    def density(self) -> float:
        """Active weights over all weights."""


@dataclass(frozen=True)
class LayerUpdateStats:
    """What one topology update did to one layer."""

    dropped: int
    grown: int
    churn: float
    """Fraction of the active weights that were not active before the update."""
    dead_neurons: int
    """Output neurons left with no incoming connection."""
    density: float


def sparse_layers(module: nn.Module) -> dict[str, SparseLinear]:
    """Every ``SparseLinear`` in ``module``, by qualified name."""
    return {name: layer for name, layer in module.named_modules() if isinstance(layer, SparseLinear)}


@torch.no_grad()
def init_masks(
    layers: Mapping[str, SparseLinear],
    density: float,
    distribution: str = "erk",
    dense_layers: Iterable[str] = (),
    generator: torch.Generator | None = None,
) -> dict[str, int]:
    """Give each layer a random mask at its share of the global ``density``; returns the counts."""
    shapes = {name: (layer.out_features, layer.in_features) for name, layer in layers.items()}
    counts = layer_counts(shapes, layer_densities(shapes, density, distribution, dense_layers))
    for name, layer in layers.items():
        layer.set_mask(random_mask(layer.weight.shape, counts[name], generator, layer.weight.device))
    return counts


@torch.no_grad()
def update_mask(mask: torch.Tensor, prune_scores: torch.Tensor, grow_scores: torch.Tensor,
                count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop the ``count`` active positions with the lowest prune score, then grow the ``count``
    positions with the highest grow score among those inactive after the drop (a just-dropped
    weight may come back, as in RigL). Returns the new mask and the flat indices dropped and grown."""
    active = mask.flatten()
    count = min(count, int(active.sum()))
    dropped = prune_scores.flatten().float().masked_fill(~active, float("inf")).topk(count, largest=False).indices
    after_drop = active.clone()
    after_drop[dropped] = False
    grown = grow_scores.flatten().float().masked_fill(after_drop, float("-inf")).topk(count).indices
    new_mask = after_drop.clone()
    new_mask[grown] = True
    return new_mask.view_as(mask), dropped, grown


@torch.no_grad()
def reset_optimizer_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor,
                          positions: torch.Tensor) -> None:
    """Zero every per-element optimizer slot of ``param`` (Adam's moments, SGD momentum, ...)
    at the boolean ``positions``."""
    apply_to_slots(optimizer, param, lambda slot: slot.masked_fill_(positions, 0))


def is_masked_layer(module: object) -> TypeGuard[MaskedLayer]:
    """Whether ``module``'s class declares :class:`MaskedLayer`'s interface. Read from the class: a runtime
    ``isinstance`` against the protocol would fetch ``weight`` and ``mask``, which a compact layer builds densely
    on every access (milliseconds for a 1024×1024 layer, on each FLOP count)."""
    return all(hasattr(type(module), name) for name in ("nnz", "density", "dense_weight_grad"))
