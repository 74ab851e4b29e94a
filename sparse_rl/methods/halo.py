"""HALO (Seto et al., 2020): trainable per-weight shrinkage scales, then a global magnitude prune.

Every weight θ of a :class:`HaloLinear` has a trainable scale λ (initialised to 1). The penalty
``ξ Σ |θ|/λ² + ψ Σ |λ|`` is added to the network's loss and λ is trained with the weights by the
same optimizer; for a fixed θ the penalty is smallest at λ* = (2ξ|θ|/ψ)^{1/3}, so weights that
matter keep large scales (little shrinkage) while small ones are driven towards 0. The network
is trained dense, then pruned by global magnitude to the target density, gradually on the cubic
schedule of Zhu & Gupta (2017) between ``start`` and ``end``, and trained sparse afterwards.
:class:`HaloController` adds the penalty's gradient and prunes from optimizer hooks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from sparse_rl.controller import MaskController
from sparse_rl.distributions import check_density
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import reset_optimizer_state, sparse_layers
from sparse_rl.methods.kind import MethodKind, MethodPreset

if TYPE_CHECKING:
    from sparse_rl.sparsity import SparsityConfig


class HaloLinear(SparseLinear):
    """A ``SparseLinear`` with a trainable shrinkage scale λ per weight (initialised to 1).

    The forward pass uses the weights alone; λ enters only the HALO penalty.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.scale = nn.Parameter(torch.ones_like(self.weight))

    compact_capable = False  # its magnitude prunes change the count


def halo_penalty(weight: torch.Tensor, scale: torch.Tensor, xi: float, psi: float) -> torch.Tensor:
    """``ξ Σ |θ|/λ² + ψ Σ |λ|``."""
    return xi * (weight.abs() / scale.square()).sum() + psi * scale.abs().sum()


def halo_layers(module: nn.Module) -> dict[str, HaloLinear]:
    """Every ``HaloLinear`` in ``module``, by qualified name."""
    return {name: layer for name, layer in module.named_modules() if isinstance(layer, HaloLinear)}


@dataclass(frozen=True)
class PruneSchedule:
    """Gradual pruning to ``final_density``: every ``interval`` optimizer steps from ``start`` to
    ``end`` (ints: optimizer steps; floats: fractions of training), density following Zhu & Gupta's
    cubic ``d_t = d_f + (1 - d_f)(1 - x)^3`` with x the position in [start, end]."""

    final_density: float
    start: int | float = 0.2
    end: int | float = 0.8
    interval: int = 1000

    def __post_init__(self) -> None:
        check_density(self.final_density, "final density")
        if self.interval < 1:
            raise ValueError(f"prune interval must be >= 1, got {self.interval}")
        if isinstance(self.start, float) != isinstance(self.end, float):
            raise ValueError("prune_start and prune_end must both be steps (int) or both fractions (float)")
        if not self.start <= self.end or self.start < 0 or (isinstance(self.end, float) and self.end > 1):
            raise ValueError(f"need 0 <= prune_start <= prune_end (<= 1 as fractions), got {self.start}, {self.end}")

    @property
    def needs_progress(self) -> bool:
        return isinstance(self.start, float)

    def density_at(self, step: int, progress: float | None) -> float | None:
        """The density to prune to at optimizer ``step``, or None if no prune is due then."""
        if step % self.interval:
            return None
        if self.needs_progress:
            if progress is None:
                raise RuntimeError("HALO's prune schedule is a fraction of training but the training progress is "
                                   "unknown (trained outside SB3's learn()): give prune_start/prune_end "
                                   "as optimizer steps (ints)")
            position, start, end = progress, float(self.start), float(self.end)
        else:
            position, start, end = float(step), float(self.start), float(self.end)
        if position < start:
            return None
        x = 1.0 if end == start else min(1.0, (position - start) / (end - start))
        return self.final_density + (1 - self.final_density) * (1 - x) ** 3


