"""The compiled compact kernels (``sparse_rl/csrc/kernels.c``), or a fallback on torch's CSR ops when they are missing.

The extension is built by ``pip install`` (``setup.py``, an optional extension: a machine without a C compiler
installs the package without it). Without it, :func:`compiled` is false, ``auto`` never picks ``compact``, and an
explicit ``backend="compact"`` runs the same layout on torch's CSR kernels (MKL on x86) after a one-line warning.

The SIMD level (``avx512``, ``avx2``, ``generic``) is chosen at import from what the CPU reports; the environment
variable ``SPARSE_RL_SIMD`` or :func:`set_simd_level` picks a lower one (the tests compare all of them).

Threads: each call runs on ``torch.get_num_threads()`` threads (rows split between them, the result the same bit for
bit), where the extension was built with OpenMP (:func:`parallel`), as torch's dense kernels do; one otherwise.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from sparse_rl.backends.masked import is_feature_major

if TYPE_CHECKING:
    from sparse_rl.backends.compact import CompactStructure

SIMD_ENV = "SPARSE_RL_SIMD"

API_VERSION = 5
"""The calling convention of ``kernels.c`` this module speaks. An extension that reports another (built from an
earlier checkout and not rebuilt after an update) is not used: the package falls back to torch's kernels with a
one-line warning instead of failing inside a training step."""

_warned = False


def _load() -> ModuleType | None:
    global _warned
    if os.environ.get("SPARSE_RL_NO_KERNELS"):
        return None
    try:
        from sparse_rl import _kernels
    except ImportError:
        return None
    if getattr(_kernels, "API_VERSION", None) != API_VERSION:
        _warned = True
        warnings.warn("sparse_rl's compiled kernels were built from another version of the package (rebuild them: "
                      "pip install -e .); backend='compact' runs on torch's CSR kernels", stacklevel=2)
        return None
    if os.environ.get(SIMD_ENV):
        _kernels.set_level(os.environ[SIMD_ENV])
    return _kernels


_EXTENSION = _load()


def compiled() -> bool:
    """Whether the compiled kernels are available."""
    return _EXTENSION is not None


def parallel() -> bool:
    """Whether the compiled kernels run on torch's intra-op threads (built with OpenMP) and not on one thread."""
    return bool(getattr(_EXTENSION, "OPENMP", 0))


def simd_levels() -> list[str]:
    """The SIMD levels this CPU runs, best first (empty without the compiled kernels)."""
    return list(_EXTENSION.levels()) if _EXTENSION is not None else []


def simd_level() -> str:
    """The SIMD level the kernels use now, or ``"torch"`` for the fallback."""
    return str(_EXTENSION.level()) if _EXTENSION is not None else "torch"


def set_simd_level(level: str) -> None:
    """Use another SIMD level of :func:`simd_levels` (``ValueError`` naming the allowed ones otherwise)."""
    if _EXTENSION is None or level not in simd_levels():
        raise ValueError(f"SIMD level {level!r} is not available here; allowed: {', '.join(simd_levels()) or 'none'}")
    _EXTENSION.set_level(level)


@contextmanager
def setting(name: str, value: int) -> Iterator[None]:
    """Inside, the compiled kernels' setting ``name`` is ``value``: ``one_pass_grads`` (a layer's input and weight
    gradients in one pass over ``Wᵀ``) or ``fused_gather_max_batch`` (the widest batch whose input gradient reads
    ``W``'s values through the permutation in its loop). Both change how the kernels run, never their floats; the
    tests and benchmarks compare the two ways."""
    swap = getattr(_EXTENSION, f"set_{name}")
    before = swap(value)
    try:
        yield
    finally:
        swap(before)


def _warn_fallback(*tensors: torch.Tensor) -> None:
    """Warn once per process that ``compact`` runs on torch's CSR kernels, naming why: the extension is not built, or
    (built) the first of ``tensors`` (those the caller checked) it does not take."""
    global _warned
    if _warned:
        return
    _warned = True
    if _EXTENSION is None:
        reason = "sparse_rl's compiled kernels are not built (reinstall with a C compiler: pip install -e .)"
    else:
        unfit = [f"{t.dtype} on {t.device}" + ("" if t.is_contiguous() else ", not contiguous") for t in tensors
                 if t.dtype is not _FLOAT32 or not t.is_cpu or not t.is_contiguous()]
        reason = f"sparse_rl's compiled kernels take contiguous CPU float32 tensors, not {unfit[0]}"
    warnings.warn(f"{reason}; backend='compact' runs on torch's CSR kernels", stacklevel=3)


