"""The controller contract: what keeps one network's sparsity around its optimizer's steps.

A :class:`MaskController` owns the step counter and the training-progress buffer, attaches to
an optimizer (a pre-step and a post-step hook), masks the gradients before the step and the
weights after it, mirrors new masks onto a target network, and tells its layers one step ahead
whether the next backward pass must produce the dense weight gradient. A method kind
subclasses it and fills in the hooks that differ:

* :meth:`MaskController.on_step`: what happens before the optimizer step, after counting it
  (a scheduled topology update, a regulariser's gradient, a scheduled prune);
* :meth:`MaskController.after_step`: what happens after the weights were re-masked;
* :meth:`MaskController.needs_dense_grad`: whether optimizer step ``step`` scores with the
  dense weight gradient;
* :meth:`MaskController.mirror_to_target`: how a target layer follows a new online mask
  (the shared mask by default);
* :meth:`MaskController.log_values`: the kind's own scalars for the logger.

Counters are floating-point buffers (exact for integers below 2**53), so code that treats every
``state_dict`` entry as a float tensor (perturbing, averaging, casting) works on a policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from sparse_rl.layers import SparseLinear


def remask(layers: Iterable[nn.Module], grads: bool = False) -> None:
    """Zero the weights (with ``grads``: the gradients, where there are any) at the masked positions of every
    masked-layout :class:`SparseLinear` in ``layers``, in one foreach multiply: what :meth:`SparseLinear.apply_mask`
    and :meth:`SparseLinear.mask_grad` do layer by layer, for a network's per-step re-masking at one call's Python
    cost. Compact layers have no absent weights to zero and are skipped."""
    tensors: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for layer in layers:
        if isinstance(layer, SparseLinear) and layer._compact is None:
            weight, mask_values = layer._parameters["weight"], layer._buffers["mask_values"]
            assert weight is not None and mask_values is not None
            tensor = weight.grad if grads else weight
            if tensor is not None:
                tensors.append(tensor)
                masks.append(mask_values)
    if tensors:
        with torch.no_grad():
            torch._foreach_mul_(tensors, masks)


class MaskController(nn.Module):
    """Base of every method kind's controller.

    :param layers: the online network's sparse layers, by name (not submodules of the controller:
        they belong to the network).
    :param targets: target-network layers by the same names; they follow every new mask.
    """

    step: torch.Tensor
    num_updates: torch.Tensor
    progress: torch.Tensor

    def __init__(self, layers: Mapping[str, nn.Linear], targets: Mapping[str, SparseLinear] | None = None) -> None:
        super().__init__()
        targets = dict(targets or {})
        if set(targets) - set(layers):
            raise ValueError(f"target layers {sorted(set(targets) - set(layers))} have no online layer")
        self.layers: dict[str, Any] = dict(layers)
        self.targets = targets
        self.last_stats: dict[str, Any] = {}
        """What the last update did to each layer (the kind decides what a statistic is)."""
        self.register_buffer("step", torch.zeros((), dtype=torch.float64))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.float64))
        self.register_buffer("progress", torch.full((), -1.0, dtype=torch.float64))

    # -- the contract every kind shares -------------------------------------------------------

    def set_progress(self, progress: float) -> None:
        """Tell the schedules how far training is, as a fraction in [0, 1]."""
        self.progress.fill_(float(progress))

    def known_progress(self) -> float | None:
        """The training progress in [0, 1], or ``None`` if nobody has told it yet."""
        value = float(self.progress)
        return None if value < 0 else value

    @property
    def current_step(self) -> int:
        """Optimizer steps taken so far."""
        return int(self.step)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Run :meth:`before_optimizer_step` and :meth:`after_optimizer_step` from hooks on ``optimizer``."""
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.before_optimizer_step(opt))
        optimizer.register_step_post_hook(lambda opt, args, kwargs: self.after_optimizer_step())
        self._announce_next_step()

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Count the step, run the kind's :meth:`on_step`, then mask the gradients."""
        self.step.add_(1)
        self.on_step(optimizer)
        self.mask_grads()

    def after_optimizer_step(self) -> None:
        """Hold masked weights at exactly zero, run the kind's :meth:`after_step`, and tell the
        layers whether the next backward pass must produce the dense weight gradient."""
        remask(self.layers.values())
        self.after_step()
        self._announce_next_step()

    def mask_grads(self) -> None:
        """Zero the gradients at masked positions."""
        remask(self.layers.values(), grads=True)

    @torch.no_grad()
    def set_layer_mask(self, name: str, mask: torch.Tensor, changed: torch.Tensor | None = None,
                       optimizer: torch.optim.Optimizer | None = None) -> None:
        """Give online layer ``name`` its new ``mask`` (:meth:`SparseLinear.relayout`: weights and ``optimizer``
        state at ``changed`` positions and grown ones start at 0, survivors keep theirs), then let its target follow
        through :meth:`mirror_to_target`."""
        layer = self.layers[name]
        layer.relayout(mask, changed, optimizer)
        target = self.targets.get(name)
        if target is not None:
            self.mirror_to_target(layer, target, changed)

    def _announce_next_step(self) -> None:
        needed = self.needs_dense_grad(self.current_step + 1)
        for layer in self.layers.values():
            # Set only on a change: the assignment goes through nn.Module.__setattr__ (µs each, every step).
            if isinstance(layer, SparseLinear) and layer.dense_grad_needed != needed:
                layer.dense_grad_needed = needed

    # -- the hooks a kind overrides -----------------------------------------------------------

    def on_step(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Before optimizer step :attr:`current_step` (already counted), before gradients are masked."""

    def after_step(self) -> None:
        """After the optimizer step and the re-masking of the weights."""

    def needs_dense_grad(self, step: int) -> bool:
        """Whether optimizer step ``step`` scores with the dense weight gradient (default: never)."""
        return False

    @torch.no_grad()
    def mirror_to_target(self, online: SparseLinear, target: SparseLinear, changed: torch.Tensor | None) -> None:
        """Make ``target`` follow ``online``'s new mask: the shared-mask rule (Polyak averaging then
        keeps the target's masked weights at exactly 0). A compact target is re-laid through the same permutation as
        its online layer, so ``polyak_update``, which pairs parameters in order, keeps pairing the same weights."""
        target.relayout(online.mask, changed)

    def log_values(self) -> dict[str, float]:
        """The kind's own scalars, logged once per rollout as ``sparsity/<name>/<network>`` (default: none)."""
        return {}
