"""Export the actor of a SAC or TD3 model as a small deterministic policy: ONNX, numpy (npz) or C99.

::

    python -m sparse_rl.export runs/HalfCheetah-v4/sac-rigl-d0.1-s0 --format onnx --out actor.onnx
    python -m sparse_rl.export model.zip --format npz --out actor.npz --vecnormalize vecnormalize.pkl
    python -m sparse_rl.export model.zip --format c --out actor.c      # writes actor.c and actor.h

The exported function maps a raw observation to ``model.predict(obs, deterministic=True)``'s
action: optional ``VecNormalize`` observation statistics, the actor's MLP with its effective
(masked) weights, SAC's tanh squash or TD3's final tanh, and SB3's rescaling from [-1, 1] to the
action bounds. Before export the network is compacted (:func:`compact`): hidden units without an
incoming nonzero weight output the constant ``act(bias)``, which is folded into the next layer's
bias; units without an outgoing nonzero weight are removed. Weights are stored as compressed sparse
rows where that is smaller than dense. How each target *computes* a layer is decided from timings
measured by ``benchmarks/export.py`` (see ``docs/export.md``): ONNX Runtime and numpy multiply the
dense matrices, C runs CSR loops where :data:`C_COST_NS` predicts them faster.
"""

from __future__ import annotations

import argparse
import json
import pickle
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sparse_rl.deploy import Layer, ObsNormalization, SparsePolicy, activate

FORMATS = ("onnx", "npz", "c")
SUPPORTED = ("supported: SAC or TD3 models (SparseSACPolicy, SparseTD3Policy or MlpPolicy) with a continuous Box "
             "action space and a flat Box observation space, given as a model.zip or a sparse_rl.train run directory")

C_COST_NS = {"dense_weight": 0.112, "dense_row": 0.35, "csr_nonzero": 0.5, "csr_row": 1.3, "csr_nonempty_row": 3.0}
"""Nanoseconds per unit of work of the C target's two layer loops (``cc -O2``, x86-64), fitted to layers of
17-256 inputs and outputs at densities 0-1 timed by ``benchmarks/export.py``: a dense layer costs
``dense_weight`` per matrix entry plus ``dense_row`` per output, a CSR layer ``csr_nonzero`` per nonzero
weight, ``csr_row`` per output and ``csr_nonempty_row`` per output with at least one weight (the inner
loop's exit). A CSR row's gathered loads cost about 4.5 dense entries, and short rows pay their loop
overhead: the crossover is near density 0.2 for 256 inputs and 0.1 for 64; for 17 inputs CSR gains at most
a fraction of a microsecond below density 0.05 and is slower above."""

ONNX_OPSET = 17


class ExportError(Exception):
    """A model or file that cannot be exported; its message is one line."""


# ---------------------------------------------------------------------------------------------
# Reading SB3 models


def _zip_data(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError):
        raise ExportError(f"{path} is not a model: {SUPPORTED}") from None


def _algorithm_name(policy_class: type, data: dict[str, Any]) -> str:
    """The SB3 algorithm that saved a model, from its policy class (and data for PPO/A2C)."""
    from stable_baselines3.sac.policies import SACPolicy
    from stable_baselines3.td3.policies import TD3Policy

    if issubclass(policy_class, SACPolicy):
        return "SAC"
    if issubclass(policy_class, TD3Policy):
        return "TD3"
    parts = policy_class.__module__.split(".")
    if parts[0] == "stable_baselines3" and parts[1] not in ("common",):
        return parts[1].upper()
    if "clip_range" in data:
        return "PPO"
    return "A2C" if "normalize_advantage" in data else f"a {policy_class.__name__}"


