"""A numpy-only runtime for actors exported by ``python -m sparse_rl.export MODEL --format npz``.

This module imports nothing but numpy and the standard library (not torch, not
Stable-Baselines3), so a service can run an exported policy without them; it can also be copied
alone next to the ``.npz`` file::

    from sparse_rl.deploy import ExportedPolicy

    policy = ExportedPolicy.load("actor.npz")
    action = policy.predict(obs)        # one observation or a batch, like model.predict(obs, deterministic=True)[0]

The ``.npz`` holds a compacted MLP (see :mod:`sparse_rl.export`): per layer a bias, an activation
and the weight, stored as compressed sparse rows (CSR) where that is smaller than dense; the
observation normalisation of a ``VecNormalize`` if one was baked in; and the action bounds.
How a layer is *computed* is decided at load time, independently of how it is stored: CSR
at or below :data:`CSR_MAX_DENSITY`, dense above (see ``results/export.md`` for the measurement).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "sparse_rl.deploy/1"
"""The ``format`` entry of every exported ``.npz``."""

# The one table of activations an exported actor may have, each target's implementation side by side (the torch
# module export reads it from, numpy here, C99 and ONNX). It lives in this file because this file runs alone, with
# numpy only. ``alpha`` is ELU's alpha, LeakyReLU's negative slope, or the bound a of ``hardtanh`` (clip to [-a, a])
# and ``clipped_tanh`` (tanh of that: SAC's gSDE squash of its clipped mean).


def _clip(x: str, bound: str) -> str:
    return f"({x} < -{bound} ? -{bound} : ({x} > {bound} ? {bound} : {x}))"


@dataclass(frozen=True)
class Activation:
    """One activation.

    :param name: its name in an exported file.
    :param numpy: ``(x, alpha) -> y``, float32 in and out.
    :param c: ``(x, alpha) -> expression``, both C expressions (alpha a float literal).
    :param onnx: the ONNX operators applied in order; ``Clip`` clips to [-alpha, alpha], ``Elu`` and
        ``LeakyRelu`` take ``alpha`` as their attribute.
    :param torch_module: the ``torch.nn`` class export reads it from (none: only composed by export).
    :param torch_alpha: that module's attribute holding alpha.
    """

    name: str
    numpy: Callable[[np.ndarray, np.float32], np.ndarray]
    c: Callable[[str, str], str]
    onnx: tuple[str, ...]
    torch_module: str | None = None
    torch_alpha: str | None = None


ACTIVATIONS: dict[str, Activation] = {activation.name: activation for activation in (
    Activation("identity", lambda x, a: x, lambda x, a: x, (), "Identity"),
    Activation("relu", lambda x, a: np.maximum(x, np.float32(0)), lambda x, a: f"({x} > 0.0f ? {x} : 0.0f)",
               ("Relu",), "ReLU"),
    Activation("tanh", lambda x, a: np.tanh(x), lambda x, a: f"tanhf({x})", ("Tanh",), "Tanh"),
    Activation("elu", lambda x, a: np.where(x > 0, x, a * np.expm1(x)).astype(np.float32),
               lambda x, a: f"({x} > 0.0f ? {x} : {a} * expm1f({x}))", ("Elu",), "ELU", "alpha"),
    Activation("leaky_relu", lambda x, a: np.where(x >= 0, x, a * x).astype(np.float32),
               lambda x, a: f"({x} >= 0.0f ? {x} : {a} * {x})", ("LeakyRelu",), "LeakyReLU", "negative_slope"),
    Activation("hardtanh", lambda x, a: np.clip(x, -a, a), _clip, ("Clip",), "Hardtanh", "max_val"),
    Activation("clipped_tanh", lambda x, a: np.tanh(np.clip(x, -a, a)), lambda x, a: f"tanhf{_clip(x, a)}",
               ("Clip", "Tanh")),
)}


def get_activation(name: str) -> Activation:
    """The activation called ``name``; ``ValueError`` naming the allowed ones otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


CSR_MAX_DENSITY = 0.0
"""Layers at or below this density are computed as CSR by the numpy runtime, denser ones as one dense
matrix product (CSR remains the storage format where it is smaller). Measured for one observation on
a 256x256 layer (``benchmarks/export.py``, ``results/export.md``): numpy's gather-and-reduce CSR
product is slower than a BLAS matrix-vector product on the whole matrix at every density down to
0.01, so by default the numpy runtime multiplies densely; ``ExportedPolicy(csr_max_density=...)``
changes it."""


