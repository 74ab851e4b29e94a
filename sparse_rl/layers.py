"""``SparseLinear``: a linear layer whose weight carries a boolean connectivity mask."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from sparse_rl.backends import BACKENDS, SMALL_BATCH, CsrStructure, auto_backend, dense_linear, sparse_linear

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

    Invariant: ``weight[~mask] == 0`` exactly. Call :meth:`mask_grad` before the optimizer step
    and :meth:`apply_mask` after it to keep the invariant. The controllers do both from optimizer
    hooks. Biases stay dense.

    How the layer computes is its ``backend`` (:mod:`sparse_rl.backends`):

    * ``"masked"`` runs the dense ``F.linear``, and ``weight.grad`` is the dense gradient;
    * ``"sparse"`` multiplies active weights only, and ``weight.grad`` is the gradient at the
      active positions, zero elsewhere. When ``dense_grad_needed`` is set, it is the dense gradient.
      Batches of fewer than :data:`~sparse_rl.backends.SMALL_BATCH` rows run ``F.linear``, with the
      dense gradient;
    * ``"auto"`` (the default) resolves to one of the two from the layer's shape, density and device.

    ``dense_grad_needed`` (default ``True``, so a lone layer behaves like ``nn.Linear``) is set by the
    controller after each optimizer step. It says whether the *next* backward pass must produce the
    dense weight gradient that gradient-based growth scores with.
    """

    mask: torch.Tensor
    mask_values: torch.Tensor
    backend: str
    dense_grad_needed: bool

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
        self.backend = "auto"
        self.dense_grad_needed = True
        self._mask_version = 0
        self._structure: tuple[tuple[Any, ...], CsrStructure] | None = None
        self._resolved: tuple[tuple[Any, ...], str] | None = None
        self._layout_group: LayoutGroup | None = None
        self._dispatch: str | None = None  # "linear", "dense_fm" or "sparse"; None: decide at the next call

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
        self._mask_version += 1
        self._invalidate()

    def _invalidate(self) -> None:
        """Forget the kernel choice (the mask, the backend, the device or the dtype changed)."""
        group = getattr(self, "_layout_group", None)
        if group is not None:
            group.invalidate()
        else:
            self._dispatch = None

    def _apply(self, fn: Any, recurse: bool = True) -> SparseLinear:
        result = super()._apply(fn, recurse)
        self._invalidate()
        return result

    def set_backend(self, backend: str) -> None:
        """Compute with ``"masked"``, ``"sparse"`` or ``"auto"`` kernels (see the class docstring)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
        self.backend = backend
        self._invalidate()

    def _cache_key(self) -> tuple[Any, ...]:
        return self._mask_version, self.weight.device, self.weight.dtype

    @property
    def resolved_backend(self) -> str:
        """The backend this layer computes with now: ``"masked"`` or ``"sparse"``."""
        if self.backend != "auto":
            return self.backend
        key = self._cache_key()
        if self._resolved is None or self._resolved[0] != key:
            self._resolved = key, auto_backend(self.in_features, self.out_features, self.density, self.weight.device)
        return self._resolved[1]

    def csr_structure(self) -> CsrStructure:
        """The mask's CSR structure, rebuilt only when the mask (or the device or dtype) changed."""
        key = self._cache_key()
        if self._structure is None or self._structure[0] != key:
            self._structure = key, CsrStructure.from_mask(self.mask, self._mask_version, self.weight.dtype)
        return self._structure[1]

    def _decide_dispatch(self) -> str:
        if self.resolved_backend == "sparse":
            self._dispatch = "sparse"
        elif self.backend == "auto" and self._layout_group is not None and self._layout_group.any_sparse():
            self._dispatch = "dense_fm"  # the dense kernel, feature-major like the sparse layers of its network
        else:
            self._dispatch = "linear"
        return self._dispatch

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dispatch = self._dispatch or self._decide_dispatch()
        if dispatch == "linear" or input.dim() == 1 or (input.dim() == 2 and input.shape[0] < SMALL_BATCH):
            return F.linear(input, self.weight, self.bias)
        if dispatch == "dense_fm":
            return dense_linear(input, self.weight, self.bias, feature_major=True)
        return sparse_linear(input, self.weight, self.bias, self.csr_structure(), self.dense_grad_needed)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_structure"] = state["_resolved"] = state["_dispatch"] = None  # derived from the mask; rebuilt on use
        return state

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        """Save the mask as 0/1 in the weight's dtype, so every state-dict entry is a float tensor
        (code that perturbs, averages or casts a policy's state dict works unchanged)."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "mask"] = self.mask.to(self.weight.dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Load a mask saved as 0/1 floats (or booleans), binarised at 0.5; masked weights are zeroed."""
        key = prefix + "mask"
        if key in state_dict and torch.is_tensor(state_dict[key]):
            state_dict[key] = state_dict[key] > 0.5 if state_dict[key].is_floating_point() else state_dict[key].bool()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._refresh_mask_values()
        self.apply_mask()

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
        return f"{super().extra_repr()}, density={self.density:.3f}, backend={self.backend}"


class LayoutGroup:
    """The ``SparseLinear`` layers of one network, grouped by :func:`set_backend`. When any of them
    runs sparse, the group's dense ``auto`` layers return feature-major activations too, so that no
    layer copies its input into the sparse kernels' layout (:mod:`sparse_rl.backends`)."""

    def __init__(self, layers: list[SparseLinear]) -> None:
        self.layers = layers
        self._any_sparse: tuple[torch.device, bool] | None = None

    def invalidate(self) -> None:
        """Forget the cached answer and the layers' kernel choices (a mask or a backend changed)."""
        self._any_sparse = None
        for layer in self.layers:
            layer._dispatch = None

    def any_sparse(self) -> bool:
        """Whether any layer of the group resolves to the sparse backend."""
        device = self.layers[0].weight.device
        if self._any_sparse is None or self._any_sparse[0] != device:
            self._any_sparse = device, any(layer.resolved_backend == "sparse" for layer in self.layers)
        return self._any_sparse[1]


def set_backend(module: nn.Module, backend: str) -> int:
    """Set the backend (``"auto"``, ``"masked"`` or ``"sparse"``) of every ``SparseLinear`` in
    ``module``, and group them as one network (:class:`LayoutGroup`); returns how many layers were set."""
    layers = [m for m in module.modules() if isinstance(m, SparseLinear)]
    group = LayoutGroup(layers) if layers else None
    for layer in layers:
        layer._layout_group = group
        layer.set_backend(backend)
    return len(layers)


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