def model_zip_path(path: str | Path) -> Path:
    """The ``model.zip`` of ``path``: the path itself or the one inside a ``sparse_rl.train`` run directory."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model.zip").is_file():
            raise ExportError(f"{path} is a directory without model.zip; {SUPPORTED}")
        return path / "model.zip"
    if not path.exists():
        raise ExportError(f"{path} does not exist; {SUPPORTED}")
    return path


def load_model(path: str | Path) -> Any:
    """The SAC or TD3 model saved at ``path`` (a ``model.zip`` or a ``sparse_rl.train`` run directory),
    loaded on the CPU; :class:`ExportError` for anything else."""
    from gymnasium import spaces
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.preprocessing import is_image_space
    from stable_baselines3.common.save_util import json_to_data

    zip_path = model_zip_path(path)
    data = _zip_data(zip_path)
    keys = ("policy_class", "observation_space", "action_space")
    if any(key not in data for key in keys):
        raise ExportError(f"{zip_path} is not a model: {SUPPORTED}")
    header = json_to_data(json.dumps({key: data[key] for key in keys}))
    policy_class, obs_space, action_space = (header[key] for key in keys)
    if not isinstance(policy_class, type):
        raise ExportError(f"{zip_path}: cannot read its policy class; {SUPPORTED}")
    algo = _algorithm_name(policy_class, data)
    if algo not in ("SAC", "TD3"):
        raise ExportError(f"{zip_path} is a {algo} model ({policy_class.__name__}, {action_space} action space); "
                          f"{SUPPORTED}")
    if not isinstance(action_space, spaces.Box):
        raise ExportError(f"{zip_path} has a discrete action space {action_space}; {SUPPORTED}")
    if not isinstance(obs_space, spaces.Box) or is_image_space(obs_space, check_channels=False):
        kind = "an image" if isinstance(obs_space, spaces.Box) else "a non-Box"
        raise ExportError(f"{zip_path} has {kind} observation space {obs_space}; {SUPPORTED}")
    configured = _run_config_algo(Path(path))
    if configured is not None and configured.upper() != algo:
        raise ExportError(f"{path}: config.yaml says algo {configured!r} but model.zip holds a {algo} model")
    return (SAC if algo == "SAC" else TD3).load(zip_path, device="cpu")


def _run_config_algo(path: Path) -> str | None:
    """The ``algo`` of a run directory's ``config.yaml`` (None for a model.zip or a directory without one)."""
    import yaml

    if not (path.is_dir() and (path / "config.yaml").is_file()):
        return None
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except yaml.YAMLError as error:
        raise ExportError(f"{path / 'config.yaml'} is not valid YAML ({str(error).splitlines()[0]})") from None
    algo = config.get("algo") if isinstance(config, dict) else None
    return str(algo) if algo is not None else None


def load_vecnormalize(path: str | Path, obs_shape: tuple[int, ...]) -> ObsNormalization | None:
    """The observation transform of an SB3 ``VecNormalize`` saved with ``.save(path)`` (None if it
    does not normalise observations)."""
    from stable_baselines3.common.running_mean_std import RunningMeanStd
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        with open(path, "rb") as file:
            vecnormalize = pickle.load(file)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ExportError(f"cannot read {path} as a saved VecNormalize ({error})") from None
    if not isinstance(vecnormalize, VecNormalize):
        raise ExportError(f"{path} holds a {type(vecnormalize).__name__}, not a VecNormalize")
    if not vecnormalize.norm_obs:
        return None
    rms = vecnormalize.obs_rms
    if not isinstance(rms, RunningMeanStd) or tuple(rms.mean.shape) != tuple(obs_shape):
        raise ExportError(f"{path}: its observation statistics do not match the model's observation shape {obs_shape}")
    return ObsNormalization(rms.mean, np.sqrt(rms.var + vecnormalize.epsilon), vecnormalize.clip_obs)


# ---------------------------------------------------------------------------------------------
# The actor as a list of layers


def effective_weight(linear: Any) -> np.ndarray:
    """The weight a linear layer computes with: ``weight ⊙ mask`` for masked layers (``SparseLinear``,
    ``HaloLinear``, ``ThresholdLinear``'s ``|W| > t``), the weight itself for ``nn.Linear``."""
    import torch

    with torch.no_grad():
        weight = linear.weight.detach()
        mask = getattr(linear, "mask", None)
        if mask is not None:
            weight = weight * mask.to(weight.dtype)
        return weight.cpu().numpy().astype(np.float32)


def _activation(module: Any) -> tuple[str, float] | None:
    from torch import nn

    if isinstance(module, nn.ReLU):
        return "relu", 0.0
    if isinstance(module, nn.Tanh):
        return "tanh", 0.0
    if isinstance(module, nn.ELU):
        return "elu", float(module.alpha)
    if isinstance(module, nn.LeakyReLU):
        return "leaky_relu", float(module.negative_slope)
    if isinstance(module, nn.Hardtanh) and module.min_val == -module.max_val:
        return "hardtanh", float(module.max_val)
    if isinstance(module, nn.Identity):
        return "identity", 0.0
    return None


