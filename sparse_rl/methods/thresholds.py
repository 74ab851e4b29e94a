"""Trainable masked layers with learned thresholds (Liu et al., ICLR 2020, "Dynamic Sparse Training").

Every output neuron ``i`` of a :class:`ThresholdLinear` has a trainable threshold ``t_i``
(initialised to 0); its mask is ``step(|W_ij| - t_i)`` and the layer computes with ``W ⊙ mask``.
The step's gradient is the long-tailed estimator :func:`long_tailed_derivative`, so a masked
weight still receives gradient near the threshold and can come back. The weights themselves
stay dense parameters; density is *learned*: the regulariser ``α Σ exp(-t)`` pushes thresholds
up, and a layer that keeps 1 % of its weights or fewer has its thresholds reset to 0.
:class:`ThresholdController` adds the regulariser's gradient and performs the resets from
optimizer hooks, so the algorithm's own loss and loop stay untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from sparse_rl.controller import MaskController
from sparse_rl.layers import copy_linear
from sparse_rl.methods.kind import MethodKind, MethodPreset

if TYPE_CHECKING:
    from sparse_rl.sparsity import SparsityConfig

DEAD_LAYER_FRACTION = 0.01
"""A layer keeping this fraction of its weights or fewer resets its thresholds (Liu et al.)."""


def long_tailed_derivative(x: torch.Tensor) -> torch.Tensor:
    """H(x) = 2 - 4|x| for |x| ≤ 0.4, 0.4 for 0.4 < |x| ≤ 1, 0 beyond: the step's surrogate gradient."""
    magnitude = x.abs()
    return torch.where(magnitude <= 0.4, 2 - 4 * magnitude,
                       torch.where(magnitude <= 1.0, torch.full_like(x, 0.4), torch.zeros_like(x)))


class LongTailedStep(torch.autograd.Function):
    """step(x) = 1 if x > 0 else 0, whose backward pass uses :func:`long_tailed_derivative`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * long_tailed_derivative(x)


class ThresholdLinear(nn.Linear):
    """An ``nn.Linear`` whose connectivity is ``|W| > t`` with one trainable threshold per output."""

    dense_weight_grad: bool = True
    """The estimator gives every weight near its threshold a gradient: the weight gradient is dense."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.threshold = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> ThresholdLinear:
        """A ``ThresholdLinear`` holding a copy of ``linear``'s parameters, thresholds at 0."""
        return copy_linear(cls, linear)

    @property
    def mask(self) -> torch.Tensor:
        """The current connectivity, ``|W| > t`` (boolean, no gradient)."""
        with torch.no_grad():
            return self.weight.abs() > self.threshold.unsqueeze(1)

    @property
    def nnz(self) -> int:
        return int(self.mask.sum())

    @property
    def density(self) -> float:
        return self.nnz / self.weight.numel()

    def masked_weight(self) -> torch.Tensor:
        """``W ⊙ step(|W| - t)``, differentiable in ``W`` and ``t`` through the estimator."""
        return self.weight * LongTailedStep.apply(self.weight.abs() - self.threshold.unsqueeze(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)

    @torch.no_grad()
    def reset_if_dead(self, fraction: float = DEAD_LAYER_FRACTION) -> bool:
        """Reset the thresholds to 0 if the layer keeps ``fraction`` of its weights or fewer."""
        if self.density > fraction:
            return False
        self.threshold.zero_()
        return True

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, density={self.density:.3f}"


def threshold_layers(module: nn.Module) -> dict[str, ThresholdLinear]:
    """Every ``ThresholdLinear`` in ``module``, by qualified name."""
    return {name: layer for name, layer in module.named_modules() if isinstance(layer, ThresholdLinear)}


class ThresholdController(MaskController):
    """Applies the threshold regulariser and the dead-layer reset around a network's optimizer steps.

    The masks follow ``|W| > t`` continuously, so every optimizer step updates them: ``num_updates``
    counts those steps, ``resets`` the dead-layer resets.

    :param layers: the network's threshold layers by name.
    :param alpha: α of the regulariser ``α Σ_layers Σ_i exp(-t_i)`` added to the network's loss.
    """

    resets: torch.Tensor

    def __init__(self, layers: Mapping[str, ThresholdLinear], alpha: float) -> None:
        super().__init__(layers)
        if alpha < 0:
            raise ValueError(f"threshold regulariser alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.register_buffer("resets", torch.zeros((), dtype=torch.float64))

    def regulariser(self) -> torch.Tensor:
        """``α Σ exp(-t)`` over every threshold: the loss term the hooks add the gradient of."""
        return self.alpha * torch.stack([torch.exp(-layer.threshold).sum() for layer in self.layers.values()]).sum()

    @torch.no_grad()
    def on_step(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Add the regulariser's gradient, ``-α exp(-t)``, to every threshold's gradient."""
        for layer in self.layers.values():
            gradient = -self.alpha * torch.exp(-layer.threshold)
            if layer.threshold.grad is None:
                layer.threshold.grad = gradient
            else:
                layer.threshold.grad.add_(gradient)

    def after_step(self) -> None:
        """Count the mask update; reset the thresholds of every layer that keeps 1 % of its weights or fewer."""
        self.num_updates += 1
        for layer in self.layers.values():
            if layer.reset_if_dead():
                self.resets += 1

    def log_values(self) -> dict[str, float]:
        """The dead-layer resets so far."""
        return {"threshold_resets": float(self.resets)}


@dataclass(frozen=True)
class ThresholdSettings:
    """The ``thresholds`` method's own ``policy_kwargs``.

    :param threshold_alpha: α of the regulariser ``α Σ exp(-t)``.
    :param actor_threshold_alpha: the actor's own α (default: ``threshold_alpha``).
    :param critic_threshold_alpha: the critics' own α (default: ``threshold_alpha``).
    """

    threshold_alpha: float = 1e-4
    actor_threshold_alpha: float | None = None
    critic_threshold_alpha: float | None = None

    def check(self, config: SparsityConfig) -> None:
        """``ValueError`` unless every α is a number >= 0 (or ``None`` for a network's own)."""
        for name in ("threshold_alpha", "actor_threshold_alpha", "critic_threshold_alpha"):
            value = getattr(self, name)
            if value is None and name != "threshold_alpha":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    def alpha_of(self, network: str) -> float:
        """α of the threshold regulariser of ``"actor"`` or ``"critic"``."""
        own = getattr(self, f"{network}_threshold_alpha")
        return self.threshold_alpha if own is None else own


def threshold_controller(config: SparsityConfig, network: str, online: nn.Module,
                         target: nn.Module | None) -> ThresholdController:
    """The controller of one network's threshold layers (targets follow by Polyak averaging of the thresholds)."""
    return ThresholdController(threshold_layers(online), config.settings.alpha_of(network))


KIND = MethodKind(
    name="thresholds", layer_class=ThresholdLinear, make_controller=threshold_controller,
    presets=(MethodPreset("thresholds", "thresholds", None, None,
                          "Liu et al. 2020, Dynamic Sparse Training (learned thresholds)"),),
    settings_class=ThresholdSettings, learns_density=True,
)
