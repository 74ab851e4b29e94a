"""``SparseLinear``: a linear layer whose weight carries a boolean connectivity mask."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn


LinearT = TypeVar("LinearT", bound=nn.Linear)


def copy_linear(cls: type[LinearT], linear: nn.Linear) -> LinearT:
    """A ``cls`` layer of ``linear``'s shape holding a copy of its weight and bias (extra
    parameters and buffers of ``cls`` keep their initial values)."""
    layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                device=linear.weight.device, dtype=linear.weight.dtype)
    layer.load_state_dict(linear.state_dict(), strict=False)
    return layer


class SparseLinear(nn.Linear):
    """An ``nn.Linear`` with a boolean ``mask`` buffer shaped like its weight.

    Invariant: ``weight[~mask] == 0`` exactly. The forward pass is the plain dense
    ``F.linear`` (masked weights are zero), so ``weight.grad`` after ``backward()`` is the
    *dense* gradient that gradient-based growth needs. Call :meth:`mask_grad` before the
    optimizer step and :meth:`apply_mask` after it to keep the invariant; the topology
    controllers in :mod:`sparse_rl.topology` do both from optimizer hooks. Biases stay dense.
    """

    mask: torch.Tensor
    mask_values: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.register_buffer("mask", torch.ones_like(self.weight, dtype=torch.bool))
        # The mask in the weight's dtype: multiplying by it is ~7x faster than by a bool tensor.
        # Derived from ``mask``, so not saved; refreshed by set_mask and after loading a state dict.
        self.register_buffer("mask_values", torch.ones_like(self.weight), persistent=False)

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> SparseLinear:
        """A fully connected ``SparseLinear`` holding a copy of ``linear``'s parameters."""
        return copy_linear(cls, linear)

    @property
    def nnz(self) -> int:
        """Number of active (unmasked) weights."""
        return int(self.mask.sum())

    @property
    def density(self) -> float:
        """Fraction of the weight matrix that is active."""
        return self.nnz / self.mask.numel()

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Replace the mask and zero the weights it removes."""
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(self.weight.shape)}")
        self.mask.copy_(mask.to(torch.bool))
        self._refresh_mask_values()
        self.apply_mask()

    def _refresh_mask_values(self) -> None:
        self.mask_values = self.mask.to(self.weight.dtype)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh_mask_values()

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Zero the weights at masked positions."""
        self.weight.mul_(self.mask_values)

    @torch.no_grad()
    def mask_grad(self) -> None:
        """Zero the gradient at masked positions (no-op when there is no gradient)."""
        if self.weight.grad is not None:
            self.weight.grad.mul_(self.mask_values)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, density={self.density:.3f}"


def random_mask(shape: tuple[int, ...], count: int, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """A boolean mask of ``shape`` with exactly ``count`` ``True`` entries placed uniformly at random."""
    numel = 1
    for size in shape:
        numel *= size
    if not 0 <= count <= numel:
        raise ValueError(f"count must be in [0, {numel}], got {count}")
    flat = torch.zeros(numel, dtype=torch.bool)
    flat[torch.randperm(numel, generator=generator)[:count]] = True
    return flat.view(shape).to(device)