def mlp_layers(modules: list[Any]) -> list[Layer]:
    """``Linear``/activation modules in order as :class:`Layer` objects."""
    from torch import nn

    layers: list[Layer] = []
    for module in modules:
        activation = _activation(module)
        if isinstance(module, nn.Linear):
            bias = module.bias.detach().cpu().numpy() if module.bias is not None else np.zeros(module.out_features)
            layers.append(Layer(effective_weight(module), bias))
        elif activation is not None and layers and layers[-1].activation == "identity":
            layers[-1].activation, layers[-1].alpha = activation
        elif activation is None or activation[0] != "identity":
            raise ExportError(f"cannot export a {type(module).__name__} in the actor; supported: Linear layers "
                              "with ReLU, Tanh, ELU, LeakyReLU or symmetric Hardtanh activations")
    return layers


def actor_layers(model: Any) -> list[Layer]:
    """The actor of a SAC or TD3 ``model`` as layers whose last activation is the tanh squash."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.torch_layers import FlattenExtractor
    from torch import nn

    actor = model.policy.actor
    if not isinstance(actor.features_extractor, FlattenExtractor):
        raise ExportError(f"cannot export an actor with a {type(actor.features_extractor).__name__} features "
                          f"extractor; {SUPPORTED}")
    if isinstance(model, SAC):
        # with gSDE, mu is Sequential(Linear, Hardtanh(-clip_mean, clip_mean)) and the squash is tanh of that
        layers = mlp_layers([*actor.latent_pi, *(actor.mu if isinstance(actor.mu, nn.Sequential) else [actor.mu])])
        squash = {"identity": "tanh", "hardtanh": "clipped_tanh"}.get(layers[-1].activation)
        if squash is None:
            raise ExportError(f"the SAC actor's mu layer ends in {layers[-1].activation}; cannot reproduce its squash")
        layers[-1].activation = squash
    else:
        layers = mlp_layers(list(actor.mu))
        if layers[-1].activation != "tanh":
            raise ExportError("the TD3 actor does not end in tanh; cannot reproduce its output")
    return layers


def compact(layers: list[Layer]) -> list[Layer]:
    """An equivalent network without dead or orphan hidden units.

    Forward, layer by layer: a hidden unit whose weight row is all zero outputs the constant
    ``act(bias)``; that constant times its weight column is added to the next layer's bias and the
    unit is removed (which can leave units of the next layer without inputs, removed in turn).
    Backward: a hidden unit whose weight column in the next layer is all zero is removed. Input and
    output units are kept. A hidden layer left empty keeps one unit with zero weights (exact, and no
    target needs zero-sized arrays).
    """
    layers = [replace(layer, weight=layer.weight.copy(), bias=layer.bias.copy()) for layer in layers]

    def remove(i: int, units: np.ndarray) -> None:
        keep = ~units
        if not keep.any():
            keep[0] = True
            layers[i].weight[0] = 0
            layers[i].bias[0] = 0
            layers[i + 1].weight[:, 0] = 0
        layers[i].weight, layers[i].bias = layers[i].weight[keep], layers[i].bias[keep]
        layers[i + 1].weight = np.ascontiguousarray(layers[i + 1].weight[:, keep])

    for i in range(len(layers) - 1):
        dead = ~(layers[i].weight != 0).any(axis=1)
        if dead.any():
            constant = activate(layers[i].bias[dead], layers[i].activation, layers[i].alpha).astype(np.float64)
            folded = layers[i + 1].bias + layers[i + 1].weight[:, dead].astype(np.float64) @ constant
            layers[i + 1].bias = folded.astype(np.float32)
            remove(i, dead)
    for i in range(len(layers) - 2, -1, -1):
        orphan = ~(layers[i + 1].weight != 0).any(axis=0)
        if orphan.any():
            remove(i, orphan)
    return layers


def export_policy(model: Any, vecnormalize: str | Path | None = None, source: str = "") -> SparsePolicy:
    """The compacted deterministic policy of a loaded SAC or TD3 ``model``."""
    obs_space, action_space = model.observation_space, model.action_space
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ExportError(f"the action space {action_space} has infinite bounds; SB3 cannot rescale to them")
    original = actor_layers(model)
    layers = compact(original)
    normalization = load_vecnormalize(vecnormalize, obs_space.shape) if vecnormalize is not None else None
    metadata = {"algo": type(model).__name__, "source": source,
                "actor_weights": int(sum(layer.weight.size for layer in original)),
                "nonzero_weights": int(sum(layer.nnz for layer in layers)),
                "widths_before": [layer.weight.shape[0] for layer in original],
                "widths_after": [layer.weight.shape[0] for layer in layers]}
    return SparsePolicy(obs_space.shape, layers, action_space.low, action_space.high, normalization, metadata)


# ---------------------------------------------------------------------------------------------
# Targets


def write_npz(policy: SparsePolicy, path: str | Path) -> list[Path]:
    """The numpy-runtime file (:meth:`sparse_rl.deploy.SparsePolicy.load` reads it)."""
    policy.save(path)
    return [Path(path)]


def onnx_model(policy: SparsePolicy) -> Any:
    """The policy as an ONNX model: input ``obs`` (batch, *obs_shape) float32, output ``action``
    (batch, action_dim) float32.

    A weight stored as CSR (where smaller) is rebuilt into its dense matrix by a subgraph of
    constant inputs only (:func:`_onnx_csr_weight`), which ONNX Runtime's constant folding evaluates
    once when it loads the model; each layer then runs as one dense ``Gemm``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    initializers: list[Any] = []

    def const(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    x = node("Flatten", ["obs"], "obs_flat", axis=1)
    if policy.obs_normalization is not None:
        norm = policy.obs_normalization
        x = node("Cast", [x], "obs_f64", to=TensorProto.DOUBLE)
        x = node("Sub", [x, const("obs_mean", norm.mean)], "obs_centred")
        x = node("Div", [x, const("obs_std", norm.std)], "obs_scaled")
        x = node("Clip", [x, const("obs_clip_low", np.array(-norm.clip)), const("obs_clip_high", np.array(norm.clip))],
                 "obs_clipped")
        x = node("Cast", [x], "obs_normalized", to=TensorProto.FLOAT)
    for i, layer in enumerate(policy.layers):
        if layer.store_as_csr():
            weight = _onnx_csr_weight(layer, f"l{i}_", const, node)
        else:
            weight = const(f"l{i}_weight", layer.weight)
        x = node("Gemm", [x, weight, const(f"l{i}_bias", layer.bias)], f"l{i}_linear", transB=1)
        if layer.activation == "relu":
            x = node("Relu", [x], f"l{i}_relu")
        elif layer.activation == "tanh":
            x = node("Tanh", [x], f"l{i}_tanh")
        elif layer.activation == "elu":
            x = node("Elu", [x], f"l{i}_elu", alpha=layer.alpha)
        elif layer.activation == "leaky_relu":
            x = node("LeakyRelu", [x], f"l{i}_leaky_relu", alpha=layer.alpha)
        elif layer.activation in ("hardtanh", "clipped_tanh"):
            bounds = [const(f"l{i}_clip_low", np.array(-layer.alpha, np.float32)),
                      const(f"l{i}_clip_high", np.array(layer.alpha, np.float32))]
            x = node("Clip", [x, *bounds], f"l{i}_clip")
            if layer.activation == "clipped_tanh":
                x = node("Tanh", [x], f"l{i}_tanh")
    # SB3's unscale_action: low + (0.5 * (a + 1.0) * (high - low)), in this order, in float32.
    x = node("Add", [x, const("one", np.array(1.0, np.float32))], "action_plus_one")
    x = node("Mul", [const("half", np.array(0.5, np.float32)), x], "action_half")
    x = node("Mul", [x, const("action_range", policy.action_high - policy.action_low)], "action_scaled")
    node("Add", [const("action_low", policy.action_low), x], "action")
    graph = helper.make_graph(
        nodes, "sparse_rl_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", *policy.obs_shape])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", policy.action_dim])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="sparse_rl.export")
    model.ir_version = 8
    helper.set_model_props(model, {"sparse_rl": json.dumps(policy.metadata, sort_keys=True)})
    onnx.checker.check_model(model, full_check=True)
    return model


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


