"""A sparse layer's saved and optimizer state across layouts: what a state dict or an optimizer slot saved for the
masked layout (dense weight + mask) becomes in the compact one (values + positions), and the reverse, so models
of either layout (and of sparse_rl 0.1.0, masked only) load into layers of either."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from sparse_rl.backends.compact import CompactStructure

if TYPE_CHECKING:
    from sparse_rl.layers import SparseLinear


@torch.no_grad()
def to_layout(state_dict: dict[str, Any], prefix: str, layer: SparseLinear) -> None:
    """Rewrite a layer's entries saved in the other layout into ``layer``'s layout, in place."""
    weight, mask, values, positions = (prefix + key for key in ("weight", "mask", "values", "positions"))
    if layer.layout == "compact" and weight in state_dict and mask in state_dict:
        active = (state_dict.pop(mask) > 0.5).flatten()
        state_dict[positions] = active.nonzero().squeeze(1).to(torch.float64)
        state_dict[values] = state_dict.pop(weight).flatten()[active]
    elif layer.layout == "masked" and values in state_dict and positions in state_dict:
        index = valid_positions(state_dict.pop(positions), state_dict[values], layer.out_features * layer.in_features,
                                 prefix)
        structure = CompactStructure.from_positions(index, (layer.out_features, layer.in_features))
        state_dict[weight] = structure.dense(state_dict.pop(values))
        state_dict[mask] = structure.mask()


def valid_positions(saved: torch.Tensor, values: torch.Tensor | None, numel: int, prefix: str) -> torch.Tensor:
    """The saved float positions as ascending int64. Entries that are not a valid pattern (not integers, out of
    range, repeated: a perturbed state dict) are repaired to one, with a warning, so no kernel reads outside it."""
    count = saved.numel() if values is None else values.numel()
    positions = saved.detach().round().clamp(0, numel - 1).to(torch.int64).cpu()
    unique = torch.unique(positions)
    exact = torch.equal(positions.double(), saved.detach().cpu().double())
    if unique.numel() == count and torch.equal(unique, positions) and exact:
        return positions
    warnings.warn(f"{prefix}positions is not a valid sparsity pattern; it was repaired to {count} distinct "
                  "in-range positions", stacklevel=4)
    free = torch.ones(numel, dtype=torch.bool)
    free[unique] = False
    filler = free.nonzero().squeeze(1)[: max(count - unique.numel(), 0)]
    return torch.cat([unique[:count], filler]).sort().values


def convert_state(layer: SparseLinear, slot: Any) -> Any:
    """A per-element optimizer slot saved for either layout, in ``layer``'s layout now (other entries unchanged)."""
    if not torch.is_tensor(slot):
        return slot
    shape = (layer.out_features, layer.in_features)
    if layer.layout == "compact" and tuple(slot.shape) == shape:
        return layer.compact_structure().gather(slot)
    if layer.layout == "masked" and slot.dim() == 1 and slot.numel() == layer.nnz and slot.numel() != shape[0]:
        return CompactStructure.from_mask(layer.mask).dense(slot)
    return slot


def replace_parameter(optimizer: torch.optim.Optimizer, old: torch.Tensor, new: torch.Tensor, move: Any) -> None:
    """Put parameter ``new`` in ``old``'s place in ``optimizer``, with each of ``old``'s per-element slots (Adam's
    moments, ...) as ``move(slot)`` and its other state (the step count) unchanged."""
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    state = optimizer.state.pop(old, None)
    if state is not None:
        optimizer.state[new] = {key: move(slot) if torch.is_tensor(slot) and slot.shape == old.shape else slot
                                for key, slot in state.items()}


def apply_to_slots(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, move: Any) -> None:
    """Apply ``move`` to every per-element optimizer slot of ``param`` (Adam's moments, SGD's momentum, ...)."""
    if optimizer is None:
        return
    for slot in optimizer.state.get(param, {}).values():
        if torch.is_tensor(slot) and slot.shape == param.shape:
            move(slot)
