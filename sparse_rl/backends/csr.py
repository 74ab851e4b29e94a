"""``sparse``: MKL's CSR products on the masked layout (the dense ``weight`` stays the parameter).

Only the active weights are multiplied. The forward pass is ``W x`` with ``W`` in CSR, the input gradient is
``Wᵀ dy`` with ``Wᵀ`` in CSR, and the weight gradient is the sampled dense-dense product ``(dyᵀ x) ⊙ mask`` at the
active positions, scattered into a dense ``.grad`` that is zero elsewhere. When the layer's ``dense_grad_needed`` is
set, the weight gradient is one dense product instead, because gradient-based growth scores with it. The kernels are
PyTorch's own (``torch.sparse.addmm``/``mm``, MKL on x86, and ``torch.sparse.sampled_addmm``). The CSR structure is
cached by the layer and rebuilt only when the mask changes; each call gathers the values from the dense weight.

This backend is what ``auto`` falls back to on a CPU without the compiled compact kernels
(:mod:`sparse_rl.backends.compact` is faster wherever those are built). Activations are feature-major, as for every
sparse backend (:mod:`sparse_rl.backends.masked`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sparse_rl.backends.masked import SMALL_BATCH, is_feature_major

if TYPE_CHECKING:
    from sparse_rl.layers import SparseLinear

@dataclass(frozen=True)
class CsrStructure:
    """The sparsity pattern of one mask, in the formats the kernels read.

    :param version: the layer's mask version this structure was built from.
    :param crow: CSR row pointers of ``W`` (``out + 1``).
    :param col: CSR column indices of ``W`` (``nnz``).
    :param index: flat positions in ``W`` of the CSR values, row-major.
    :param crow_t: CSR row pointers of ``Wᵀ`` (``in + 1``).
    :param col_t: CSR column indices of ``Wᵀ``.
    :param index_t: flat positions in ``W`` of ``Wᵀ``'s CSR values (column-major order of ``W``).
    :param pattern: a CSR tensor with ``W``'s pattern (values 0), the output pattern of the
        sampled product.
    """

    version: int
    shape: tuple[int, int]
    crow: torch.Tensor
    col: torch.Tensor
    index: torch.Tensor
    crow_t: torch.Tensor
    col_t: torch.Tensor
    index_t: torch.Tensor
    pattern: torch.Tensor

    @classmethod
    @torch.no_grad()
    def from_mask(cls, mask: torch.Tensor, version: int = 0, dtype: torch.dtype = torch.float32) -> CsrStructure:
        """The structure of a boolean ``(out, in)`` mask."""
        out_features, in_features = mask.shape
        index = mask.flatten().nonzero().squeeze(1)
        rows, col = index // in_features, index % in_features
        crow, col = _row_pointers(rows, out_features), col.to(torch.int32)  # MKL's index type: no conversion per call
        index_t = mask.t().flatten().nonzero().squeeze(1)  # flat positions in Wᵀ: c * out + r
        rows_t, col_t = index_t // out_features, index_t % out_features
        index_t = col_t * in_features + rows_t  # the same weights' positions in W
        with warnings.catch_warnings():  # torch warns once per process that CSR support is in beta
            warnings.simplefilter("ignore", UserWarning)
            pattern = torch.sparse_csr_tensor(crow, col, torch.zeros(index.numel(), dtype=dtype, device=mask.device),
                                              (out_features, in_features), check_invariants=False)
        return cls(version, (out_features, in_features), crow, col, index,
                   _row_pointers(rows_t, in_features), col_t.to(torch.int32), index_t, pattern)

    def weight_csr(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight``'s active values as a CSR ``(out, in)`` tensor."""
        return torch.sparse_csr_tensor(self.crow, self.col, weight.reshape(-1).index_select(0, self.index),
                                       self.shape, check_invariants=False)

    def weight_t_csr(self, weight: torch.Tensor) -> torch.Tensor:
        """``weightᵀ``'s active values as a CSR ``(in, out)`` tensor."""
        return torch.sparse_csr_tensor(self.crow_t, self.col_t, weight.reshape(-1).index_select(0, self.index_t),
                                       self.shape[::-1], check_invariants=False)


def _row_pointers(rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    crow = torch.zeros(num_rows + 1, dtype=torch.int32, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=num_rows).cumsum(0)
    return crow


class _SparseLinearFunction(torch.autograd.Function):
    """``y = x Wᵀ + b`` computed with the active weights of ``W`` only (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                structure: CsrStructure, dense_grad: bool) -> torch.Tensor:
        ctx.input_feature_major = is_feature_major(x)
        x_t = x.t().contiguous()  # (in, batch); a no-op for feature-major input
        w = structure.weight_csr(weight)
        y_t = torch.sparse.mm(w, x_t) if bias is None else torch.addmm(bias.unsqueeze(1), w, x_t)
        ctx.save_for_backward(x_t, weight)
        ctx.structure, ctx.dense_grad = structure, dense_grad
        return y_t.t()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x_t, weight = ctx.saved_tensors
        structure: CsrStructure = ctx.structure
        dy_t = grad_output.t().contiguous()  # (out, batch); a no-op for feature-major gradients
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # beta=0: the uninitialised output is never read
            grad_x = torch.addmm(dy_t.new_empty(structure.shape[1], dy_t.shape[1]), structure.weight_t_csr(weight),
                                 dy_t, beta=0.0).t()
            if not ctx.input_feature_major:  # the input's own layout, so that element-wise ops never mix layouts
                grad_x = grad_x.contiguous()
        if ctx.needs_input_grad[1]:
            if ctx.dense_grad:
                grad_w = dy_t @ x_t.t()
            else:
                values = torch.sparse.sampled_addmm(structure.pattern, dy_t, x_t.t(), beta=0.0).values()
                grad_w = torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
                grad_w = grad_w.index_copy_(0, structure.index, values).view_as(weight)
        if ctx.needs_input_grad[2]:  # never true for a missing bias
            grad_b = dy_t.sum(1)
        return grad_x, grad_w, grad_b, None, None


def sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, structure: CsrStructure,
                  dense_grad: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a weight that is zero outside ``structure``, computed on
    the active weights only.

    The weight gradient is zero outside the pattern unless ``dense_grad`` asks for the dense one.
    With fewer than :data:`SMALL_BATCH` rows, ``F.linear`` itself runs. Its weight gradient is the
    dense one, which is correct at every active position, and the controller masks the rest.
    """
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if x2.shape[0] < SMALL_BATCH:
        return F.linear(x, weight, bias)
    y = _SparseLinearFunction.apply(x2, weight, bias, structure, dense_grad)
    return y if x.dim() == 2 else y.reshape(*lead, weight.shape[0])


def forward(layer: SparseLinear, x: torch.Tensor) -> torch.Tensor:
    """The ``sparse`` backend's forward pass of ``layer`` (masked layout)."""
    if x.dim() == 1 or (x.dim() == 2 and x.shape[0] < SMALL_BATCH):
        return F.linear(x, layer.weight, layer.bias)
    return sparse_linear(x, layer.weight, layer.bias, layer.csr_structure(), layer.dense_grad_needed)