_FLOAT32 = torch.float32


def _check(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels can run on these tensors (CPU float32, contiguous; the index tensors are built
    by :class:`~sparse_rl.backends.compact.CompactStructure` on the same device)."""
    if _EXTENSION is None:
        return False
    for tensor in tensors:
        if tensor.dtype is not _FLOAT32 or not tensor.is_cpu or not tensor.is_contiguous():
            return False
    return True


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch warns once per process that CSR support is in beta
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def layer_forward(values: torch.Tensor, structure: CompactStructure, x_t: torch.Tensor, bias: torch.Tensor | None,
                  relu: bool = False) -> torch.Tensor:
    """``W xᵀ + b`` as ``(rows, batch)``, for ``W``'s active ``values`` in ``structure`` and ``x_t = xᵀ`` contiguous
    ``(cols, batch)``; with ``relu``, rectified as ``torch.relu`` does (in the same pass: each output row while it is
    in cache). A training step calls this some twenty times, so the index addresses are read once per structure
    (:attr:`~sparse_rl.backends.compact.CompactStructure.pointers`)."""
    rows = structure.shape[0]
    if _check(values, x_t) and (bias is None or bias.is_contiguous()):
        batch, pointers = x_t.shape[1], structure.pointers
        y_t = x_t.new_empty(rows, batch)
        _EXTENSION.forward(values.data_ptr(), pointers[0], pointers[1], x_t.data_ptr(),  # type: ignore[union-attr]
                           0 if bias is None else bias.data_ptr(), y_t.data_ptr(), rows, batch, relu,
                           torch.get_num_threads(), 0, 0, 0, 0, 0)
        return y_t
    _warn_fallback(values, x_t, *(() if bias is None else (bias,)))
    w = _csr(structure.crow, structure.col, values, structure.shape)
    y_t = torch.sparse.mm(w, x_t) if bias is None else torch.addmm(bias.unsqueeze(1), w, x_t)
    return y_t.relu_() if relu else y_t


def layer_forward_into_head(values: torch.Tensor, structure: CompactStructure, x_t: torch.Tensor,
                            bias: torch.Tensor | None, relu: bool, head_values: torch.Tensor,
                            head_structure: CompactStructure,
                            head_bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`layer_forward` of a layer and of the one-output layer after it (a critic's Q head): ``(y_t, out_t)``,
    the layer's ``(rows, batch)`` output and the head's ``(1, batch)``, the same floats as two calls. Compiled, one
    pass: the head's sum takes each of the layer's output rows while it is in cache, so the head does not read the
    layer's output again."""
    rows, batch = structure.shape[0], x_t.shape[1]
    if (batch and _check(values, x_t, head_values) and (bias is None or bias.is_contiguous())
            and (head_bias is None or head_bias.is_contiguous())):  # (a null output row says: no head)
        y_t, out_t = x_t.new_empty(rows, batch), x_t.new_empty(1, batch)
        pointers, head = structure.pointers, head_structure.pointers
        _EXTENSION.forward(values.data_ptr(), pointers[0], pointers[1], x_t.data_ptr(),  # type: ignore[union-attr]
                           _ptr(bias), y_t.data_ptr(), rows, batch, relu, torch.get_num_threads(),
                           head_values.data_ptr(), head[0], head[1], _ptr(head_bias), out_t.data_ptr())
        return y_t, out_t
    y_t = layer_forward(values, structure, x_t, bias, relu)
    return y_t, layer_forward(head_values, head_structure, y_t, head_bias)


def input_grad(values: torch.Tensor, perm_t: torch.Tensor, crow_t: torch.Tensor, col_t: torch.Tensor,
               dy_t: torch.Tensor, rows: int, first: int = 0) -> torch.Tensor:
    """``Wᵀ dyᵀ`` as ``(cols, batch)``: the forward loop over ``Wᵀ``'s CSR, whose values are ``values[perm_t]``; only
    its rows from ``first`` on, the rows before it zero (an input whose first features need no gradient)."""
    cols = crow_t.numel() - 1
    if _check(values, dy_t):
        dx_t = dy_t.new_empty(cols, dy_t.shape[1])
        _backward(dy_t, rows, cols, dy_t.shape[1], dx=dx_t, values=values,
                  transposed=(perm_t.data_ptr(), crow_t.data_ptr(), col_t.data_ptr()), first=first)
        return dx_t
    _warn_fallback(values, dy_t)
    dx_t = torch.sparse.mm(_csr(crow_t, col_t, values[perm_t.long()], (cols, rows)), dy_t)
    dx_t[:first] = 0.0
    return dx_t


def values_grad(crow: torch.Tensor, col: torch.Tensor, dy_t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """The gradient of ``W``'s active values: ``dot(dyᵀ[r], xᵀ[col[j]])`` for every active ``(r, col[j])``."""
    rows, cols = crow.numel() - 1, x_t.shape[0]
    if _check(dy_t, x_t):
        grad = dy_t.new_empty(col.numel())
        _backward(dy_t, rows, cols, dy_t.shape[1], x_t=x_t, structure=(crow.data_ptr(), col.data_ptr()),
                  grad_values=grad)
        return grad
    _warn_fallback(dy_t, x_t)
    pattern = _csr(crow, col, dy_t.new_zeros(col.numel()), (rows, cols))
    return torch.sparse.sampled_addmm(pattern, dy_t, x_t.t(), beta=0.0).values()


def layer_backward(values: torch.Tensor, structure: CompactStructure, dy_t: torch.Tensor | None, x_t: torch.Tensor,
                   rectified_t: torch.Tensor | None, wants: tuple[bool, bool, bool], input_from: int = 0,
                   head: tuple[torch.Tensor, CompactStructure, torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor | None, ...]:
    """A compact layer's gradients from ``dyᵀ``: the input's ``(in, batch)``, the values' and the bias', each only
    where ``wants`` (the same three flags) says so (``None`` otherwise); the input's only from feature ``input_from``
    on, its rows before it zero (:func:`~sparse_rl.backends.compact.input_grad_from`). For a layer with a fused ReLU
    (``rectified_t``, its rectified output), ``dyᵀ`` is first masked where the output is not positive, as
    ``torch.relu``'s backward masks it. Compiled: one call, one pass over ``dyᵀ`` for the mask, the values' and the
    bias' gradients, the masked gradient held in a reused buffer for the input gradient. With ``head``, the values,
    structure and ``(1, batch)`` output gradient of the one-output layer after this one (whose forward
    :func:`layer_forward_into_head` fused), ``dy_t`` is ``None``: this layer's output gradient is the head's input
    gradient, made row by row in that buffer (compiled) instead of read from memory, the same floats."""
    wants_input, wants_values, wants_bias = wants
    rows, cols = structure.shape
    compiled = _check(x_t, values) and (rectified_t is None or _check(rectified_t))
    if head is not None and not (compiled and _check(head[0], head[2]) and x_t.shape[1]):  # (a null dy: no head)
        # the head's input gradient first, then as without one
        head_values, head_structure, head_dy = head
        dy_t, head = input_grad(head_values, head_structure.perm_t, head_structure.crow_t, head_structure.col_t,
                                head_dy, 1), None
    if compiled and (head is not None or (dy_t is not None and _check(dy_t))):
        batch = x_t.shape[1]
        grad_x = x_t.new_empty(cols, batch) if wants_input else None
        grad_values = x_t.new_empty(values.shape[0]) if wants_values else None
        grad_bias = x_t.new_empty(rows) if wants_bias else None
        pointers = structure.pointers
        _backward(dy_t, rows, cols, batch, x_t=x_t, rectified_t=rectified_t, structure=pointers[:2],
                  grad_values=grad_values, grad_bias=grad_bias, dx=grad_x, values=values, transposed=pointers[2:],
                  first=input_from, head=head)
        return grad_x, grad_values, grad_bias
    assert dy_t is not None
    masked = dy_t if rectified_t is None else torch.ops.aten.threshold_backward(dy_t, rectified_t, 0)
    return (input_grad(values, structure.perm_t, structure.crow_t, structure.col_t, masked, rows, input_from)
            if wants_input else None,
            values_grad(structure.crow, structure.col, masked, x_t) if wants_values else None,
            masked.sum(1) if wants_bias else None)


def _ptr(tensor: torch.Tensor | None) -> int:
    """``tensor``'s address, 0 (a null pointer: not computed, not read) for ``None``."""
    return 0 if tensor is None else tensor.data_ptr()


def _backward(dy_t: torch.Tensor | None, rows: int, cols: int, batch: int, *, x_t: torch.Tensor | None = None,
              rectified_t: torch.Tensor | None = None, structure: tuple[int, int] = (0, 0),
              grad_values: torch.Tensor | None = None, grad_bias: torch.Tensor | None = None,
              dx: torch.Tensor | None = None, values: torch.Tensor | None = None,
              transposed: tuple[int, ...] = (0, 0, 0), first: int = 0,
              head: tuple[torch.Tensor, CompactStructure, torch.Tensor] | None = None) -> None:
    """The compiled backward kernel (``kernels.c``'s ``py_backward``) on ``W``'s CSR ``structure`` and ``Wᵀ``'s
    ``transposed`` one (``perm_t``, ``crow_t``, ``col_t``), given as addresses; what is ``None`` (or 0) is passed as a
    null pointer (and not computed). The input gradient ``dx`` gets its rows from ``first`` on (the loop over ``Wᵀ``'s
    rows starts there: its row pointers and ``dx`` are passed from that row, and ``first``, from which row of ``x_t``
    the one pass over ``Wᵀ`` that computes both gradients reads) and zeros before it. With ``head``
    (:func:`layer_backward`), ``dy_t`` is ``None`` and the output gradient comes from the head's."""
    if dx is not None and first:
        dx[:first] = 0.0
        perm_t, crow_t, col_t = transposed
        transposed = (perm_t, crow_t + 4 * first, col_t)  # int32 row pointers; their entries index the whole Wᵀ
    head_pointers = (0, 0, 0, 0) if head is None else (head[0].data_ptr(), *head[1].pointers[:2], head[2].data_ptr())
    _EXTENSION.backward(*structure, _ptr(dy_t), _ptr(rectified_t), _ptr(x_t),  # type: ignore[union-attr]
                        _ptr(grad_values), _ptr(grad_bias), _ptr(values), *transposed,
                        0 if dx is None else dx.data_ptr() + 4 * first * batch, rows, cols - first,
                        0 if values is None else values.numel(), batch, torch.get_num_threads(), *head_pointers,
                        first)


def _like(grad: torch.Tensor, feature_major: bool) -> torch.Tensor:
    """``grad`` stored in the given layout (copied only where it is not)."""
    return grad.t().contiguous().t() if feature_major else grad.contiguous()


def renorm_runs_on(x: torch.Tensor) -> bool:
    """Whether the compiled BatchRenorm kernels take ``x``: CPU float32 ``(batch, features)``, row-major or
    feature-major."""
    return (_EXTENSION is not None and x.dtype == torch.float32 and x.is_cpu and x.dim() == 2
            and (x.is_contiguous() or is_feature_major(x)))


def renorm_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (centred on the first sample, so exactly ``x[0]`` for a constant feature) and unbiased variance
    (exactly 0 for a constant feature) of each feature of ``x`` (:func:`renorm_runs_on`) over the batch."""
    n, f = x.shape
    mean, var = x.new_empty(f), x.new_empty(f)
    _EXTENSION.renorm_stats(x.data_ptr(), mean.data_ptr(), var.data_ptr(), n, f,  # type: ignore[union-attr]
                            is_feature_major(x))
    return mean, var


def renorm_grad_sums(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Σ grad`` and ``Σ grad (x - mean)`` over the batch, for each feature."""
    feature_major = is_feature_major(x)
    grad = _like(grad, feature_major)
    n, f = x.shape
    grad_sum, centred_sum = x.new_empty(f), x.new_empty(f)
    _EXTENSION.renorm_grad_sums(grad.data_ptr(), x.data_ptr(), mean.data_ptr(),  # type: ignore[union-attr]
                                grad_sum.data_ptr(), centred_sum.data_ptr(), n, f, feature_major)
    return grad_sum, centred_sum


def renorm_input_grad(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, alpha: torch.Tensor,
                      beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``alpha grad + beta (x - mean) + gamma`` (per-feature vectors broadcast over the batch) in one pass, stored
    as ``x`` is."""
    feature_major = is_feature_major(x)
    # Bound to names: a temporary's memory would be freed before the call reads it.
    grad = _like(grad, feature_major)
    alpha, beta, gamma = (t.contiguous() for t in (alpha, beta, gamma))
    n, f = x.shape
    d_input = torch.empty_like(x)
    _EXTENSION.renorm_input_grad(grad.data_ptr(), x.data_ptr(), mean.data_ptr(),  # type: ignore[union-attr]
                                 alpha.data_ptr(), beta.data_ptr(), gamma.data_ptr(), d_input.data_ptr(), n, f,
                                 feature_major)
    return d_input
