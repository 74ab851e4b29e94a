"""Execution backends of :class:`~sparse_rl.layers.SparseLinear`: how a masked layer computes.

* ``masked``: the dense ``F.linear`` on a weight whose masked entries are zero. Every weight is
  multiplied, and the weight gradient is dense.
* ``sparse``: only the active weights are multiplied. The forward pass is ``W x`` with ``W`` in
  CSR, the input gradient is ``Wᵀ dy`` with ``Wᵀ`` in CSR, and the weight gradient is the
  sampled dense-dense product ``(dyᵀ x) ⊙ mask`` at the active positions only. That gradient is
  scattered into a dense ``.grad`` that is zero elsewhere. When the layer's ``dense_grad_needed`` is
  set, the weight gradient is computed dense instead (one dense product), because
  gradient-based growth scores with it. The dense ``weight`` parameter stays, so optimizers,
  state dicts, target networks and the masking invariants do not change.
* ``auto``: picks one of the two per layer with :func:`auto_backend`, a fixed rule of (layer size,
  density) rows. The rule is this machine's calibration (``python -m sparse_rl.calibrate``, which
  times both backends on lone layers once and writes :func:`rule_path`) when one exists for its CPU
  and torch, else the built-in :data:`AUTO_RULE`. It depends only on the layer's shape, density and
  device, and no timing happens during a run.

The kernels are PyTorch's own CSR kernels: ``torch.sparse.addmm``/``mm`` (MKL on x86 CPUs) and
``torch.sparse.sampled_addmm``. They need nothing beyond ``torch``, and
``docs/architecture.md`` gives the measurements that chose them. The CSR structure, meaning the
row pointers, the column indices and the positions of the active weights in ``W`` and in ``Wᵀ``,
is cached by the layer. It is rebuilt only when the mask changes. Each call gathers only the
values.

Layouts. MKL's CSR product wants its dense operand and its result row-major, ``(in, batch)`` and
``(out, batch)``. A sparse layer therefore returns ``(W xᵀ)ᵀ``, a transposed ("feature-major")
view. In a network where any layer runs sparse, ``auto``'s dense layers also return feature-major
``(W xᵀ + b)ᵀ``. Activations are then feature-major throughout, with no copies. Dense layers in
such a network run the same GEMM with other transpose flags, and those are a few narrow input
and output layers. Each layer returns its input gradient in its input's layout. The element-wise
ops between layers (ReLU and its backward) never mix layouts: mixed, they ran several times
slower. A network with no sparse layer runs ``F.linear`` exactly as ``masked`` does.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sparse_rl.machine import cpu_model

BACKENDS = ("auto", "masked", "sparse")
"""The values a ``SparseLinear``'s ``backend`` accepts."""

SMALL_BATCH = 4
"""Below this many rows, the sparse backend runs dense kernels on the masked weight. At batch 1,
for example one action from ``predict``, a CSR call costs more than the dense product it replaces."""

Rule = tuple[tuple[int, float], ...]
"""``auto``'s table of ``(min_weights, max_density)`` rows, largest ``min_weights`` first."""

AUTO_RULE: Rule = ((100_000, 0.10), (65_536, 0.04))
"""The built-in rule, for machines without a calibration. A CPU layer with at least ``min_weights`` weights (in ×
out) at density ``max_density`` or below runs ``sparse``. The first row that matches by size decides. Layers
smaller than the last row stay on ``masked``. The rows were measured on an Intel Xeon (this project's machine
until November 2026) with ``benchmarks/sparse_speed.py`` at batch 256. For a lone layer (forward, backward,
fused Adam) the break-even densities were 0.07–0.11 for 256×256, 0.12 for 400×300 and 0.12–0.13 for 1024×1024;
128×128 and a MuJoCo input layer such as 23×256 never broke even. Inside SB3's SAC, a 256×256 actor layer at
density 0.044 made the training step 4 % slower than ``masked``. The Python autograd function and the transposes
into and out of the sparse layout cost more there than the kernel saved. The 256×256 row therefore sits at 0.04,
below the lone layer's break-even. The break-even moves with the CPU (on an AMD EPYC it was 0.3 for 256×256),
which is what ``python -m sparse_rl.calibrate`` is for."""