def write_onnx(policy: SparsePolicy, path: str | Path) -> list[Path]:
    """The ONNX file (run it with ``onnxruntime.InferenceSession(path)``)."""
    import onnx

    onnx.save(onnx_model(policy), str(path))
    return [Path(path)]


def c_layer_uses_csr(layer: Layer) -> bool:
    """Whether the C target computes (and stores) ``layer`` as CSR: where :data:`C_COST_NS` predicts the
    CSR loop faster than the dense one and CSR is also the smaller format."""
    rows, cols = layer.weight.shape
    nonempty = int(np.count_nonzero((layer.weight != 0).any(axis=1)))
    dense = C_COST_NS["dense_weight"] * rows * cols + C_COST_NS["dense_row"] * rows
    csr = (C_COST_NS["csr_nonzero"] * layer.nnz + C_COST_NS["csr_row"] * rows
           + C_COST_NS["csr_nonempty_row"] * nonempty)
    return csr < dense and layer.store_as_csr()


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
    if activation == "relu":
        return f"({value} > 0.0f ? {value} : 0.0f)"
    if activation == "tanh":
        return f"tanhf({value})"
    if activation == "elu":
        return f"({value} > 0.0f ? {value} : {_c_float(alpha)} * expm1f({value}))"
    if activation == "leaky_relu":
        return f"({value} >= 0.0f ? {value} : {_c_float(alpha)} * {value})"
    if activation in ("hardtanh", "clipped_tanh"):
        bound = _c_float(alpha)
        clipped = f"({value} < -{bound} ? -{bound} : ({value} > {bound} ? {bound} : {value}))"
        return clipped if activation == "hardtanh" else f"tanhf{clipped}"
    return value


