"""The ``prune-grow`` kind: RigL and its family (SET, MEST, DST-EE, static, dense; RLx2 and DS-TD3 reuse it).

:class:`PruneGrowController` rewires the ``SparseLinear`` layers of one network on an
:class:`~sparse_rl.schedules.UpdateSchedule`: before every optimizer step it counts it (the hooks of
:class:`~sparse_rl.controller.MaskController`) and, when the schedule says so, drops the lowest-scored
active weights and grows the highest-scored inactive ones (:func:`~sparse_rl.masks.update_mask`), zeroing
what changed and its optimizer state. The presets differ only in their (prune, grow) criteria and defaults.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sparse_rl.controller import MaskController
from sparse_rl.criteria import Criterion, ScoreInputs, needs_active_count
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import LayerUpdateStats, sparse_layers, update_mask
from sparse_rl.methods.kind import MethodKind, MethodPreset
from sparse_rl.schedules import UpdateSchedule, check_drop_fraction

if TYPE_CHECKING:
    from sparse_rl.sparsity import SparsityConfig


class PruneGrowController(MaskController):
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
            if not (bool((torch.isfinite(prune_scores) | ~old_mask).all())
                    and bool((torch.isfinite(grow_scores) | old_mask).all())):
                raise FloatingPointError(f"non-finite topology scores in layer {name} at optimizer step "
                                         f"{self.current_step}: the network diverged")
            count = round(drop_fraction * active)
            new_mask, dropped, grown = update_mask(old_mask, prune_scores, grow_scores, count)
            del inputs, prune_scores, grow_scores  # dense temporaries: free them before the re-layout allocates
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


def prune_grow_controller(config: SparsityConfig, network: str, online: nn.Module, target: nn.Module | None,
                          controller_class: Callable[..., PruneGrowController] = PruneGrowController
                          ) -> PruneGrowController:
    """A ``controller_class`` for ``online``'s sparse layers on ``config``'s criteria and schedule."""
    criteria = config.criteria()
    prune, grow = criteria if criteria else (None, None)
    return controller_class(sparse_layers(online), prune, grow, config.schedule(),
                            sparse_layers(target) if target is not None else None,
                            grow_uses_gradient=config.grow_uses_dense_gradient())


KIND = MethodKind(
    name="prune-grow",
    layer_class=SparseLinear,
    make_controller=prune_grow_controller,
    presets=(
        MethodPreset("rigl", "prune-grow", "magnitude", "gradient", "Evci et al. 2020, Rigging the Lottery"),
        MethodPreset("set", "prune-grow", "set", "random", "Mocanu et al. 2018, Sparse Evolutionary Training"),
        MethodPreset("mest", "prune-grow", "mest", "random", "Yuan et al. 2021, MEST"),
        MethodPreset("dst-ee", "prune-grow", "magnitude", "ucb", "Huang et al. 2023, DST-EE"),
        MethodPreset("static", "prune-grow", None, None, "fixed random sparse topology"),
        MethodPreset("dense", "prune-grow", None, None, "dense baseline (density 1)"),
    ),
)
