"""``compact``: a layer that stores only its active weights, so its training step costs what its active weights cost.

Layout. The trainable parameter is ``values``, the active weights in CSR order (row-major positions, ascending);
beside it, :class:`CompactStructure` holds the ``int32`` row pointers and columns the kernels read, and the
transposed structure the input gradient reads. There is no dense weight: the gradient, Adam's moments, target
networks, Polyak averaging and the state dict are all O(nnz). The dense weight is built only on demand (scoring on a
topology update, FLOP checks, export, a switch to the masked layout).

Kernels (:mod:`sparse_rl.backends.kernels`). Activations are feature-major ``(features, batch)``:

* forward ``Yᵀ = W Xᵀ``: per output row, its active weights times rows of ``Xᵀ``, batch columns in registers;
* input gradient ``dXᵀ = Wᵀ dYᵀ``: the same loop over ``Wᵀ``'s CSR, values gathered through ``perm_t``;
* weight gradient: one dot product of ``dYᵀ[r]`` and ``Xᵀ[c]`` per active ``(r, c)``. On the steps where the
  layer's ``dense_grad_needed`` is set (one step ahead of a gradient-scored topology update), one dense product
  ``dYᵀ X`` instead, kept by the layer for scoring (:meth:`~sparse_rl.layers.SparseLinear.score_grad`).
* a fused ReLU (:mod:`sparse_rl.relu_fusion`): the forward kernel rectifies each output row while it is in cache,
  and the backward masks ``dYᵀ`` by the rectified output first, as ``torch.relu``'s backward does (inside the
  weight-gradient kernel's pass over ``dYᵀ`` where it runs: one pass less).
* the bias' gradient, each row of ``dYᵀ`` summed, in the weight-gradient kernel's pass too (another pass less).
* where a layer wants both the input and the weight gradient for every weight (a hidden layer), both in one pass
  over ``Wᵀ``'s rows: each chunk of a ``dYᵀ`` row is loaded once for the input gradient's multiply-add and the
  weight's dot product with that input row (held in L1), the same floats as the two loops; the ReLU's mask and the
  bias' sums then run in a pass of their own before it.

A topology update re-lays the layer (:func:`relayout_map`): one gather moves the values, every optimizer moment and
the pending gradient of the surviving weights to their new places; grown weights start at 0 with zeroed moments (and
the dense gradient where the step kept it). The count may change (SRigL's ablation): ``values`` is then a new
parameter in the old one's place, in the layer and in its optimizer, and the target is re-laid the same way, so
``polyak_update`` keeps pairing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sparse_rl.backends import kernels
from sparse_rl.backends.masked import is_feature_major
from sparse_rl.relu_fusion import mark_rectified, rectifies_now

if TYPE_CHECKING:
    from sparse_rl.layers import SparseLinear


@dataclass(frozen=True)
class CompactStructure:
    """The index structure of a compact layer.

    :param shape: ``(out, in)``.
    :param positions: flat row-major positions of the active weights, ascending (``int64``, nnz): ``values[j]``
        is ``W.flatten()[positions[j]]``.
    :param crow: CSR row pointers of ``W`` (``int32``, out + 1).
    :param col: CSR columns of ``W`` (``int32``, nnz).
    :param crow_t: CSR row pointers of ``Wᵀ`` (``int32``, in + 1).
    :param col_t: CSR columns of ``Wᵀ``, i.e. ``W``'s rows (``int32``, nnz).
    :param perm_t: ``Wᵀ``'s j-th value is ``values[perm_t[j]]`` (``int32``, nnz).
    """

    shape: tuple[int, int]
    positions: torch.Tensor
    crow: torch.Tensor
    col: torch.Tensor
    crow_t: torch.Tensor
    col_t: torch.Tensor
    perm_t: torch.Tensor

    @classmethod
    @torch.no_grad()
    def from_positions(cls, positions: torch.Tensor, shape: tuple[int, int]) -> CompactStructure:
        """The structure of the ascending flat ``positions`` in an ``(out, in)`` weight."""
        out_features, in_features = shape
        positions = positions.to(torch.int64)
        rows, cols = positions // in_features, positions % in_features
        perm_t = torch.argsort(cols * out_features + rows)
        return cls(shape, positions, _row_pointers(rows, out_features), cols.to(torch.int32),
                   _row_pointers(cols, in_features), rows[perm_t].to(torch.int32), perm_t.to(torch.int32))

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> CompactStructure:
        """The structure of a boolean ``(out, in)`` mask."""
        return cls.from_positions(mask.flatten().nonzero().squeeze(1), tuple(mask.shape))  # type: ignore[arg-type]

    @property
    def nnz(self) -> int:
        return self.positions.numel()

    def mask(self) -> torch.Tensor:
        """The boolean ``(out, in)`` mask (built on demand)."""
        flat = torch.zeros(self.shape[0] * self.shape[1], dtype=torch.bool, device=self.positions.device)
        flat[self.positions] = True
        return flat.view(self.shape)

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """The dense ``(out, in)`` weight holding ``values`` at the active positions (built on demand)."""
        flat = values.new_zeros(self.shape[0] * self.shape[1])
        flat[self.positions] = values
        return flat.view(self.shape)

    def gather(self, dense: torch.Tensor) -> torch.Tensor:
        """The values of a dense ``(out, in)`` tensor at the active positions, in this structure's order."""
        return dense.flatten()[self.positions].clone()

    @property
    def pointers(self) -> tuple[int, int, int, int, int]:
        """The addresses of ``crow``, ``col``, ``perm_t``, ``crow_t`` and ``col_t``, which the compiled kernels take
        on every call: read once per structure (the index tensors are never changed in place; a copy or a pickled
        and loaded structure has tensors of its own and reads them anew, see :meth:`__getstate__`)."""
        pointers = self.__dict__.get("_pointers")
        if pointers is None:
            pointers = tuple(tensor.data_ptr() for tensor in (self.crow, self.col, self.perm_t, self.crow_t,
                                                               self.col_t))
            object.__setattr__(self, "_pointers", pointers)
        return pointers

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_pointers", None)  # the addresses of these tensors, not of a copy's
        return state

    def to(self, device: torch.device) -> CompactStructure:
        """This structure on ``device``."""
        moved = {name: getattr(self, name).to(device) for name in ("positions", "crow", "col", "crow_t", "col_t",
                                                                     "perm_t")}
        return CompactStructure(self.shape, **moved)