def c_sources(policy: SparsePolicy, name: str = "predict", header_name: str = "policy.h",
              layout: str = "auto") -> tuple[str, str]:
    """The C99 source and header of the policy: ``void name(const float *obs, float *action)``,
    weights as static const arrays, no allocation (two stack buffers), only libm. ``layout`` ``"auto"``
    computes (and stores) each layer as CSR where :func:`c_layer_uses_csr` says so and as a dense
    transposed matrix otherwise; ``"csr"`` and ``"dense"`` force one (for measurements)."""
    if layout not in ("auto", "csr", "dense"):
        raise ValueError(f"unknown layout {layout!r}; allowed: auto, csr, dense")
    if not name.isidentifier():
        raise ExportError(f"C function name {name!r} is not an identifier")
    guard = name.upper() + "_POLICY_H"
    obs_dim, action_dim = policy.obs_dim, policy.action_dim
    header = (f"/* Generated by sparse_rl.export: a deterministic policy, obs[{obs_dim}] -> action[{action_dim}]. */\n"
              f"#ifndef {guard}\n#define {guard}\n\n"
              f"#define {name.upper()}_OBS_DIM {obs_dim}\n#define {name.upper()}_ACTION_DIM {action_dim}\n\n"
              "/* One raw observation in, the action in the env's bounds out, as\n"
              "   model.predict(obs, deterministic=True) gives it. */\n"
              f"void {name}(const float *obs, float *action);\n\n#endif\n")
    arrays: list[str] = []
    body: list[str] = []
    width = max(obs_dim, *(layer.weight.shape[0] for layer in policy.layers))
    source = "obs"
    if policy.obs_normalization is not None:
        norm = policy.obs_normalization
        arrays += [_c_array("double", "obs_mean", norm.mean, _c_double),
                   _c_array("double", "obs_std", norm.std, _c_double)]
        body.append(f"    for (o = 0; o < {obs_dim}; o++) {{\n"
                    "        double v = ((double)obs[o] - obs_mean[o]) / obs_std[o];\n"
                    f"        v = v < -{_c_double(norm.clip)} ? -{_c_double(norm.clip)} : "
                    f"(v > {_c_double(norm.clip)} ? {_c_double(norm.clip)} : v);\n"
                    "        buf_b[o] = (float)v;\n    }")
        source = "buf_b"
    buffers = ["buf_a", "buf_b"]
    for i, layer in enumerate(policy.layers):
        out_features, in_features = layer.weight.shape
        target = buffers[i % 2]
        arrays.append(_c_array("float", f"l{i}_bias", layer.bias, _c_float))
        value = _c_activation(layer.activation, layer.alpha, "acc")
        if layout == "csr" or (layout == "auto" and c_layer_uses_csr(layer)):
            data, indices, indptr = layer.csr()
            arrays += [_c_array("float", f"l{i}_data", data, _c_float),
                       _c_array(_C_INDEX_TYPES[indices.dtype], f"l{i}_indices", indices),
                       _c_array(_C_INDEX_TYPES[indptr.dtype], f"l{i}_indptr", indptr)]
            body.append(f"    /* layer {i}: {out_features} x {in_features}, {len(data)} nonzero weights, CSR */\n"
                        f"    for (o = 0; o < {out_features}; o++) {{\n"
                        f"        float acc = l{i}_bias[o];\n"
                        f"        for (k = l{i}_indptr[o]; k < l{i}_indptr[o + 1]; k++) "
                        f"acc += l{i}_data[k] * {source}[l{i}_indices[k]];\n"
                        f"        {target}[o] = {value};\n    }}")
        else:
            arrays.append(_c_array("float", f"l{i}_weight_t", layer.weight.T, _c_float))
            body.append(f"    /* layer {i}: {out_features} x {in_features}, {layer.nnz} nonzero weights, dense "
                        "(stored transposed) */\n"
                        f"    for (o = 0; o < {out_features}; o++) {target}[o] = l{i}_bias[o];\n"
                        f"    for (k = 0; k < {in_features}; k++) {{\n"
                        f"        const float x = {source}[k];\n"
                        f"        const float *w = l{i}_weight_t + k * {out_features};\n"
                        f"        for (o = 0; o < {out_features}; o++) {target}[o] += w[o] * x;\n    }}\n"
                        f"    for (o = 0; o < {out_features}; o++) {{\n"
                        f"        const float acc = {target}[o];\n        {target}[o] = {value};\n    }}")
        source = target
    arrays += [_c_array("float", "action_low", policy.action_low, _c_float),
               _c_array("float", "action_range", policy.action_high - policy.action_low, _c_float)]
    body.append(f"    for (o = 0; o < {action_dim}; o++) "
                f"action[o] = action_low[o] + 0.5f * ({source}[o] + 1.0f) * action_range[o];")
    metadata = json.dumps(policy.metadata, sort_keys=True).replace("*/", "* /")
    code = (f"/* Generated by sparse_rl.export. {metadata} */\n"
            f'#include <math.h>\n#include <stdint.h>\n#include "{header_name}"\n\n'
            + "\n".join(arrays)
            + f"\nvoid {name}(const float *obs, float *action)\n{{\n"
            f"    float buf_a[{width}], buf_b[{width}];\n    int o;\n    int64_t k;\n\n"
            + "\n".join(body) + "\n}\n")
    return code, header


