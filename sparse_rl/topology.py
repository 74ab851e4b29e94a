"""The one mechanism that changes masks: prune the lowest-scored active weights, grow the
highest-scored inactive ones, zero what was grown and reset its optimizer state.

:func:`update_mask` works on one tensor; :class:`TopologyController` applies it to all the
``SparseLinear`` layers of one network on a :class:`~sparse_rl.schedules.UpdateSchedule`,
driven by hooks on that network's optimizer, and mirrors every new mask onto a target copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from sparse_rl.criteria import Criterion, ScoreInputs
from sparse_rl.distributions import layer_counts, layer_densities
from sparse_rl.layers import SparseLinear, random_mask
from sparse_rl.schedules import UpdateSchedule, check_drop_fraction


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
    shapes = {name: tuple(layer.weight.shape) for name, layer in layers.items()}
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
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.masked_fill_(positions, 0)


class TopologyController(nn.Module):
    """Owns the topology of one network's ``SparseLinear`` layers.

    Attach it to the network's optimizer with :meth:`attach`: before every optimizer step it
    counts the step, runs a topology update when the schedule says so (scoring with the dense
    ``.grad`` the step is about to use), and masks the gradients; after the step it re-masks the
    weights. Its counters and DST-EE's per-weight activity counts are buffers, so they are saved
    and restored with the owning module's ``state_dict``. The layers themselves are *not*
    submodules of the controller (they belong to the network).

    :param layers: the online network's sparse layers, by name.
    :param prune: prune criterion (``None`` with ``grow=None`` for a static topology).
    :param grow: grow criterion.
    :param schedule: when to update and how much.
    :param targets: target-network layers by the same names; they receive every new mask.
    """

    step: torch.Tensor
    num_updates: torch.Tensor
    progress: torch.Tensor

    def __init__(
        self,
        layers: Mapping[str, SparseLinear],
        prune: Criterion | None = None,
        grow: Criterion | None = None,
        schedule: UpdateSchedule | None = None,
        targets: Mapping[str, SparseLinear] | None = None,
    ) -> None:
        super().__init__()
        if (prune is None) != (grow is None):
            raise ValueError("give both a prune and a grow criterion, or neither for a static topology")
        targets = dict(targets or {})
        if set(targets) - set(layers):
            raise ValueError(f"target layers {sorted(set(targets) - set(layers))} have no online layer")
        self.layers = dict(layers)
        self.targets = targets
        self.prune, self.grow = prune, grow
        self.schedule = schedule if prune is not None else None
        self.last_stats: dict[str, LayerUpdateStats] = {}
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("progress", torch.full((), -1.0, dtype=torch.float64))
        self._count_names = {name: "active_count_" + name.replace(".", "_") for name in self.layers}
        for name, layer in self.layers.items():
            self.register_buffer(self._count_names[name], torch.zeros_like(layer.weight, dtype=torch.float32))

    def active_count(self, name: str) -> torch.Tensor:
        """Topology updates after which each weight of layer ``name`` was active."""
        return getattr(self, self._count_names[name])

    def set_progress(self, progress: float) -> None:
        """Tell the schedule how far training is, as a fraction in [0, 1]."""
        self.progress.fill_(float(progress))

    def _known_progress(self) -> float | None:
        value = float(self.progress)
        return None if value < 0 else value

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Run the schedule and keep the masks from hooks on ``optimizer``."""
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.before_optimizer_step(opt))
        optimizer.register_step_post_hook(lambda opt, args, kwargs: self.after_optimizer_step())

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Count the step, update the topology if scheduled, then mask the gradients."""
        self.step.add_(1)
        if self.schedule is not None and int(self.step) % self.schedule.interval == 0:
            step, progress = int(self.step), self._known_progress()
            if progress is None and isinstance(self.schedule.end, float) and int(self.num_updates) == 0:
                warnings.warn(f"update_end={self.schedule.end} is a fraction of training, but the training "
                              "progress is unknown: the drop fraction stays constant and updates never stop. "
                              "Give update_end as an int step, or learn() with SparseLoggingCallback.",
                              stacklevel=2)
            if self.schedule.is_update_step(step, progress):
                self.update(self.schedule.drop_fraction_at(step, progress), optimizer)
        for layer in self.layers.values():
            layer.mask_grad()

    def after_optimizer_step(self) -> None:
        """Hold masked weights at exactly zero."""
        for layer in self.layers.values():
            layer.apply_mask()

    @torch.no_grad()
    def update(self, drop_fraction: float, optimizer: torch.optim.Optimizer | None = None
               ) -> dict[str, LayerUpdateStats]:
        """Replace ``round(drop_fraction * active)`` weights in every sparse layer.

        Scores use each weight's current ``.grad`` as the dense gradient. Grown weights are set
        to 0 and their optimizer state (looked up in ``optimizer``) is zeroed; dropped ones too.
        """
        if self.prune is None or self.grow is None:
            raise ValueError("a static topology cannot be updated")
        drop_fraction = check_drop_fraction(drop_fraction)
        self.num_updates += 1
        stats = {}
        for name, layer in self.layers.items():
            old_mask = layer.mask.clone()
            active = int(old_mask.sum())
            if active == old_mask.numel():
                stats[name] = self._stats(layer, old_mask, 0)
                continue
            inputs = ScoreInputs(layer.weight, layer.weight.grad, old_mask, self.active_count(name),
                                 int(self.num_updates))
            count = round(drop_fraction * active)
            new_mask, dropped, grown = update_mask(old_mask, self.prune(inputs), self.grow(inputs), count)
            changed = torch.zeros(old_mask.numel(), dtype=torch.bool, device=old_mask.device)
            changed[dropped] = True
            changed[grown] = True
            changed = changed.view_as(old_mask)
            for net_layer in (layer, self.targets.get(name)):
                if net_layer is not None:
                    net_layer.weight.masked_fill_(changed, 0)
                    net_layer.set_mask(new_mask)
            reset_optimizer_state(optimizer, layer.weight, changed)
            self.active_count(name).add_(new_mask)
            stats[name] = self._stats(layer, old_mask, count)
        self.last_stats = stats
        return stats

    @staticmethod
    def _stats(layer: SparseLinear, old_mask: torch.Tensor, count: int) -> LayerUpdateStats:
        new_mask = layer.mask
        active = int(new_mask.sum())
        new_connections = int((new_mask & ~old_mask).sum())
        return LayerUpdateStats(
            dropped=count,
            grown=count,
            churn=new_connections / max(active, 1),
            dead_neurons=int((new_mask.sum(dim=1) == 0).sum()),
            density=active / new_mask.numel(),
        )
