"""``SparseLinear``: a linear layer with a fixed sparsity pattern, stored masked or compact."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from sparse_rl.backends import Backend, check_backend, layout_for, resolve
from sparse_rl.backends.compact import CompactStructure, relaid, relayout_map
from sparse_rl.backends.csr import CsrStructure
from sparse_rl.layer_state import apply_to_slots, replace_parameter, to_layout, valid_positions

if TYPE_CHECKING:
    from sparse_rl.network_layout import LayoutGroup

LinearT = TypeVar("LinearT", bound=nn.Linear)


def copy_linear(cls: type[LinearT], linear: nn.Linear) -> LinearT:
    """A ``cls`` layer of ``linear``'s shape holding a copy of its weight and bias (other parameters: initial)."""
    layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                device=linear.weight.device, dtype=linear.weight.dtype)
    layer.load_state_dict(linear.state_dict(), strict=False)
    return layer


class SparseLinear(nn.Linear):
    """An ``nn.Linear`` whose weight has a fixed pattern of active positions.

    Two layouts hold the pattern (``layout``):

    * ``"masked"``: the dense ``weight`` parameter and a boolean ``mask`` buffer, with the invariant
      ``weight[~mask] == 0`` exactly. :meth:`mask_grad` before the optimizer step and :meth:`apply_mask` after it
      keep it (the controllers do both from optimizer hooks).
    * ``"compact"``: only the active values, the parameter ``values`` (nnz, in CSR order), and their index
      (:class:`~sparse_rl.backends.compact.CompactStructure`). There is no dense weight: ``layer.weight`` and
      ``layer.mask`` are built on demand, read-only copies.

    How the layer computes is its ``backend`` (:mod:`sparse_rl.backends`): ``masked`` (dense kernels), ``sparse``
    (MKL's CSR on the masked layout), ``compact`` (this package's kernels on the compact layout) or ``auto`` (the
    default), resolved from the layer's shape, density and device. Setting a backend of the other layout converts
    the layer (:func:`~sparse_rl.network_layout.set_backend` also moves optimizer state). Biases stay dense.

    ``dense_grad_needed`` (default ``True``, so a lone layer behaves like ``nn.Linear``) is set by the controller
    after each optimizer step: whether the *next* backward pass must produce the dense weight gradient that
    gradient-based growth scores with (:meth:`score_grad`).
    """

    compact_capable: bool = True
    """Whether ``auto`` may lay this layer out compactly (false where the density changes as it learns)."""
    dense_weight_grad: bool = False
    """The backward pass computes only the active weights' gradient (:class:`~sparse_rl.masks.MaskedLayer`)."""

    mask: torch.Tensor
    mask_values: torch.Tensor
    backend: str
    layout: str

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.register_buffer("mask", torch.ones_like(self.weight, dtype=torch.bool))
        # The mask in the weight's dtype: multiplying by it is ~7x faster than by a bool tensor.
        # Derived from ``mask``, so not saved; refreshed by set_mask and after loading a state dict.
        self.register_buffer("mask_values", torch.ones_like(self.weight), persistent=False)
        self.backend = "auto"
        self.layout = "masked"
        self._dense_grad_needed = True
        self._dense_grad: torch.Tensor | None = None
        self._mask_version = 0
        self._compact: CompactStructure | None = None
        self._structure: tuple[tuple[Any, ...], CsrStructure] | None = None
        self._resolved: Backend | None = None
        self._layout_group: LayoutGroup | None = None

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> SparseLinear:
        """A fully connected ``SparseLinear`` holding a copy of ``linear``'s parameters."""
        return copy_linear(cls, linear)

    @classmethod
    @torch.no_grad()
    def from_active(cls, linear: nn.Linear, positions: torch.Tensor,
                    initial: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> SparseLinear:
        """A compact layer holding ``linear``'s weights at the flat ``positions`` and its bias, built without a dense
        copy (on the meta device first: no memory, no random draws). ``initial``: the values at the positions in
        ascending order and the bias, for a ``linear`` on the meta device (:mod:`sparse_rl.deferred_init`)."""
        device = linear.weight.device if initial is None else initial[0].device
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        del layer.weight, layer.mask, layer.mask_values
        shape = (linear.out_features, linear.in_features)
        layer._compact = CompactStructure.from_positions(positions.to(device), shape)
        if initial is None:
            initial = (layer._compact.gather(linear.weight.detach()),
                       None if linear.bias is None else linear.bias.detach().clone())
        layer._parameters = {"values": nn.Parameter(initial[0]),
                             "bias": None if initial[1] is None else nn.Parameter(initial[1])}
        layer.layout = "compact"
        return layer

    def __getattr__(self, name: str) -> Any:
        if name == "weight" or name == "mask":
            compact = self.__dict__.get("_compact")
            if compact is not None:
                return compact.dense(self.trainable_weight().detach()) if name == "weight" else compact.mask()
        return super().__getattr__(name)

    # -- the pattern, whatever the layout -----------------------------------------------------------------------

    @property
    def nnz(self) -> int:
        """Number of active weights."""
        return self._compact.nnz if self._compact is not None else int(self.mask.sum())

    @property
    def density(self) -> float:
        """Fraction of the weight matrix that is active."""
        return self.nnz / (self.in_features * self.out_features)

    @property
    def device(self) -> torch.device:
        return self.bias.device if self.bias is not None else self.trainable_weight().device

    def trainable_weight(self) -> nn.Parameter:
        """The parameter the optimizer updates: ``weight`` (masked) or ``values`` (compact)."""
        return self._parameters["values" if self._compact is not None else "weight"]  # type: ignore[return-value]

    def compact_structure(self) -> CompactStructure:
        """The compact layout's index structure (``ValueError`` on the masked layout)."""
        if self._compact is None:
            raise ValueError("this layer is on the masked layout; set_backend('compact') lays it out compactly")
        return self._compact

    @property
    def dense_grad_needed(self) -> bool:
        return self._dense_grad_needed

    @dense_grad_needed.setter
    def dense_grad_needed(self, needed: bool) -> None:
        self._dense_grad_needed = needed
        if not needed:
            self._dense_grad = None

    def accumulate_dense_grad(self, grad: torch.Tensor) -> None:
        """Called by the compact kernels' backward on steps that need the dense weight gradient. It starts afresh
        when the optimizer's ``zero_grad`` has cleared ``values.grad`` since the last call, as ``.grad`` would."""
        values_grad = self.trainable_weight().grad
        if self._dense_grad is None or values_grad is None or not bool(values_grad.any()):
            self._dense_grad = grad
        else:
            self._dense_grad = self._dense_grad + grad

    def score_weight(self) -> torch.Tensor:
        """The dense weight that prune and grow scores read (built on demand in the compact layout)."""
        return self.weight

    def score_grad(self) -> torch.Tensor | None:
        """The dense weight gradient of the last backward pass, as topology scores read it. Compact: the dense product
        kept on steps that announced ``dense_grad_needed``, else the active positions' gradient, zeros elsewhere."""
        if self._compact is None:
            return self.weight.grad
        if self._dense_grad is not None:
            return self._dense_grad
        values_grad = self.trainable_weight().grad
        return None if values_grad is None else self._compact.dense(values_grad)

    # -- changing the pattern -----------------------------------------------------------------------------------

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Replace the mask (masked layout: zero the weights it removes; compact: a re-layout, see :meth:`relayout`)."""
        if mask.shape != (self.out_features, self.in_features):
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {(self.out_features, self.in_features)}")
        if self._compact is not None:
            self.relayout(mask)
            return
        self.mask.copy_(mask.to(torch.bool))
        self._refresh_mask_values()
        self.apply_mask()

    @torch.no_grad()
    def relayout(self, mask: torch.Tensor, changed: torch.Tensor | None = None,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        """Give the layer a new pattern ``mask``. Survivors keep their values and optimizer state exactly; grown
        weights, and those at the boolean ``changed`` positions (dropped and regrown), start at 0 with zeroed state
        in ``optimizer``. A pending gradient follows the weights, so the step after an update applies what the masked
        layout would. A compact layer may change its count (SRigL's ablation): ``values`` is then a new parameter in
        the old one's place in ``optimizer`` (autograd keeps the old one's shape in live graphs)."""
        if self._compact is None:
            if changed is not None:
                self.weight.masked_fill_(changed, 0)
            self.set_mask(mask)
            if changed is not None:
                apply_to_slots(optimizer, self.weight, lambda slot: slot.masked_fill_(changed, 0))
            return
        new = mask.flatten().nonzero().squeeze(1)
        values = self.trainable_weight()
        source, found = relayout_map(self._compact.positions, new)
        keep = found if changed is None else found & ~changed.flatten()[new]
        grad, dense_grad = values.grad, self._dense_grad
        if grad is not None:
            grad = dense_grad.flatten()[new].clone() if dense_grad is not None else relaid(grad, source, found)
        if new.numel() == values.numel():
            apply_to_slots(optimizer, values, lambda slot: slot.copy_(relaid(slot, source, keep)))
            values.copy_(relaid(values, source, keep))
            values.grad = grad
        else:
            resized = nn.Parameter(relaid(values, source, keep), requires_grad=values.requires_grad)
            resized.grad = grad
            if optimizer is not None:
                replace_parameter(optimizer, values, resized, lambda slot: relaid(slot, source, keep))
            self._parameters["values"] = resized
        self._compact = CompactStructure.from_positions(new, self._compact.shape)
        self._mask_version += 1
        self._invalidate()

    def _refresh_mask_values(self) -> None:
        self.mask_values = self.mask.to(self.weight.dtype)
        self._mask_version += 1
        self._invalidate()

    def _invalidate(self) -> None:
        """Forget the kernel choice (the pattern, the backend, the device or the dtype changed)."""
        self._resolved = None
        group = self.__dict__.get("_layout_group")
        if group is not None:
            group.invalidate()

    def _apply(self, fn: Any, recurse: bool = True) -> SparseLinear:
        result = super()._apply(fn, recurse)
        if self._compact is not None:
            self._compact = self._compact.to(self.device)
        self._invalidate()
        return result

    # -- backends and layouts -----------------------------------------------------------------------------------

    def set_backend(self, backend: str, feeds_compact: bool = False) -> tuple[nn.Parameter, nn.Parameter] | None:
        """Compute with ``backend`` (see the class docstring). When that needs the other layout, the layer is
        converted and ``(old parameter, new parameter)`` is returned, so that optimizers can follow
        (:func:`~sparse_rl.network_layout.set_backend` does it); else ``None``. ``feeds_compact``: the layer's output
        goes straight into a compact layer (``auto`` then lays an input layer out compactly at any density)."""
        self.backend = check_backend(backend)
        if backend == "compact" and not self.compact_capable:
            raise ValueError("backend 'compact' needs a method with a fixed count per layer and targets that share "
                             "the online pattern; this method keeps the masked layout (allowed: auto, masked, sparse)")
        self._invalidate()
        return self._convert(layout_for(self, backend, feeds_compact))

    @property
    def resolved_backend(self) -> str:
        """The name of the backend this layer computes with now (``auto`` resolved)."""
        return self.strategy().name

    def strategy(self) -> Backend:
        """The backend this layer computes with now (``auto`` resolved; cached until the pattern, device or
        backend changes)."""
        resolved = self._resolved
        if resolved is None:
            resolved = self._resolved = resolve(self)
        return resolved

    @torch.no_grad()
    def _convert(self, layout: str) -> tuple[nn.Parameter, nn.Parameter] | None:
        if layout == self.layout:
            return None
        old = self.trainable_weight()
        structure = CompactStructure.from_mask(self.mask) if layout == "compact" else self.compact_structure()
        move = structure.gather if layout == "compact" else structure.dense
        new = nn.Parameter(move(old.detach()), requires_grad=old.requires_grad)
        new.grad = None if old.grad is None else move(old.grad)  # a pending gradient (switched before a step) follows
        if layout == "compact":
            del self.weight, self.mask, self.mask_values
            self._parameters = {"values": new, **{k: v for k, v in self._parameters.items()}}
            self._compact = structure
        else:
            del self.values
            self._compact = None
            self._parameters = {"weight": new, **{k: v for k, v in self._parameters.items()}}
            self.register_buffer("mask", structure.mask())
            self.register_buffer("mask_values", self.mask.to(new.dtype), persistent=False)
        self.layout = layout
        self._dense_grad = None
        self._mask_version += 1
        self._invalidate()
        return old, new

    def csr_structure(self) -> CsrStructure:
        """The mask's CSR structure for the ``sparse`` backend, rebuilt only when the mask, device or dtype changed."""
        key = self._mask_version, self.weight.device, self.weight.dtype
        if self._structure is None or self._structure[0] != key:
            self._structure = key, CsrStructure.from_mask(self.mask, self._mask_version, self.weight.dtype)
        return self._structure[1]

    def in_sparse_network(self, body: bool = False) -> bool:
        """Whether a layer of this layer's network (of its body, not its heads) computes with sparse kernels."""
        return self._layout_group is not None and self._layout_group.any_sparse(body)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.strategy().forward(self, input)

    # -- masking (masked layout; no-ops in the compact one, where absent weights do not exist) ------------------

    def apply_mask(self) -> None:  # the layout check before no_grad: each optimizer step runs both, for every layer
        """Zero the weights at masked positions."""
        if self._compact is None:
            with torch.no_grad():
                self.weight.mul_(self.mask_values)

    def mask_grad(self) -> None:
        """Zero the gradient at masked positions (no-op when there is no gradient)."""
        if self._compact is None and self.weight.grad is not None:
            with torch.no_grad():
                self.weight.grad.mul_(self.mask_values)

    # -- saving and loading -------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_structure"] = state["_resolved"] = None  # derived from the pattern; rebuilt on use
        state["_dense_grad"] = None
        return state

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        """Masked: the mask as 0/1 in the weight's dtype. Compact: the positions as float64 (exact below 2**53).
        Either way every entry is a float tensor, so code that perturbs, averages or casts a policy's state dict
        works unchanged."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._compact is None:
            destination[prefix + "mask"] = self.mask.to(self.weight.dtype)
        else:
            destination[prefix + "positions"] = self._compact.positions.to(torch.float64)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Load either layout's entries into this layer's layout (a ``model.zip`` of the masked release included)."""
        to_layout(state_dict, prefix, self)
        if self._compact is not None and prefix + "positions" in state_dict:
            positions = valid_positions(state_dict.pop(prefix + "positions"), state_dict.get(prefix + "values"),
                                         self.out_features * self.in_features, prefix)
            self._compact = CompactStructure.from_positions(positions.to(self.device),
                                                            (self.out_features, self.in_features))
            values = self.trainable_weight()
            if values.numel() != positions.numel():
                values.data = values.data.new_zeros(positions.numel())
            self._mask_version += 1
            self._invalidate()
            super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
            return
        key = prefix + "mask"
        if key in state_dict and torch.is_tensor(state_dict[key]):
            state_dict[key] = state_dict[key] > 0.5 if state_dict[key].is_floating_point() else state_dict[key].bool()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self._compact is None:
            self._refresh_mask_values()
            self.apply_mask()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, density={self.density:.3f}, backend={self.backend}"


def __getattr__(name: str) -> Any:
    """``LayoutGroup`` and ``set_backend`` moved to :mod:`sparse_rl.network_layout`; their old names here keep
    working (``sparse_rl.layers.set_backend`` was documented API)."""
    if name in ("LayoutGroup", "set_backend"):
        from sparse_rl import network_layout
        return getattr(network_layout, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SparseLinear", "copy_linear"]
