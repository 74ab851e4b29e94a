"""The ONNX target: the compacted policy as an ONNX graph (dense ``Gemm`` per layer, CSR weights rebuilt by
constant folding at load)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sparse_rl.deploy import ExportedPolicy, Layer, ObsNormalization, get_activation

ONNX_OPSET = 17


def onnx_model(policy: ExportedPolicy) -> Any:
    """The policy as an ONNX model: input ``obs`` (batch, *obs_shape) float32, output ``action``
    (batch, action_dim) float32.

    A weight stored as CSR (where smaller) is rebuilt into its dense matrix by a subgraph of
    constant inputs only (:func:`_onnx_csr_weight`), which ONNX Runtime's constant folding evaluates
    once when it loads the model; each layer then runs as one dense ``Gemm``.
    """
    import onnx
    from onnx import TensorProto, helper

    graph = _Graph()
    x = graph.node("Flatten", ["obs"], "obs_flat", axis=1)
    if policy.obs_normalization is not None:
        x = _onnx_normalization(graph, policy.obs_normalization, x)
    for i, layer in enumerate(policy.layers):
        if layer.store_as_csr():
            weight = _onnx_csr_weight(layer, f"l{i}_", graph.const, graph.node)
        else:
            weight = graph.const(f"l{i}_weight", layer.weight)
        x = graph.node("Gemm", [x, weight, graph.const(f"l{i}_bias", layer.bias)], f"l{i}_linear", transB=1)
        x = _onnx_activation(graph, i, layer, x)
    _onnx_unscale_action(graph, policy, x)
    model = helper.make_model(
        helper.make_graph(graph.nodes, "sparse_rl_policy",
                          [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", *policy.obs_shape])],
                          [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", policy.action_dim])],
                          graph.initializers),
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="sparse_rl.export")
    model.ir_version = 8
    helper.set_model_props(model, {"sparse_rl": json.dumps(policy.metadata, sort_keys=True)})
    onnx.checker.check_model(model, full_check=True)
    return model


class _Graph:
    """The nodes and constant initializers of an ONNX graph under construction, each named by its output."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, name: str, array: np.ndarray) -> str:
        """Add ``array`` as the initializer ``name``; return its name."""
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        """Add an ``op`` node named by its one ``output``; return the output's name."""
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def _onnx_normalization(graph: _Graph, norm: ObsNormalization, x: str) -> str:
    """SB3's ``VecNormalize`` observation transform of ``x``, in float64 as SB3 computes it."""
    from onnx import TensorProto

    x = graph.node("Cast", [x], "obs_f64", to=TensorProto.DOUBLE)
    x = graph.node("Sub", [x, graph.const("obs_mean", norm.mean)], "obs_centred")
    x = graph.node("Div", [x, graph.const("obs_std", norm.std)], "obs_scaled")
    x = graph.node("Clip", [x, graph.const("obs_clip_low", np.array(-norm.clip)),
                            graph.const("obs_clip_high", np.array(norm.clip))], "obs_clipped")
    return graph.node("Cast", [x], "obs_normalized", to=TensorProto.FLOAT)


ONNX_NODE_NAMES = {"Relu": "relu", "Tanh": "tanh", "Elu": "elu", "LeakyRelu": "leaky_relu", "Clip": "clip"}


def _onnx_activation(graph: _Graph, i: int, layer: Layer, x: str) -> str:
    """Layer ``i``'s activation applied to ``x`` (none for ``identity``)."""
    for op in get_activation(layer.activation).onnx:
        name = f"l{i}_{ONNX_NODE_NAMES[op]}"
        if op == "Clip":
            bounds = [graph.const(f"l{i}_clip_low", np.array(-layer.alpha, np.float32)),
                      graph.const(f"l{i}_clip_high", np.array(layer.alpha, np.float32))]
            x = graph.node(op, [x, *bounds], name)
        else:
            x = graph.node(op, [x], name, **({"alpha": layer.alpha} if op in ("Elu", "LeakyRelu") else {}))
    return x


def _onnx_unscale_action(graph: _Graph, policy: ExportedPolicy, x: str) -> None:
    """The output ``action``: SB3's unscale_action, low + (0.5 * (a + 1.0) * (high - low)), in this order, in
    float32."""
    x = graph.node("Add", [x, graph.const("one", np.array(1.0, np.float32))], "action_plus_one")
    x = graph.node("Mul", [graph.const("half", np.array(0.5, np.float32)), x], "action_half")
    x = graph.node("Mul", [x, graph.const("action_range", policy.action_high - policy.action_low)], "action_scaled")
    graph.node("Add", [graph.const("action_low", policy.action_low), x], "action")


def _onnx_csr_weight(layer: Layer, prefix: str, const: Any, node: Any) -> str:
    """Nodes that rebuild ``layer``'s dense weight from its CSR arrays, all from constants (so folded at load):
    row ids are the cumulative sum of ones scattered at the row boundaries ``indptr[1:-1]`` (empty rows put
    several at one position), then ``ScatterND`` puts the values at ``row * in_features + column``."""
    from onnx import TensorProto, numpy_helper

    data, indices, indptr = layer.csr()
    out_features, in_features = layer.weight.shape
    nnz = len(data)

    def filled(name: str, shape: list[int], value: np.ndarray) -> str:
        return node("ConstantOfShape", [const(prefix + name + "_shape", np.array(shape, np.int64))], prefix + name,
                    value=numpy_helper.from_array(value))

    if nnz == 0:
        return filled("weight", [out_features, in_features], np.zeros(1, np.float32))
    if out_features == 1:
        rows = filled("rows", [nnz], np.zeros(1, np.int64))
    else:
        boundaries = node("Cast", [const(prefix + "row_boundaries", indptr[1:-1])], prefix + "row_boundaries_i64",
                          to=TensorProto.INT64)
        marks = node("ScatterElements", [filled("zeros", [nnz + 1], np.zeros(1, np.int64)), boundaries,
                                         filled("ones", [out_features - 1], np.ones(1, np.int64))],
                     prefix + "row_marks", axis=0, reduction="add")
        rows = node("CumSum", [marks, const(prefix + "axis0", np.array(0))], prefix + "row_ids_all")
        rows = node("Slice", [rows, const(prefix + "start", np.array([0])), const(prefix + "nnz", np.array([nnz]))],
                    prefix + "rows")
    cols = node("Cast", [const(prefix + "cols", indices)], prefix + "cols_i64", to=TensorProto.INT64)
    flat = node("Mul", [rows, const(prefix + "in", np.array(in_features))], prefix + "row_offsets")
    flat = node("Add", [flat, cols], prefix + "flat")
    flat = node("Unsqueeze", [flat, const(prefix + "axis1", np.array([1]))], prefix + "flat_col")
    weight = node("ScatterND", [filled("weight_zeros", [layer.weight.size], np.zeros(1, np.float32)), flat,
                                const(prefix + "data", data)], prefix + "weight_flat")
    return node("Reshape", [weight, const(prefix + "shape", np.array(layer.weight.shape))], prefix + "weight")


def write_onnx(policy: ExportedPolicy, path: str | Path) -> list[Path]:
    """The ONNX file (run it with ``onnxruntime.InferenceSession(path)``)."""
    import onnx

    onnx.save(onnx_model(policy), str(path))
    return [Path(path)]
