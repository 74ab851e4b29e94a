"""CrossQ's BatchRenorm with one forward and one backward of a few passes each.

sb3-contrib's ``BatchRenorm`` composes about a dozen tensor ops, each a pass over the ``(batch, features)``
input with a saved temporary, and computes its batch variance with ``Tensor.var(dim=0)``, which torch reduces
along the strided dimension: on one core of the Intel Xeon, for CrossQ's critic input of 512 × 1024, the
variance alone took 3.1 ms where the mean took 0.05 ms, and the layer's forward and backward take 10.3 ms against
this layer's 1.4 ms (``python benchmarks/sparse_speed.py --part batch-renorm``, quiet). Here the statistics are
two passes of per-feature sums (the mean, then the squared deviations), the output is one ``addcmul``, and the
backward is written out: one pass of two per-feature sums and one pass for the input gradient. The passes run on
the compiled kernels (``sparse_rl/csrc/kernels.c``) for a float32 CPU input, row-major or feature-major, and on
torch ops otherwise (float64, GPU, no extension), which the tests compare.

The gradient is the one autograd takes through sb3-contrib's composition. With batch mean ``μ`` and unbiased
variance ``v``, the layer normalises with ``m = μ``, ``c = v`` during warm-up and, after it, with
``m = μ - d √v / r`` and ``c = v / r²`` (``r``, ``d`` clipped and detached), then ``y = γ (x - m) / s + β``
with ``s = √(c + ε)``. So with ``a = γ / s`` and upstream gradient ``g``::

    ∂β = Σ g        ∂γ = Σ g x̂        ∂m = -a Σ g        ∂c = -a Σ g x̂ / (2 s)
    ∂μ = ∂m         ∂v = ∂m ∂m/∂v + ∂c ∂c/∂v
    ∂x = a g + ∂μ / N + 2 ∂v (x - μ) / (N - 1)

After warm-up ``∂m/∂v = -d / (2 r √v)`` is infinite for a feature of zero batch variance (a unit whose incoming
weights are all masked outputs a constant); such a feature's input gradient is 0, the gradient of a constant.
"""

from __future__ import annotations

from typing import Any

import torch
from sb3_contrib.common.torch_layers import BatchRenorm, BatchRenorm1d
from torch import nn

from sparse_rl.backends import kernels


class _RenormFunction(torch.autograd.Function):
    """``y = a (x - m) + β`` with ``m = μ - mean_shift``, and the gradient of the batch statistics ``μ`` and ``v``
    written out (see the module docstring); the sums and the input gradient run on the compiled kernels where they
    take ``x``. ``renorm`` is ``None`` during warm-up (``m = μ``, ``c = v``), else ``(mean_shift, ∂m/∂v, ∂c/∂v,
    live)``, ``live`` 0 for a feature of zero batch variance."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                std: torch.Tensor, renorm: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        a = scale / std
        ctx.save_for_backward(x, mean, a, std, *(renorm or ()))
        norm_mean = mean if renorm is None else mean - renorm[0]
        return torch.addcmul(bias - a * norm_mean, x, a)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, mean, a, std, *renorm = ctx.saved_tensors
        n = x.shape[0]
        compiled = kernels.renorm_runs_on(x)
        if compiled:
            grad_sum, centred_sum = kernels.renorm_grad_sums(grad, x, mean)
        else:
            centred = x - mean
            grad_sum, centred_sum = grad.sum(0), (grad * centred).sum(0)
        # Σ g x̂ with x̂ = (x - m) / s = ((x - μ) + mean_shift) / s.
        grad_normalised = (centred_sum if not renorm else centred_sum + renorm[0] * grad_sum) / std
        d_mean = (a * grad_sum).neg_()
        d_norm_var = (a * grad_normalised).div_(std).mul_(-0.5)
        if not renorm:
            d_var, alpha = d_norm_var, a
        else:
            _, dm_dv, dc_dv, live = renorm
            d_var = (d_mean * dm_dv).add_(d_norm_var * dc_dv).mul_(live)
            alpha, d_mean = a * live, d_mean * live
        d_input = None
        if ctx.needs_input_grad[0]:
            beta, gamma = d_var * (2.0 / (n - 1)), d_mean / n
            if compiled:
                d_input = kernels.renorm_input_grad(grad, x, mean, alpha, beta, gamma)
            else:
                d_input = (grad * alpha).addcmul_(centred, beta).add_(gamma)
        return d_input, None, grad_normalised, grad_sum, None, None


def batch_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of each feature over the batch, centred on the first sample, so a constant
    feature's mean is its value and its variance exactly 0 (as torch's own ``var`` computes them) however the sum
    rounds; on the compiled kernels where they take ``x`` (sums in float64)."""
    if kernels.renorm_runs_on(x):
        return kernels.renorm_stats(x)
    shifted = x - x[0]
    shifted_mean = shifted.mean(0)
    centred = shifted.sub_(shifted_mean)
    return x[0] + shifted_mean, centred.square().sum(0) / (x.shape[0] - 1)


class FusedBatchRenorm1d(BatchRenorm1d):
    """sb3-contrib's ``BatchRenorm1d`` (same parameters, buffers, state dict, and outputs and gradients to float32
    rounding), computed in a few passes (see the module docstring)."""

    ra_mean: torch.Tensor
    ra_var: torch.Tensor
    steps: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if x.dim() != 2:  # (batch, features, length): sb3-contrib's own computation (CrossQ's networks give 2-D)
            return super().forward(x)
        scale = self.scale if self.affine else torch.ones_like(self.scale)
        bias = self.bias if self.affine else torch.zeros_like(self.bias)
        if not self.training:
            a = scale / (self.ra_var + self.eps).sqrt()
            return torch.addcmul(bias - self.ra_mean * a, x, a)
        with torch.no_grad():
            mean, var = batch_statistics(x.detach())
            renorm = None
            norm_var = var
            if self.steps > self.warmup_steps:
                running_std = (self.ra_var + self.eps).sqrt()
                r = ((var + self.eps).sqrt() / running_std).clamp(1 / self.rmax, self.rmax)
                d = ((mean - self.ra_mean) / running_std).clamp(-self.dmax, self.dmax)
                batch_std = var.sqrt()
                live = (batch_std > 0).to(var.dtype)
                dm_dv = -d / (2 * r * torch.where(batch_std > 0, batch_std, 1.0))
                renorm = (d * batch_std / r, dm_dv, 1 / r**2, live)
                norm_var = var / r**2
            self.ra_mean.lerp_(mean, self.momentum)
            self.ra_var.lerp_(var, self.momentum)
            self.steps += 1
            std = torch.add(norm_var, self.eps).sqrt_()
        return _RenormFunction.apply(x, mean, scale, bias, std, renorm)


def fuse_batch_renorm(module: nn.Module) -> None:
    """Replace every sb3-contrib ``BatchRenorm1d`` inside ``module`` by a :class:`FusedBatchRenorm1d` with the same
    settings, parameters and buffers (the same tensors)."""
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, BatchRenorm) and not isinstance(child, FusedBatchRenorm1d):
                fused = FusedBatchRenorm1d(child.num_features, eps=child.eps, momentum=child.momentum,
                                           affine=child.affine, warmup_steps=child.warmup_steps)
                fused.rmax, fused.dmax = child.rmax, child.dmax
                fused.scale, fused.bias = child.scale, child.bias
                for buffer in ("ra_mean", "ra_var", "steps"):
                    setattr(fused, buffer, getattr(child, buffer))
                fused.train(child.training)
                setattr(parent, name, fused)
