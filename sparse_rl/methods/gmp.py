"""Gradual magnitude pruning (Zhu & Gupta 2017), the "Prune" baseline of Graesser et al. (ICML 2022).

Networks start dense. Every ``update_interval`` optimizer steps between ``prune_start`` and
``prune_end`` (fractions of training by default: 0.2 and 0.8, as Graesser et al.'s
``rigl/rl/tfagents/configs/sac_mujoco_pruning_config.gin``: steps 200k to 800k of 1M, every 1000) the
smallest-magnitude active weights are pruned so the density follows the cubic schedule
d_t = d_f + (1 - d_f)(1 - x)³ (x the position in [start, end]; s_t = s_f(1 - (1 - x)³) in
sparsity) and equals the target exactly from ``prune_end`` on. ``gmp_scope="layer"`` (default, as
that config's per-layer ERK targets, ``mask_init_method = 'erdos_renyi_kernel'``) gives layer l the
sparsity s_l · s_t / s_f (s_l its final ERK sparsity), so every layer follows the cubic too;
``"global"`` ranks all the network's weights together. Pruned weights never regrow; masks change
only through the controller, with the optimizer state of pruned weights zeroed. The FLOP
accounting reads the current masks, so the dense phase is paid in full. Once the prune at
``prune_end`` has given every layer its final count, each layer (and its target) takes the layout
``auto`` gives a fixed-count layer of that shape and density: compact where the kernels are faster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from sparse_rl.controller import MaskController
from sparse_rl.distributions import layer_counts, layer_densities
from sparse_rl.layer_state import convert_state, replace_parameter
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import reset_optimizer_state, sparse_layers
from sparse_rl.methods.halo import PruneSchedule
from sparse_rl.methods.kind import MethodKind, MethodPreset

if TYPE_CHECKING:
    from sparse_rl.sparsity import SparsityConfig

SCOPES = ("layer", "global")


def kept_counts(layers: Mapping[str, SparseLinear], density: float, final: Mapping[str, float],
                scope: str) -> dict[str, int] | None:
    """Weights each layer keeps at network ``density`` (``None`` for ``global``, which ranks all
    layers together). Per layer, the sparsity of each layer scales with the network's, so layer l
    keeps density 1 - (1 - final_l)·(1 - density)/(1 - final density of the network)."""
    if scope == "global":
        return None
    sizes = {name: layer.weight.numel() for name, layer in layers.items()}
    total = sum(sizes.values())
    final_sparsity = 1 - sum(final[name] * sizes[name] for name in sizes) / total
    share = 0.0 if final_sparsity <= 0 else (1 - density) / final_sparsity
    densities = {name: 1 - (1 - final[name]) * share for name in sizes}
    shapes = {name: tuple(layer.weight.shape) for name, layer in layers.items()}
    return layer_counts(shapes, densities)  # type: ignore[arg-type]  # (out, in) pairs


class GMPController(MaskController):
    """Prunes one network's layers by magnitude on a cubic schedule; nothing regrows.

    :param layers: the network's sparse layers by name.
    :param schedule: when and how far to prune (its ``final_density`` is the network's).
    :param final: each layer's final density (its ERK share); used by ``scope="layer"``.
    :param scope: ``layer`` or ``global``.
    :param targets: target-network layers that receive every new mask.
    """

    def __init__(self, layers: Mapping[str, SparseLinear], schedule: PruneSchedule, final: Mapping[str, float],
                 scope: str = "layer", targets: Mapping[str, SparseLinear] | None = None) -> None:
        super().__init__(layers, targets)
        if scope not in SCOPES:
            raise ValueError(f"unknown gmp_scope {scope!r}; allowed: {', '.join(SCOPES)}")
        self.schedule, self.final, self.scope = schedule, dict(final), scope
        self._at_final = False

    def on_step(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Prune if the schedule says so, and to the final density as soon as ``prune_end`` is reached
        (when it is not a multiple of ``update_interval``)."""
        step, progress = self.current_step, self.known_progress()
        density = self.schedule.density_at(step, progress)
        if density is None and not self._at_final and self._past_end(step, progress):
            density = self.schedule.final_density
        if density is not None:
            self.prune(density, optimizer)
            self._at_final = density == self.schedule.final_density
            if self._at_final:
                self.settle_layout(optimizer)

    def settle_layout(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Lay out every layer and its target as ``auto`` lays out a fixed-count layer (their counts no longer
        change): compact where faster; ``optimizer``'s state and pending gradients follow the new parameters."""
        for name, layer in self.layers.items():
            target = self.targets.get(name)
            for module, module_optimizer in ((layer, optimizer), (target, None)):
                if module is None:
                    continue
                module.compact_capable = True
                swapped = module.set_backend(module.backend)
                if swapped is not None and module_optimizer is not None:
                    old, new = swapped
                    replace_parameter(module_optimizer, old, new, partial(convert_state, module))

    def _past_end(self, step: int, progress: float | None) -> bool:
        position = progress if self.schedule.needs_progress else step
        return position is not None and position >= self.schedule.end

    @torch.no_grad()
    def prune(self, density: float, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Keep the largest-magnitude active weights: ``round(density · total)`` in all (per layer by
        :func:`kept_counts`); zero the rest, their optimizer state and the targets' copies."""
        total = sum(layer.weight.numel() for layer in self.layers.values())
        counts = kept_counts(self.layers, density, self.final, self.scope)
        scores = {name: torch.where(layer.mask, layer.weight.abs(), -1.0) for name, layer in self.layers.items()}
        if not all(bool(torch.isfinite(s).all()) for s in scores.values()):
            raise FloatingPointError(f"non-finite weights at GMP's prune (optimizer step {self.current_step})")
        if counts is None:
            flat = torch.cat([s.flatten() for s in scores.values()])
            kept_flat = _top(flat, min(max(1, math.floor(density * total + 0.5)), int((flat >= 0).sum())))
            kept, offset = {}, 0
            for name, s in scores.items():
                kept[name] = kept_flat[offset:offset + s.numel()].view_as(s)
                offset += s.numel()
        else:
            sizes = _within_active(counts, {name: layer.nnz for name, layer in self.layers.items()})
            kept = {name: _top(s.flatten(), sizes[name]).view_as(s) for name, s in scores.items()}
        for name, layer in self.layers.items():
            removed = layer.mask & ~kept[name]
            if bool(removed.any()):
                self.set_layer_mask(name, layer.mask & kept[name], removed)
                reset_optimizer_state(optimizer, layer.weight, removed)
        self.num_updates += 1


def _within_active(counts: Mapping[str, int], active: Mapping[str, int]) -> dict[str, int]:
    """``counts`` capped at each layer's active weights (nothing regrows), the excess moved to layers
    that still have active weights to spare, so the total stays ``sum(counts)`` (rounding can ask a
    layer for one weight more than an earlier prune left it)."""
    kept = {name: min(counts[name], active[name]) for name in counts}
    deficit = sum(counts.values()) - sum(kept.values())
    for name in kept:
        extra = min(deficit, active[name] - kept[name])
        kept[name] += extra
        deficit -= extra
    return kept


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[torch.topk(scores, count, sorted=False).indices] = True
    return keep


@dataclass(frozen=True)
class GMPSettings:
    """The ``gmp`` method's own ``policy_kwargs``.

    :param prune_start: first prune, an int optimizer step or a float fraction of training.
    :param prune_end: the prune that reaches the density (same units as ``prune_start``).
    :param gmp_scope: ``layer`` (each layer to its ERK share) or ``global`` (one ranking per network).
    """

    prune_start: int | float = 0.2
    prune_end: int | float = 0.8
    gmp_scope: str = "layer"

    def check(self, config: SparsityConfig) -> None:
        """``ValueError`` for an unknown scope or a schedule that cannot be built."""
        if self.gmp_scope not in SCOPES:
            raise ValueError(f"unknown gmp_scope {self.gmp_scope!r}; allowed: {', '.join(SCOPES)}")
        for name in ("prune_start", "prune_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be an int optimizer step or a float fraction, got {value!r}")
        for network in ("actor", "critic"):
            PruneSchedule(config.network_density(network), self.prune_start, self.prune_end, config.update_interval)


def gmp_controller(config: SparsityConfig, network: str, online: nn.Module, target: nn.Module | None) -> GMPController:
    """The GMP controller of one network; each layer's final density is its share under ``distribution``."""
    settings: GMPSettings = config.settings
    layers = sparse_layers(online)
    density = config.network_density(network)
    shapes = {name: (layer.out_features, layer.in_features) for name, layer in layers.items()}
    dense = config.network_dense_layers(network) + (tuple(getattr(online, "output_layer_names")())
                                                    if config.dense_output else ())
    final = layer_densities(shapes, density, config.distribution, dense)
    schedule = PruneSchedule(density, settings.prune_start, settings.prune_end, config.update_interval)
    return GMPController(layers, schedule, final, settings.gmp_scope,
                         sparse_layers(target) if target is not None else None)


KIND = MethodKind(
    name="gmp", layer_class=SparseLinear, make_controller=gmp_controller,
    presets=(MethodPreset("gmp", "gmp", None, None,
                          "Zhu & Gupta 2017, gradual magnitude pruning (Graesser et al. 2022's Prune)"),),
    settings_class=GMPSettings, starts_dense=True,
)
