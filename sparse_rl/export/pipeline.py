"""From a saved model to exported files: the compacted policy of a loaded model (:func:`export_policy`) and
the whole export of a model path in one format (:func:`export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sparse_rl.deploy import ExportedPolicy
from sparse_rl.export.c import write_c
from sparse_rl.export.compaction import compact
from sparse_rl.export.errors import ExportError
from sparse_rl.export.model import actor_layers, load_model, load_vecnormalize
from sparse_rl.export.npz import write_npz
from sparse_rl.export.onnx import write_onnx

FORMATS = ("onnx", "npz", "c")


def export_policy(model: Any, vecnormalize: str | Path | None = None, source: str = "") -> ExportedPolicy:
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
    return ExportedPolicy(obs_space.shape, layers, action_space.low, action_space.high, normalization, metadata)


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

