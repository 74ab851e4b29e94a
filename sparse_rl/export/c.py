"""The C99 target: a ``.c``/``.h`` pair computing the policy with static weight arrays, each layer as CSR or
dense loops as :data:`C_COST_NS` predicts faster, and a CSR layer whose rows all hold k weights in the
condensed layout (:func:`c_layer_layout`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sparse_rl.deploy import ExportedPolicy, Layer, ObsNormalization, get_activation
from sparse_rl.export.compaction import condensed, condensed_nbytes, constant_fan_in
from sparse_rl.export.errors import ExportError

C_COST_NS = {"dense_weight": 0.112, "dense_row": 0.35, "csr_nonzero": 0.5, "csr_row": 1.3, "csr_nonempty_row": 3.0,
             "condensed_unrolled_weight": 0.4}
"""Nanoseconds per unit of work of the C target's layer loops (``cc -O2``, x86-64), fitted to layers of
17-256 inputs and outputs at densities 0-1 timed by ``benchmarks/export.py``: a dense layer costs
``dense_weight`` per matrix entry plus ``dense_row`` per output, a CSR layer ``csr_nonzero`` per nonzero
weight, ``csr_row`` per output and ``csr_nonempty_row`` per output with at least one weight (the inner
loop's exit). A CSR row's gathered loads cost about 4.5 dense entries, and short rows pay their loop
overhead: the crossover is near density 0.2 for 256 inputs and 0.1 for 64; for 17 inputs CSR gains at most
a fraction of a microsecond below density 0.05 and is slower above.

The condensed loop (k weights per output, k a compile-time constant) is the CSR loop without the row pointers:
for k > :data:`C_UNROLLED_FAN_IN` it is costed as CSR (measured within 5 % of it, slightly faster, for k = 3-16
and 17, 64 or 256 inputs); for k ≤ :data:`C_UNROLLED_FAN_IN` gcc unrolls the inner loop completely and
vectorises over the outputs, ``condensed_unrolled_weight`` per weight (measured 0.10 µs for 256 outputs at
k = 1 and 0.17 µs at k = 2, where CSR takes 1.2-1.4 µs and the dense loop over 17 inputs 0.55 µs; a
loaded machine, gcc 12; ``benchmarks/export.py``'s crossover table times both loops on constant-fan-in
layers)."""

C_UNROLLED_FAN_IN = 2
"""The largest constant fan-in whose condensed inner loop :data:`C_COST_NS` treats as completely unrolled."""

C_LAYOUTS = ("auto", "dense", "csr", "condensed")
"""The ``layout`` argument of :func:`c_sources`."""


def c_layer_costs(layer: Layer) -> dict[str, float]:
    """Predicted ns of ``layer`` in each layout the C target may store it in (:data:`C_COST_NS`): dense always,
    CSR where it is smaller than dense, condensed where every row holds the same number k of nonzero weights
    (:func:`~sparse_rl.export.compaction.constant_fan_in`) and the condensed arrays are smaller than dense."""
    rows, cols = layer.weight.shape
    nonempty = int(np.count_nonzero((layer.weight != 0).any(axis=1)))
    csr = (C_COST_NS["csr_nonzero"] * layer.nnz + C_COST_NS["csr_row"] * rows
           + C_COST_NS["csr_nonempty_row"] * nonempty)
    costs = {"dense": C_COST_NS["dense_weight"] * rows * cols + C_COST_NS["dense_row"] * rows}
    if layer.store_as_csr():
        costs["csr"] = csr
    fan_in, condensed_bytes = constant_fan_in(layer), condensed_nbytes(layer)
    if fan_in is not None and condensed_bytes is not None and condensed_bytes < layer.weight.nbytes:
        unrolled = C_COST_NS["condensed_unrolled_weight"] * layer.nnz
        costs["condensed"] = unrolled if fan_in <= C_UNROLLED_FAN_IN else csr
    return costs


def c_layer_layout(layer: Layer) -> str:
    """How the C target computes and stores ``layer``: the layout of :func:`c_layer_costs` predicted fastest,
    condensed before CSR before dense at equal cost. The condensed arrays are CSR's less the row pointers, so a
    layer whose rows are uniform (SRigL's constant fan-in, once compaction has removed its ablated neurons) is
    condensed wherever CSR would be picked."""
    costs = c_layer_costs(layer)
    return min(("condensed", "csr", "dense"), key=lambda layout: costs.get(layout, float("inf")))


def c_layer_uses_csr(layer: Layer) -> bool:
    """Whether :data:`C_COST_NS` predicts the CSR loop over ``layer`` faster than the dense one and CSR is also
    the smaller format (:func:`c_layer_layout` then stores it condensed if its rows are uniform)."""
    costs = c_layer_costs(layer)
    return "csr" in costs and costs["csr"] < costs["dense"]


def _c_float(value: float) -> str:
    text = f"{float(value):.9g}"
    if not any(char in text for char in ".en"):
        text += "."
    return text + "f"


def _c_double(value: float) -> str:
    text = repr(float(value))
    return text if any(char in text for char in ".en") else text + "."


def _c_array(ctype: str, name: str, values: np.ndarray, fmt: Any = str) -> str:
    values = np.asarray(values).ravel()
    if values.size == 0:
        values = np.zeros(1, dtype=values.dtype)
    items = [fmt(value) for value in values.tolist()]
    lines = [", ".join(items[start:start + 8]) for start in range(0, len(items), 8)]
    return f"static const {ctype} {name}[{len(items)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


_C_INDEX_TYPES = {np.dtype(np.uint8): "uint8_t", np.dtype(np.uint16): "uint16_t", np.dtype(np.uint32): "uint32_t",
                  np.dtype(np.int64): "int64_t"}


def _c_activation(activation: str, alpha: float, value: str) -> str:
    return get_activation(activation).c(value, _c_float(alpha))


def c_sources(policy: ExportedPolicy, name: str = "predict", header_name: str = "policy.h",
              layout: str = "auto") -> tuple[str, str]:
    """The C99 source and header of the policy: ``void name(const float *obs, float *action)``,
    weights as static const arrays, no allocation (two stack buffers), only libm. ``layout`` ``"auto"``
    computes (and stores) each layer as :func:`c_layer_layout` says: condensed, CSR or a dense transposed
    matrix; ``"csr"`` and ``"dense"`` force one for every layer, ``"condensed"`` for every layer whose rows
    hold the same number of weights, the others as CSR (for measurements)."""
    if layout not in C_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; allowed: {', '.join(C_LAYOUTS)}")
    if not name.isidentifier():
        raise ExportError(f"C function name {name!r} is not an identifier")
    arrays: list[str] = []
    body: list[str] = []
    source = "obs"
    if policy.obs_normalization is not None:
        arrays, step = _c_normalization(policy.obs_normalization, policy.obs_dim)
        body.append(step)
        source = "buf_b"
    buffers = ["buf_a", "buf_b"]
    for i, layer in enumerate(policy.layers):
        target = buffers[i % 2]
        layer_arrays, step = _c_layer(i, layer, source, target, layout)
        arrays += layer_arrays
        body.append(step)
        source = target
    arrays += [_c_array("float", "action_low", policy.action_low, _c_float),
               _c_array("float", "action_range", policy.action_high - policy.action_low, _c_float)]
    body.append(f"    for (o = 0; o < {policy.action_dim}; o++) "
                f"action[o] = action_low[o] + 0.5f * ({source}[o] + 1.0f) * action_range[o];")
    width = max(policy.obs_dim, *(layer.weight.shape[0] for layer in policy.layers))
    return _c_source(policy, name, header_name, width, arrays, body), _c_header(policy, name)


def _c_header(policy: ExportedPolicy, name: str) -> str:
    """The header declaring ``name`` and the observation and action sizes."""
    guard = name.upper() + "_POLICY_H"
    obs_dim, action_dim = policy.obs_dim, policy.action_dim
    return (f"/* Generated by sparse_rl.export: a deterministic policy, obs[{obs_dim}] -> action[{action_dim}]. */\n"
            f"#ifndef {guard}\n#define {guard}\n\n"
            f"#define {name.upper()}_OBS_DIM {obs_dim}\n#define {name.upper()}_ACTION_DIM {action_dim}\n\n"
            "/* One raw observation in, the action in the env's bounds out, as\n"
            "   model.predict(obs, deterministic=True) gives it. */\n"
            f"void {name}(const float *obs, float *action);\n\n#endif\n")


def _c_source(policy: ExportedPolicy, name: str, header_name: str, width: int, arrays: list[str],
              body: list[str]) -> str:
    """The ``.c`` file: the metadata comment, the includes, the arrays and the function around ``body``."""
    metadata = json.dumps(policy.metadata, sort_keys=True).replace("*/", "* /")
    return (f"/* Generated by sparse_rl.export. {metadata} */\n"
            f'#include <math.h>\n#include <stdint.h>\n#include "{header_name}"\n\n'
            + "\n".join(arrays)
            + f"\nvoid {name}(const float *obs, float *action)\n{{\n"
            f"    float buf_a[{width}], buf_b[{width}];\n    int o;\n    int64_t k;\n\n"
            + "\n".join(body) + "\n}\n")


def _c_normalization(norm: ObsNormalization, obs_dim: int) -> tuple[list[str], str]:
    """The observation statistics' arrays and the loop that normalises and clips ``obs`` into ``buf_b``."""
    arrays = [_c_array("double", "obs_mean", norm.mean, _c_double), _c_array("double", "obs_std", norm.std, _c_double)]
    step = (f"    for (o = 0; o < {obs_dim}; o++) {{\n"
            "        double v = ((double)obs[o] - obs_mean[o]) / obs_std[o];\n"
            f"        v = v < -{_c_double(norm.clip)} ? -{_c_double(norm.clip)} : "
            f"(v > {_c_double(norm.clip)} ? {_c_double(norm.clip)} : v);\n"
            "        buf_b[o] = (float)v;\n    }")
    return arrays, step


def _c_layer(i: int, layer: Layer, source: str, target: str, layout: str) -> tuple[list[str], str]:
    """Layer ``i``'s arrays (bias first) and its loops from ``source`` into ``target``, condensed, CSR or dense."""
    bias = _c_array("float", f"l{i}_bias", layer.bias, _c_float)
    value = _c_activation(layer.activation, layer.alpha, "acc")
    if layout == "auto":
        layout = c_layer_layout(layer)
    elif layout == "condensed" and condensed_nbytes(layer) is None:
        layout = "csr"
    make = {"condensed": _c_condensed_layer, "csr": _c_csr_layer, "dense": _c_dense_layer}[layout]
    arrays, step = make(i, layer, source, target, value)
    return [bias, *arrays], step


def _c_condensed_layer(i: int, layer: Layer, source: str, target: str, value: str) -> tuple[list[str], str]:
    """A constant-fan-in layer's arrays and loop: ``data`` and ``indices`` of k entries per output, no row
    pointers, and an inner loop of the compile-time trip count k."""
    out_features, in_features = layer.weight.shape
    data, indices = condensed(layer)
    fan_in = data.shape[1]
    arrays = [_c_array("float", f"l{i}_data", data, _c_float),
              _c_array(_C_INDEX_TYPES[indices.dtype], f"l{i}_indices", indices)]
    step = _c_row_loop(i, f"{out_features} x {in_features}, {data.size} nonzero weights, condensed: {fan_in} per "
                          "output", out_features, f"for (k = 0; k < {fan_in}; k++) "
                          f"acc += l{i}_data[o * {fan_in} + k] * {source}[l{i}_indices[o * {fan_in} + k]];",
                       target, value)
    return arrays, step


def _c_csr_layer(i: int, layer: Layer, source: str, target: str, value: str) -> tuple[list[str], str]:
    """A CSR layer's arrays and loop: one accumulator per output over its row's nonzero weights."""
    out_features, in_features = layer.weight.shape
    data, indices, indptr = layer.csr()
    arrays = [_c_array("float", f"l{i}_data", data, _c_float),
              _c_array(_C_INDEX_TYPES[indices.dtype], f"l{i}_indices", indices),
              _c_array(_C_INDEX_TYPES[indptr.dtype], f"l{i}_indptr", indptr)]
    step = _c_row_loop(i, f"{out_features} x {in_features}, {len(data)} nonzero weights, CSR", out_features,
                       f"for (k = l{i}_indptr[o]; k < l{i}_indptr[o + 1]; k++) "
                       f"acc += l{i}_data[k] * {source}[l{i}_indices[k]];", target, value)
    return arrays, step


def _c_row_loop(i: int, comment: str, out_features: int, inner: str, target: str, value: str) -> str:
    """Layer ``i``'s loop over its outputs: each accumulates its bias and ``inner`` (over its nonzero weights),
    then stores the activated ``value``."""
    return (f"    /* layer {i}: {comment} */\n"
            f"    for (o = 0; o < {out_features}; o++) {{\n"
            f"        float acc = l{i}_bias[o];\n"
            f"        {inner}\n"
            f"        {target}[o] = {value};\n    }}")


def _c_dense_layer(i: int, layer: Layer, source: str, target: str, value: str) -> tuple[list[str], str]:
    """A dense layer's transposed weight array and loops: bias, one input at a time, then the activation."""
    out_features, in_features = layer.weight.shape
    arrays = [_c_array("float", f"l{i}_weight_t", layer.weight.T, _c_float)]
    step = (f"    /* layer {i}: {out_features} x {in_features}, {layer.nnz} nonzero weights, dense "
            "(stored transposed) */\n"
            f"    for (o = 0; o < {out_features}; o++) {target}[o] = l{i}_bias[o];\n"
            f"    for (k = 0; k < {in_features}; k++) {{\n"
            f"        const float x = {source}[k];\n"
            f"        const float *w = l{i}_weight_t + k * {out_features};\n"
            f"        for (o = 0; o < {out_features}; o++) {target}[o] += w[o] * x;\n    }}\n"
            f"    for (o = 0; o < {out_features}; o++) {{\n"
            f"        const float acc = {target}[o];\n        {target}[o] = {value};\n    }}")
    return arrays, step


def write_c(policy: ExportedPolicy, path: str | Path, name: str = "predict") -> list[Path]:
    """``path`` (``.c``) and the header next to it (``.h``)."""
    source_path = Path(path)
    if source_path.suffix != ".c":
        source_path = source_path.with_name(source_path.name + ".c")
    header_path = source_path.with_suffix(".h")
    code, header = c_sources(policy, name, header_path.name)
    source_path.write_text(code)
    header_path.write_text(header)
    return [source_path, header_path]