def activate(x: np.ndarray, activation: str, alpha: float = 0.0) -> np.ndarray:
    """``activation`` (:data:`ACTIVATIONS`) applied to ``x`` (float32 in, float32 out)."""
    return get_activation(activation).numpy(x, np.float32(alpha))


@dataclass
class Layer:
    """One affine layer ``activation(x @ weight.T + bias)`` with a dense float32 ``weight`` (out, in)."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str = "identity"
    alpha: float = 0.0

    def __post_init__(self) -> None:
        self.weight = np.ascontiguousarray(self.weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(self.bias, dtype=np.float32)
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"weight {self.weight.shape} and bias {self.bias.shape} do not make a layer")
        get_activation(self.activation)

    @property
    def nnz(self) -> int:
        """Number of nonzero weights."""
        return int(np.count_nonzero(self.weight))

    @property
    def density(self) -> float:
        """Fraction of the weight matrix that is nonzero."""
        return self.nnz / max(1, self.weight.size)

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(data, indices, indptr)`` of the weight in compressed sparse rows, with the smallest
        unsigned index types that hold the column indices and the row pointers."""
        rows, cols = np.nonzero(self.weight)
        indptr = np.zeros(self.weight.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=self.weight.shape[0]), out=indptr[1:])
        return (self.weight[rows, cols], cols.astype(index_dtype(self.weight.shape[1] - 1)),
                indptr.astype(index_dtype(len(rows))))

    def csr_nbytes(self) -> int:
        """Bytes of the CSR arrays."""
        return sum(array.nbytes for array in self.csr())

    def store_as_csr(self) -> bool:
        """Whether CSR storage is smaller than dense float32."""
        return self.csr_nbytes() < self.weight.nbytes


def index_dtype(largest: int) -> np.dtype:
    """The smallest unsigned integer type holding ``0..largest``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def csr_to_dense(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The dense (rows, cols) float32 matrix of a CSR triple."""
    dense = np.zeros(shape, dtype=np.float32)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr.astype(np.int64)).astype(np.int64))
    dense[rows, indices.astype(np.int64)] = data
    return dense


@dataclass
class ObsNormalization:
    """SB3 ``VecNormalize``'s observation transform ``clip((obs - mean) / std, -clip, clip)``,
    ``std = sqrt(var + epsilon)``, computed in float64 as SB3 does."""

    mean: np.ndarray
    std: np.ndarray
    clip: float

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64).ravel()
        self.std = np.asarray(self.std, dtype=np.float64).ravel()
        self.clip = float(self.clip)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.clip((obs.astype(np.float64) - self.mean) / self.std, -self.clip, self.clip).astype(np.float32)


class _DenseKernel:
    def __init__(self, layer: Layer) -> None:
        self.weight_t = np.ascontiguousarray(layer.weight.T)
        self.bias = layer.bias

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight_t + self.bias


class _CsrKernel:
    def __init__(self, layer: Layer) -> None:
        data, indices, indptr = layer.csr()
        indptr = indptr.astype(np.int64)
        nonempty = np.flatnonzero(np.diff(indptr) > 0)
        self.data, self.indices, self.bias = data, indices.astype(np.intp), layer.bias
        self.starts, self.nonempty = indptr[nonempty], nonempty

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.repeat(self.bias[None, :], x.shape[0], axis=0)
        if len(self.data):
            out[:, self.nonempty] += np.add.reduceat(x[:, self.indices] * self.data, self.starts, axis=1)
        return out


