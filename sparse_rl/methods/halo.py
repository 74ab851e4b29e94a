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

import torch
from torch import nn

from sparse_rl.distributions import check_density
from sparse_rl.layers import SparseLinear
from sparse_rl.topology import reset_optimizer_state


class HaloLinear(SparseLinear):
    """A ``SparseLinear`` with a trainable shrinkage scale λ per weight (initialised to 1).

    The forward pass uses the weights alone; λ enters only the HALO penalty.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.scale = nn.Parameter(torch.ones_like(self.weight))


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
                                   "unknown: learn() with SparseLoggingCallback, or give prune_start/prune_end "
                                   "as optimizer steps (ints)")
            position, start, end = progress, float(self.start), float(self.end)
        else:
            position, start, end = float(step), float(self.start), float(self.end)
        if position < start:
            return None
        x = 1.0 if end == start else min(1.0, (position - start) / (end - start))
        return self.final_density + (1 - self.final_density) * (1 - x) ** 3


class HaloController(nn.Module):
    """Adds HALO's penalty gradient, prunes on schedule and keeps masks, around optimizer steps.

    :param layers: the network's HALO layers by name (one global magnitude ranking over all).
    :param xi: ξ, weight of ``Σ |θ|/λ²``.
    :param psi: ψ, weight of ``Σ |λ|``.
    :param schedule: when and how far to prune.
    :param targets: target-network layers that receive every new mask.
    """

    def __init__(self, layers: Mapping[str, HaloLinear], xi: float, psi: float, schedule: PruneSchedule,
                 targets: Mapping[str, SparseLinear] | None = None) -> None:
        super().__init__()
        if xi < 0 or psi <= 0:
            raise ValueError(f"HALO needs xi >= 0 and psi > 0, got xi={xi}, psi={psi}")
        self.layers = dict(layers)
        self.targets = dict(targets or {})
        self.xi, self.psi, self.schedule = xi, psi, schedule
        self.last_stats: dict = {}
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("progress", torch.full((), -1.0, dtype=torch.float64))

    def set_progress(self, progress: float) -> None:
        self.progress.fill_(float(progress))

    def penalty(self) -> torch.Tensor:
        """The HALO penalty over every layer: the loss term the hooks add the gradient of."""
        return sum(halo_penalty(layer.weight, layer.scale, self.xi, self.psi) for layer in self.layers.values())

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.before_optimizer_step(opt))
        optimizer.register_step_post_hook(lambda opt, args, kwargs: self.after_optimizer_step())

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

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Count the step, add the penalty gradient, prune if due, then mask the gradients."""
        self.step.add_(1)
        self.add_penalty_gradient()
        progress = float(self.progress)
        density = self.schedule.density_at(int(self.step), None if progress < 0 else progress)
        if density is not None:
            self.prune(density, optimizer)
        for layer in self.layers.values():
            layer.mask_grad()
            if layer.scale.grad is not None:
                layer.scale.grad.mul_(layer.mask_values)

    def after_optimizer_step(self) -> None:
        for layer in self.layers.values():
            layer.apply_mask()

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
        kept = torch.zeros_like(scores, dtype=torch.bool)
        kept[torch.topk(scores, keep, sorted=False).indices] = True
        offset = 0
        for name, layer in self.layers.items():
            new_mask = kept[offset:offset + layer.weight.numel()].view_as(layer.mask)
            offset += layer.weight.numel()
            removed = layer.mask & ~new_mask
            for net_layer in (layer, self.targets.get(name)):
                if net_layer is not None:
                    net_layer.set_mask(new_mask)
            reset_optimizer_state(optimizer, layer.weight, removed)
        self.num_updates += 1