class HaloController(MaskController):
    """Adds HALO's penalty gradient and prunes on schedule around a network's optimizer steps.

    :param layers: the network's HALO layers by name (one global magnitude ranking over all).
    :param xi: ξ, weight of ``Σ |θ|/λ²``.
    :param psi: ψ, weight of ``Σ |λ|``.
    :param schedule: when and how far to prune.
    :param targets: target-network layers that receive every new mask.
    """

    def __init__(self, layers: Mapping[str, HaloLinear], xi: float, psi: float, schedule: PruneSchedule,
                 targets: Mapping[str, SparseLinear] | None = None) -> None:
        super().__init__(layers, targets)
        if xi < 0 or psi <= 0:
            raise ValueError(f"HALO needs xi >= 0 and psi > 0, got xi={xi}, psi={psi}")
        self.xi, self.psi, self.schedule = xi, psi, schedule

    def penalty(self) -> torch.Tensor:
        """The HALO penalty over every layer: the loss term the hooks add the gradient of."""
        return torch.stack([halo_penalty(layer.weight, layer.scale, self.xi, self.psi)
                            for layer in self.layers.values()]).sum()

    @torch.no_grad()
    def add_penalty_gradient(self) -> None:
        """θ.grad += ξ sign(θ)/λ²; λ.grad += -2ξ|θ|/λ³ + ψ sign(λ) (zero at pruned positions)."""
        for layer in self.layers.values():
            weight, scale = layer.weight, layer.scale
            weight_grad = self.xi * torch.sign(weight) / scale.square()
            scale_grad = (-2 * self.xi * weight.abs() / scale.pow(3) + self.psi * torch.sign(scale)) * layer.mask_values
            for parameter, gradient in ((weight, weight_grad), (scale, scale_grad)):
                if parameter.grad is None:
                    parameter.grad = gradient
                else:
                    parameter.grad.add_(gradient)

    def on_step(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Add the penalty gradient, then prune if the schedule says so."""
        self.add_penalty_gradient()
        density = self.schedule.density_at(self.current_step, self.known_progress())
        if density is not None:
            self.prune(density, optimizer)

    def mask_grads(self) -> None:
        """Zero the weight and scale gradients at pruned positions."""
        super().mask_grads()
        for layer in self.layers.values():
            if layer.scale.grad is not None:
                layer.scale.grad.mul_(layer.mask_values)

    @torch.no_grad()
    def prune(self, density: float, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Keep the ``round(density · total)`` largest-magnitude weights over all layers; zero the
        rest, their optimizer state and the target networks' copies."""
        total = sum(layer.weight.numel() for layer in self.layers.values())
        keep = max(1, math.floor(density * total + 0.5))
        if keep >= sum(layer.nnz for layer in self.layers.values()):
            return
        scores = torch.cat([torch.where(layer.mask, layer.weight.abs(), -1.0).flatten()
                            for layer in self.layers.values()])
        if not bool(torch.isfinite(scores).all()):
            raise FloatingPointError(f"non-finite weights at HALO's prune (optimizer step {self.current_step}): "
                                     "the network diverged")
        kept = torch.zeros_like(scores, dtype=torch.bool)
        kept[torch.topk(scores, keep, sorted=False).indices] = True
        offset = 0
        for name, layer in self.layers.items():
            new_mask = kept[offset:offset + layer.weight.numel()].view_as(layer.mask)
            offset += layer.weight.numel()
            removed = layer.mask & ~new_mask
            self.set_layer_mask(name, new_mask, removed)
            reset_optimizer_state(optimizer, layer.weight, removed)
        self.num_updates += 1


@dataclass(frozen=True)
class HaloSettings:
    """The ``halo`` method's own ``policy_kwargs``.

    :param halo_xi: ξ of the penalty ``ξ Σ |θ|/λ² + ψ Σ |λ|``.
    :param halo_psi: ψ of that penalty.
    :param prune_start: first global magnitude prune, an int optimizer step or a float fraction of
        training; pruning then follows a cubic schedule to the density, every ``update_interval`` steps.
    :param prune_end: the prune that reaches the density (same units as ``prune_start``).
    """

    halo_xi: float = 1e-5
    halo_psi: float = 1e-5
    prune_start: int | float = 0.2
    prune_end: int | float = 0.8

    def prune_schedule(self, config: SparsityConfig, network: str) -> PruneSchedule:
        """The gradual prune of one network to its density."""
        return PruneSchedule(config.network_density(network), self.prune_start, self.prune_end,
                             config.update_interval)

    def check(self, config: SparsityConfig) -> None:
        """``ValueError`` unless ξ >= 0, ψ > 0 and the prune schedule can be built."""
        for name, positive in (("halo_xi", False), ("halo_psi", True)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
                raise ValueError(f"{name} must be a number {'> 0' if positive else '>= 0'}, got {value!r}")
        for name in ("prune_start", "prune_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be an int optimizer step or a float fraction, got {value!r}")
        for network in ("actor", "critic"):
            self.prune_schedule(config, network)


def halo_controller(config: SparsityConfig, network: str, online: nn.Module,
                    target: nn.Module | None) -> HaloController:
    """The controller of one network's HALO layers; its target receives every new mask."""
    settings: HaloSettings = config.settings
    return HaloController(halo_layers(online), settings.halo_xi, settings.halo_psi,
                          settings.prune_schedule(config, network),
                          sparse_layers(target) if target is not None else None)


KIND = MethodKind(
    name="halo", layer_class=HaloLinear, make_controller=halo_controller,
    presets=(MethodPreset("halo", "halo", None, None,
                          "Seto et al. 2020, HALO (shrinkage penalty, then global magnitude prune)"),),
    settings_class=HaloSettings, starts_dense=True,
)