def _row_pointers(rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    crow = torch.zeros(num_rows + 1, dtype=torch.int32, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=num_rows).cumsum(0)
    return crow


@torch.no_grad()
def relayout_map(old: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each new active position's value comes from: ``(source, found)``, with ``source`` an index into the old
    values and ``found`` false for a position that was not active before (a grown weight). Both position lists are
    ascending (CSR order); a binary search, so nothing of the dense weight's size is allocated."""
    if old.numel() == 0:
        return torch.zeros_like(new), torch.zeros_like(new, dtype=torch.bool)
    old = old.to(new.dtype)
    source = torch.searchsorted(old, new).clamp_(max=old.numel() - 1)
    return source, old[source] == new


@torch.no_grad()
def relaid(tensor: torch.Tensor, source: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``tensor`` (one value per old active weight) moved to the new order: survivors gathered, the rest 0."""
    return torch.where(keep, tensor[source], torch.zeros((), dtype=tensor.dtype, device=tensor.device))


INPUT_GRAD_FROM = "_sparse_rl_input_grad_from"
"""The instance attribute (in ``__dict__``) by which the caller tells a compact layer that the first ``n`` features of
its input need no gradient while it is set: the critic in the actor's loss (:mod:`sparse_rl.sb3.actor_loss`), whose
input is the observation's features, which need none, then the actions."""


def input_grad_from(layer: SparseLinear, x: torch.Tensor) -> int:
    """The first input feature whose gradient ``layer`` computes on ``x``: the :data:`INPUT_GRAD_FROM` flag's ``n``
    where ``x`` is a concatenation along features (``torch.cat(..., dim=1)``) whose parts but the last have no gradient
    path, so that autograd drops those features' gradient; 0 otherwise. Skipping them saves most of the input
    gradient of a critic's first layer in the actor's loss (17 of 23 inputs on HalfCheetah)."""
    first = layer.__dict__.get(INPUT_GRAD_FROM, 0)
    if not first:
        return 0
    node = x.grad_fn
    if (node is None or type(node).__name__ != "CatBackward0" or node._saved_dim not in (1, -1)  # type: ignore[attr-defined]
            or any(function is not None for function, _ in node.next_functions[:-1])):
        return 0
    return first


class _CompactLinearFunction(torch.autograd.Function):
    """``y = x Wᵀ + b`` from the active values of ``W`` (see the module docstring); the input gradient takes ``x``'s
    layout (``feature_major``), and the output is rectified in the kernel where ``relu`` says so."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None,
                structure: CompactStructure, layer: SparseLinear, feature_major: bool, relu: bool,
                input_from: int) -> torch.Tensor:
        x_t = x.t().contiguous()  # (in, batch): copied unless the input is feature-major
        y_t = kernels.layer_forward(values, structure, x_t, bias, relu)
        ctx.save_for_backward(x_t, values, y_t if relu else None)
        ctx.structure, ctx.layer = structure, layer
        ctx.input_feature_major, ctx.input_from = feature_major, input_from
        return y_t.t()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_t, values, rectified_t = ctx.saved_tensors
        structure: CompactStructure = ctx.structure
        dy_t = grad_output.t().contiguous()  # (out, batch); a no-op for feature-major gradients
        wants_input, wants_values, wants_bias = ctx.needs_input_grad[:3]  # never true for a missing bias
        if not (wants_values and ctx.layer.dense_grad_needed):  # the kernels, from one pass over dyᵀ
            grad_x_t, grad_values, grad_bias = kernels.layer_backward(values, structure, dy_t, x_t, rectified_t,
                                                                      (wants_input, wants_values, wants_bias),
                                                                      ctx.input_from)
        else:  # one step ahead of a gradient-scored update: the dense product, kept for scoring
            if rectified_t is not None:  # the fused ReLU's backward: ReluBackward0's own op, on one layout
                dy_t = torch.ops.aten.threshold_backward(dy_t, rectified_t, 0)
            dense = dy_t @ x_t.t()
            ctx.layer.accumulate_dense_grad(dense)
            grad_values = dense.flatten()[structure.positions]
            grad_bias = dy_t.sum(1) if wants_bias else None
            grad_x_t = (kernels.input_grad(values, structure.perm_t, structure.crow_t, structure.col_t, dy_t,
                                           structure.shape[0], ctx.input_from) if wants_input else None)
        grad_x = None if grad_x_t is None else grad_x_t.t()
        if grad_x is not None and not ctx.input_feature_major:  # the input's own layout, so that element-wise ops
            grad_x = grad_x.contiguous()                        # never mix layouts
        return grad_x, grad_values, grad_bias, None, None, None, None, None


def forward(layer: SparseLinear, x: torch.Tensor) -> torch.Tensor:
    """The ``compact`` backend's forward pass of ``layer`` (compact layout): every batch size, batch 1 included."""
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    parameters = layer._parameters
    values, bias, structure = parameters["values"], parameters["bias"], layer._compact
    assert values is not None and structure is not None
    rectify = rectifies_now(layer)
    if torch.is_grad_enabled() and (x2.requires_grad or values.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        y = _CompactLinearFunction.apply(x2, values, bias, structure, layer, is_feature_major(x2), rectify,
                                         input_grad_from(layer, x2))
    else:  # no graph to record (target networks, predict): the kernel alone
        y = kernels.layer_forward(values, structure, x2.t().contiguous(), bias, rectify).t()
    if x.dim() != 2:
        y = y.reshape(*x.shape[:-1], layer.out_features)
    return mark_rectified(y) if rectify else y
