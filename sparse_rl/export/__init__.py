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
dense matrices, C runs CSR loops where :data:`C_COST_NS` predicts them faster, condensed (k weights and k
column indices per output, no row pointers) where every row holds the same number k of weights, as SRigL's do.
"""

from sparse_rl.export.c import (
    C_COST_NS,
    C_LAYOUTS,
    C_UNROLLED_FAN_IN,
    c_layer_costs,
    c_layer_layout,
    c_layer_uses_csr,
    c_sources,
    write_c,
)
from sparse_rl.export.cli import main
from sparse_rl.export.compaction import compact, condensed, constant_fan_in
from sparse_rl.export.errors import ExportError
from sparse_rl.export.model import (
    SUPPORTED,
    actor_layers,
    effective_weight,
    load_model,
    load_vecnormalize,
    mlp_layers,
    model_zip_path,
)
from sparse_rl.export.npz import write_npz
from sparse_rl.export.onnx import ONNX_OPSET, onnx_model, write_onnx
from sparse_rl.export.pipeline import FORMATS, export, export_policy

__all__ = ["C_COST_NS", "C_LAYOUTS", "C_UNROLLED_FAN_IN", "FORMATS", "ONNX_OPSET", "SUPPORTED", "ExportError",
           "actor_layers", "c_layer_costs", "c_layer_layout", "c_layer_uses_csr", "c_sources", "compact",
           "condensed", "constant_fan_in", "effective_weight", "export", "export_policy", "load_model",
           "load_vecnormalize", "main", "mlp_layers", "model_zip_path", "onnx_model", "write_c", "write_npz",
           "write_onnx"]
