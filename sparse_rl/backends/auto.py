"""``auto``: which backend a layer computes with, from its shape, density and device (and, for a narrow output layer,
whether the body of its network runs sparse kernels).

With the compiled compact kernels present (:mod:`sparse_rl.backends.kernels`), a CPU layer of a fixed-count method
runs ``compact`` when it has at least :data:`COMPACT_MIN_WEIGHTS` weights at density :data:`COMPACT_MAX_DENSITY` or
below (:data:`COMPACT_NARROW_MAX_DENSITY` for an input layer, :func:`~sparse_rl.backends.masked.is_input_layer`, and
any density for one that feeds a compact layer, :data:`COMPACT_CHAINED_INPUT_MAX_DENSITY`),
or when it is a narrow output layer (:func:`is_narrow_output_layer`) of a network whose body (its layers other than
such heads) runs sparse kernels, at any size and density; ``masked`` otherwise (so a network without sparse layers
stays dense throughout). That rule is a constant, not a calibration: the compact kernels break even with dense far
above the densities DST uses (``docs/architecture.md`` has the measurements), so a machine's load on the day cannot
move a layer across it.
Without the compiled kernels, ``auto`` follows the older ``sparse``-or-``masked`` table: this machine's calibration
(``python -m sparse_rl.calibrate``) when one exists for its CPU and torch, else the built-in :data:`AUTO_RULE`.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

import torch

from sparse_rl.backends import kernels
from sparse_rl.backends.masked import is_input_layer
from sparse_rl.machine import cpu_model

COMPACT_MAX_DENSITY = 0.2
"""Highest density at which ``auto`` lays a layer out compactly (see the module docstring)."""

COMPACT_NARROW_MAX_DENSITY = 0.7
"""Highest density at which ``auto`` lays an input layer (:func:`~sparse_rl.backends.masked.is_input_layer`) out
compactly. Dense GEMM runs far below its rate at so
short an inner dimension, and the compact forward writes the (rectified) activations in one pass where the dense
layer takes three (bias, product, ReLU): inside ``train()`` such input layers at ERK's densities (SAC's 0.35 and
0.41, TD3's 0.61 and 0.52) made the step 7 % and 4–6 % faster than masked ones (two quiet runs; Ant-v4 10 %),
while a lone layer timed hot breaks even and fully dense input layers (wide networks) gained nothing (``python
benchmarks/sparse_speed.py --part input-layers``, ``docs/architecture.md``)."""

COMPACT_CHAINED_INPUT_MAX_DENSITY = 1.0
"""Highest density at which ``auto`` lays out compactly an input layer whose output goes straight (through a ReLU)
into a compact layer of the same ``nn.Sequential``: the two then run as one autograd node
(:mod:`sparse_rl.backends.compact_chain`). The wide ×4 networks' dense input layers, so laid out, made ``train()``
of the wide SAC and TD3 1.05× faster, where CrossQ's, whose ReLU feeds a BatchRenorm, made it 1.04× slower on
their own (``docs/architecture.md``)."""

COMPACT_MIN_WEIGHTS = 4096
"""Smallest layer (in × out weights) that ``auto`` lays out compactly: below it, Python per call costs more."""

NARROW_OUTPUT_MAX_OUT = 8
"""Most outputs of a narrow output layer (:func:`is_narrow_output_layer`)."""

NARROW_OUTPUT_MIN_IN = 64
"""Fewest inputs of a narrow output layer (:func:`is_narrow_output_layer`)."""


def is_narrow_output_layer(in_features: int, out_features: int) -> bool:
    """Whether a layer of this shape is a narrow output layer, an actor's or a critic's head: at most
    :data:`NARROW_OUTPUT_MAX_OUT` outputs read from at least :data:`NARROW_OUTPUT_MIN_IN` features. ``auto`` lays
    such a layer of a sparse network out compactly at any size and density, dense ones (ERK's density for heads)
    included: MKL's dense products with 2-7 rows, or with one inner dimension (the input gradient of a 1-output
    head, an outer product), run far below its rate, and inside SAC's and TD3's ``train()`` compact heads made the
    step 5-7 % faster (``python benchmarks/sparse_speed.py --part output-layers``, ``docs/architecture.md``)."""
    return out_features <= NARROW_OUTPUT_MAX_OUT and in_features >= NARROW_OUTPUT_MIN_IN


Rule = tuple[tuple[int, float], ...]
"""``auto``'s table of ``(min_weights, max_density)`` rows, largest ``min_weights`` first."""

AUTO_RULE: Rule = ((100_000, 0.10), (65_536, 0.04))
"""The built-in ``sparse``-or-``masked`` rule, for machines without the compiled kernels and without a calibration.
A CPU layer with at least ``min_weights`` weights (in ×
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


def compact_max_density(in_features: int, out_features: int, feeds_compact: bool = False) -> float:
    """Highest density at which ``auto`` lays a fixed-count layer of this shape out compactly; ``feeds_compact``:
    its output goes straight into a compact layer (:data:`COMPACT_CHAINED_INPUT_MAX_DENSITY`)."""
    if not is_input_layer(in_features, out_features):
        return COMPACT_MAX_DENSITY
    return COMPACT_CHAINED_INPUT_MAX_DENSITY if feeds_compact else COMPACT_NARROW_MAX_DENSITY


def auto_backend(in_features: int, out_features: int, density: float, device: torch.device,
                 compact_capable: bool = True, in_sparse_network: bool = False, feeds_compact: bool = False) -> str:
    """The backend ``auto`` resolves to for a layer (see the module docstring). ``compact_capable`` is false for
    layers whose density changes while they learn (HALO), which keep the masked layout. ``in_sparse_network``: the
    body of the layer's network (its layers other than heads) runs sparse kernels (a narrow output layer then runs
    compact). ``feeds_compact``: the layer's output goes straight (through a ReLU) into a compact layer of the same
    ``nn.Sequential`` (an input layer then runs compact at any density).

    CUDA and every other non-CPU device use ``masked``: dense GEMM on a GPU beats sparse kernels at the densities DST
    uses, and the kernels here were never measured on one. A torch build without MKL also uses ``masked`` when the
    compiled kernels are missing. ``sparse`` or ``compact``, asked for explicitly, still run there.
    """
    if device.type != "cpu":
        return "masked"
    weights = in_features * out_features
    if compact_capable and kernels.compiled():
        compact = (in_sparse_network and is_narrow_output_layer(in_features, out_features)) or (
            weights >= COMPACT_MIN_WEIGHTS and density <= compact_max_density(in_features, out_features, feeds_compact))
        return "compact" if compact else "masked"
    if not torch.backends.mkl.is_available():
        return "masked"
    for min_weights, max_density in auto_rule()[0]:
        if weights >= min_weights:
            return "sparse" if density <= max_density else "masked"
    return "masked"
