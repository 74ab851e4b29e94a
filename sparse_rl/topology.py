"""Prune and grow: drop the lowest-scored active weights, grow the highest-scored inactive ones,
zero what changed and reset its optimizer state. This is the mechanism of every method of the
``masked`` kind (RigL, SET, MEST, DST-EE, RLx2, DS-TD3); HALO's global prune and the learned
thresholds change masks through their own controllers (:mod:`sparse_rl.methods`).

:func:`update_mask` works on one tensor; :class:`TopologyController` applies it to all the
``SparseLinear`` layers of one network on a :class:`~sparse_rl.schedules.UpdateSchedule`,
from the hooks of :class:`~sparse_rl.controller.MaskController`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparse_rl.controller import MaskController
from sparse_rl.criteria import Criterion, ScoreInputs, needs_active_count
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
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.masked_fill_(positions, 0)


class TopologyController(MaskController):
    """Prune-and-grow topology updates of one network's ``SparseLinear`` layers on a schedule.

    Before every optimizer step (see :class:`~sparse_rl.controller.MaskController`) it runs a
    topology update when the schedule says so, scoring with the dense ``.grad`` the step is
    about to use. DST-EE's per-weight activity counts are buffers, saved with the owner's
    ``state_dict``.

    :param layers: the online network's sparse layers, by name.
    :param prune: prune criterion (``None`` with ``grow=None`` for a static topology).
    :param grow: grow criterion.
    :param schedule: when to update and how much.
    :param targets: target-network layers by the same names; they receive every new mask.
    :param grow_uses_gradient: whether the criteria score with the dense gradient (then the layers
        are asked for it one step before each update).
    """

    def __init__(
        self,
        layers: Mapping[str, SparseLinear],
        prune: Criterion | None = None,
        grow: Criterion | None = None,
        schedule: UpdateSchedule | None = None,
        targets: Mapping[str, SparseLinear] | None = None,
        grow_uses_gradient: bool = True,
    ) -> None:
        super().__init__(layers, targets)
        if (prune is None) != (grow is None):
            raise ValueError("give both a prune and a grow criterion, or neither for a static topology")
        self.prune, self.grow = prune, grow
        self.schedule = schedule if prune is not None else None
        self.grow_uses_gradient = grow_uses_gradient
        self._count_names = {name: "active_count_" + name.replace(".", "_") for name in self.layers}
        self.tracks_activity = needs_active_count(prune) or needs_active_count(grow)
        if self.tracks_activity:  # dense per weight, so only for the criteria that read it (DST-EE's ucb)
            for name, layer in self.layers.items():
                shape = (layer.out_features, layer.in_features)
                self.register_buffer(self._count_names[name], torch.zeros(shape, device=layer.device))

    def active_count(self, name: str) -> torch.Tensor:
        """Topology updates after which each weight of layer ``name`` was active (a 0-d zero when not tracked)."""
        if not self.tracks_activity:
            return torch.zeros(())
        return getattr(self, self._count_names[name])

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Models saved before counts were kept only for the criteria that read them carry counts for every
        method: those of a controller that keeps none are dropped."""
        if not self.tracks_activity:
            for key in [key for key in state_dict if key.startswith(prefix + "active_count_")]:
                del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def needs_dense_grad(self, step: int) -> bool:
        """Every ``interval``-th step when growth scores with gradients: a superset of the update
        steps that does not depend on progress, which may change before that step."""
        return self.grow_uses_gradient and self.schedule is not None and step % self.schedule.interval == 0

    def on_step(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Update the topology if the schedule says so."""
        step, progress = self.current_step, self.known_progress()
        if self.schedule is None or step % self.schedule.interval:
            return
        if progress is None and isinstance(self.schedule.end, float) and int(self.num_updates) == 0:
            warnings.warn(f"update_end={self.schedule.end} is a fraction of training, but the training progress "
                          "is unknown (the policy is trained outside SB3's learn()): the drop fraction stays "
                          "constant and updates never stop. Give update_end as an int step, or call "
                          "set_training_progress() on the policy.", stacklevel=3)
        if self.schedule.is_update_step(step, progress):
            self.update(self.schedule.drop_fraction_at(step, progress), optimizer)

    @torch.no_grad()
    def update(self, drop_fraction: float, optimizer: torch.optim.Optimizer | None = None
               ) -> dict[str, LayerUpdateStats]:
        """Replace ``round(drop_fraction * active)`` weights in every sparse layer.

        Scores use each weight's current ``.grad`` as the dense gradient. Grown weights are set
        to 0 and their optimizer state (looked up in ``optimizer``) is zeroed; dropped ones too.
        Non-finite scores (a diverged network) raise ``FloatingPointError`` instead of ranking NaNs.
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
            inputs = ScoreInputs(layer.score_weight(), layer.score_grad(), old_mask, self.active_count(name),
                                 int(self.num_updates))
            prune_scores, grow_scores = self.prune(inputs), self.grow(inputs)
            if not (bool(torch.isfinite(prune_scores[old_mask]).all())
                    and bool(torch.isfinite(grow_scores[~old_mask]).all())):
                raise FloatingPointError(f"non-finite topology scores in layer {name} at optimizer step "
                                         f"{self.current_step}: the network diverged")
            count = round(drop_fraction * active)
            new_mask, dropped, grown = update_mask(old_mask, prune_scores, grow_scores, count)
            changed = torch.zeros(old_mask.numel(), dtype=torch.bool, device=old_mask.device)
            changed[dropped] = True
            changed[grown] = True
            changed = changed.view_as(old_mask)
            self.set_layer_mask(name, new_mask, changed, optimizer)
            if self.tracks_activity:
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