RULE_PATH_ENV = "SPARSE_RL_AUTO_RULE"
"""The environment variable naming the calibration file (see :func:`rule_path`)."""


def rule_path() -> Path:
    """Where ``python -m sparse_rl.calibrate`` writes this machine's rule and ``auto`` reads it:
    ``$SPARSE_RL_AUTO_RULE``, else ``$XDG_CACHE_HOME/sparse_rl/auto_rule.json`` (``~/.cache`` by default)."""
    if os.environ.get(RULE_PATH_ENV):
        return Path(os.environ[RULE_PATH_ENV])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "sparse_rl" / "auto_rule.json"


def machine_key() -> dict[str, str]:
    """What a calibration is valid for: the CPU model and the torch version that were timed."""
    return {"cpu": cpu_model(), "torch": torch.__version__}


def write_rule(rule: Rule, path: Path, measurements: list[dict[str, float]] | None = None) -> None:
    """Write ``rule`` as this machine's calibration (with the measurements it came from)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**machine_key(), "rule": [[weights, density] for weights, density in rule],
              "measurements": measurements or []}
    path.write_text(json.dumps(record, indent=1) + "\n")


def read_rule(path: Path) -> Rule | None:
    """The rule in a calibration file, or ``None`` when it was measured on another CPU or torch
    (with a warning). A file that is not a calibration is a ``ValueError`` naming it."""
    try:
        record = json.loads(path.read_text())
        rule = tuple((int(weights), float(density)) for weights, density in record["rule"])
        measured_on = {key: str(record[key]) for key in machine_key()}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not an auto-backend calibration ({error}); "
                         "rerun python -m sparse_rl.calibrate or delete it") from None
    if measured_on != machine_key():
        warnings.warn(f"{path} was calibrated on {measured_on}, this is {machine_key()}; "
                      "auto uses the built-in rule (rerun python -m sparse_rl.calibrate)", stacklevel=2)
        return None
    return tuple(sorted(rule, reverse=True))


@functools.cache
def auto_rule() -> tuple[Rule, str]:
    """The rule ``auto`` follows in this process and where it came from (``"calibrated <file>"`` or
    ``"built-in"``). Read once, so every layer of a run follows the same rule."""
    path = rule_path()
    rule = read_rule(path) if path.is_file() else None
    return (AUTO_RULE, "built-in") if rule is None else (rule, f"calibrated {path}")

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


def auto_backend(in_features: int, out_features: int, density: float, device: torch.device) -> str:
    """The backend ``auto`` resolves to for a layer. The rule (:func:`auto_rule`: this machine's
    calibration, else :data:`AUTO_RULE`) is fixed for the process and does not depend on the batch size.

    CUDA and every other non-CPU device use ``masked``. Dense GEMM on a GPU beats cuSPARSE at the
    densities DST uses, and the kernels here were never measured on one. A torch build without MKL
    also uses ``masked``: its CPU CSR product is torch's generic loop, which the rule was not
    measured on. ``sparse``, asked for explicitly, still runs there.
    """
    if device.type != "cpu" or not torch.backends.mkl.is_available():
        return "masked"
    weights = in_features * out_features
    for min_weights, max_density in auto_rule()[0]:
        if weights >= min_weights:
            return "sparse" if density <= max_density else "masked"
    return "masked"


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
        ctx.structure, ctx.dense_grad, ctx.has_bias = structure, dense_grad, bias is not None
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
        if ctx.has_bias and ctx.needs_input_grad[2]:
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


def is_feature_major(x: torch.Tensor) -> bool:
    """Whether a 2-d ``x`` is stored transposed (``x.t()`` contiguous) and not also row-major."""
    return x.dim() == 2 and not x.is_contiguous() and x.t().is_contiguous()


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 feature_major: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` with the dense kernel. The result is feature-major, ``(W xᵀ + b)ᵀ``,
    when ``feature_major`` is set or ``x`` itself is feature-major. Otherwise ``F.linear`` runs
    and the result is row-major. Dense GEMM reads either layout."""
    if x.dim() != 2 or not (feature_major or is_feature_major(x)):
        return F.linear(x, weight, bias)
    return (torch.mm(weight, x.t()) if bias is None else torch.addmm(bias.unsqueeze(1), weight, x.t())).t()