def write_c(policy: SparsePolicy, path: str | Path, name: str = "predict") -> list[Path]:
    """``path`` (``.c``) and the header next to it (``.h``)."""
    source_path = Path(path)
    if source_path.suffix != ".c":
        source_path = source_path.with_name(source_path.name + ".c")
    header_path = source_path.with_suffix(".h")
    code, header = c_sources(policy, name, header_path.name)
    source_path.write_text(code)
    header_path.write_text(header)
    return [source_path, header_path]


def export(model_path: str | Path, fmt: str, out: str | Path, vecnormalize: str | Path | None = None,
           c_name: str = "predict") -> list[Path]:
    """Export the actor of the model at ``model_path`` to ``out`` in format ``fmt``; the files written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; supported: {', '.join(FORMATS)}")
    model = load_model(model_path)
    policy = export_policy(model, vecnormalize, source=str(model_path))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        return write_onnx(policy, out)
    if fmt == "npz":
        return write_npz(policy, out)
    return write_c(policy, out, c_name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sparse_rl.export", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a sparse_rl.train run directory or an SB3 SAC/TD3 model.zip")
    parser.add_argument("--format", choices=FORMATS, required=True, help="onnx, npz (numpy runtime) or c (C99 .c/.h)")
    parser.add_argument("--out", required=True, help="output file (for c: the .c file; the .h goes next to it)")
    parser.add_argument("--vecnormalize", help="a saved SB3 VecNormalize whose observation statistics to bake in")
    parser.add_argument("--c-name", default="predict", help="name of the C function (default: predict)")
    args = parser.parse_args(argv)
    try:
        paths = export(args.model, args.format, args.out, args.vecnormalize, args.c_name)
    except (ExportError, OSError) as error:
        raise SystemExit(f"sparse_rl.export: error: {error}") from None
    for path in paths:
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