@dataclass
class ExportedPolicy:
    """A deterministic continuous-action policy: normalise, MLP, squash-and-rescale.

    ``predict(obs)`` equals SB3's ``model.predict(obs, deterministic=True)[0]``: the last layer's
    activation is the tanh squash, and its output in [-1, 1] is rescaled to ``[action_low, action_high]``
    as SB3's ``unscale_action`` does. Layers at or below ``csr_max_density`` are computed as CSR.
    """

    obs_shape: tuple[int, ...]
    layers: list[Layer]
    action_low: np.ndarray
    action_high: np.ndarray
    obs_normalization: ObsNormalization | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    csr_max_density: float = CSR_MAX_DENSITY

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(size) for size in self.obs_shape)
        self.action_low = np.asarray(self.action_low, dtype=np.float32)
        self.action_high = np.asarray(self.action_high, dtype=np.float32)
        self._kernels = [_CsrKernel(layer) if layer.density <= self.csr_max_density else _DenseKernel(layer)
                         for layer in self.layers]

    @property
    def obs_dim(self) -> int:
        """Length of the flattened observation."""
        return int(np.prod(self.obs_shape))

    @property
    def action_dim(self) -> int:
        """Length of the action vector."""
        return int(self.layers[-1].weight.shape[0])

    def predict(self, obs: Any) -> np.ndarray:
        """The action for one observation (shaped like ``obs_shape``) or a batch of them."""
        obs = np.asarray(obs)
        single = obs.shape == self.obs_shape
        if not single and obs.shape[1:] != self.obs_shape:
            raise ValueError(f"observation shape {obs.shape} is neither {self.obs_shape} nor a batch of it")
        x = obs.reshape(-1, self.obs_dim)
        x = self.obs_normalization(x) if self.obs_normalization is not None else x.astype(np.float32, copy=False)
        for layer, kernel in zip(self.layers, self._kernels):
            x = activate(kernel(x), layer.activation, layer.alpha)
        action = self.action_low + (np.float32(0.5) * (x + np.float32(1.0)) * (self.action_high - self.action_low))
        return action[0] if single else action

    def save(self, path: str | Path) -> None:
        """Write the policy as a compressed ``.npz`` (each weight as CSR where that is smaller)."""
        arrays: dict[str, Any] = {
            "format": np.array(FORMAT), "obs_shape": np.array(self.obs_shape, dtype=np.int64),
            "action_low": self.action_low, "action_high": self.action_high, "n_layers": np.array(len(self.layers)),
            "metadata": np.array(json.dumps(self.metadata, sort_keys=True)),
        }
        if self.obs_normalization is not None:
            arrays.update(obs_mean=self.obs_normalization.mean, obs_std=self.obs_normalization.std,
                          obs_clip=np.array(self.obs_normalization.clip))
        for i, layer in enumerate(self.layers):
            prefix = f"layer{i}/"
            arrays.update({prefix + "bias": layer.bias, prefix + "activation": np.array(layer.activation),
                           prefix + "alpha": np.array(layer.alpha, dtype=np.float64),
                           prefix + "shape": np.array(layer.weight.shape, dtype=np.int64)})
            if layer.store_as_csr():
                data, indices, indptr = layer.csr()
                arrays.update({prefix + "data": data, prefix + "indices": indices, prefix + "indptr": indptr})
            else:
                arrays[prefix + "weight"] = layer.weight
        with open(path, "wb") as file:
            np.savez_compressed(file, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> ExportedPolicy:
        """Read a policy written by :meth:`save` (``python -m sparse_rl.export ... --format npz``)."""
        with np.load(path, allow_pickle=False) as archive:
            if "format" not in archive.files or str(archive["format"]) != FORMAT:
                raise ValueError(f"{path} is not a policy exported by sparse_rl.export ({FORMAT})")
            layers = []
            for i in range(int(archive["n_layers"])):
                prefix = f"layer{i}/"
                shape = tuple(int(size) for size in archive[prefix + "shape"])
                if prefix + "weight" in archive.files:
                    weight = archive[prefix + "weight"]
                else:
                    weight = csr_to_dense(archive[prefix + "data"], archive[prefix + "indices"],
                                          archive[prefix + "indptr"], shape)  # type: ignore[arg-type]  # shape: a 2-tuple read back from the archive
                layers.append(Layer(weight, archive[prefix + "bias"], str(archive[prefix + "activation"]),
                                    float(archive[prefix + "alpha"])))
            normalization = None
            if "obs_mean" in archive.files:
                normalization = ObsNormalization(archive["obs_mean"], archive["obs_std"], float(archive["obs_clip"]))
            return cls(tuple(archive["obs_shape"]), layers, archive["action_low"], archive["action_high"],
                       normalization, json.loads(str(archive["metadata"])))
