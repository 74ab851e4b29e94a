"""Size and batch-1 latency of exported SAC actors (ONNX, numpy runtime, C) against SB3 and torch.

For each method in ``--methods`` and density in ``--densities``, a SAC ``SparseSACPolicy`` for
HalfCheetah-v4 (default ERK layer densities, random masks and SB3's initial weights: no training, which
changes neither sizes nor latencies) is saved as ``model.zip`` and exported to every target with
``sparse_rl.export.export``. ``rigl``'s masks are unstructured; ``srigl``'s give every neuron of a layer
the same fan-in k (its layers below density 1 only), which the C target stores condensed where it picks a
sparse loop. Untrained, an srigl network has no ablated neuron; training ablates some, which compaction
removes (narrower layers, the same number of weights). Sizes: the files, and for C also the compiled
object's text + data (``cc -O2 -c``, ``size``). Latency of one observation (median over ``--calls`` calls
each, one thread everywhere): SB3's ``model.predict(obs, deterministic=True)``, the torch actor under ``no_grad``,
ONNX Runtime (one intra-op thread), ``sparse_rl.deploy.ExportedPolicy.predict`` and the C function
through ctypes, next to an empty C function of the same signature through ctypes (the call
overhead) and the C function timed inside C (``clock_gettime`` around each call).

A last table measures where CSR becomes faster than dense for one layer of 256 inputs and one of 17,
for the numpy runtime and for C (also CSR against the condensed loop on a constant-fan-in mask of the same
density), and ONNX Runtime's exported graph (dense Gemm, weights rebuilt from
CSR by constant folding at load) against a Gather + ScatterElements formulation that computes on the
nonzero weights at run time; the numpy threshold in ``sparse_rl/deploy.py`` and the C cost model in
``sparse_rl/export/c.py`` come from such measurements.

Writes ``results/export.md`` (``--out``) and refreshes its quote in ``docs/export.md`` (the README's quote is
refreshed by ``python benchmarks/readme_results.py``); with another ``--out`` it writes only that file.

    /work/bg/pause_runs.sh python benchmarks/export.py [--calls 10000 --densities 1.0 0.5 0.1 0.05
                                                        --methods rigl srigl]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from stable_baselines3 import SAC  # noqa: E402

from sparse_rl import SparseSACPolicy  # noqa: E402
from sparse_rl.deploy import ExportedPolicy, Layer  # noqa: E402
from sparse_rl.export import c_layer_layout, c_layer_uses_csr, c_sources, export, onnx_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_results import quoted_readme  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "export.md"
DOCS = ROOT / "docs" / "export.md"
CFLAGS = ["-O2", "-std=c99", "-D_POSIX_C_SOURCE=199309L"]
TIMER_C = r"""
#include <time.h>
#include "policy.h"
static double now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
void empty(const float *obs, float *action) { (void)obs; (void)action; }
void time_calls(const float *obs, int n_obs, int obs_dim, float *action, int calls, double *samples, int clock_only) {
    int i;
    for (i = 0; i < calls; i++) {
        double start = now_ns();
        if (!clock_only) predict(obs + (i % n_obs) * obs_dim, action);
        samples[i] = now_ns() - start;
    }
}
"""


def median_us(function: Callable[[int], object], calls: int) -> float:
    """Median wall-clock µs of ``function(i)`` over ``calls`` calls (after 200 warm-up calls)."""
    for i in range(200):
        function(i)
    samples = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        function(i)
        samples[i] = time.perf_counter_ns() - start
    return float(np.median(samples)) / 1e3


def compile_c(source: str, header: str, directory: Path) -> tuple[ctypes.CDLL, int]:
    """The shared library of a policy plus the timer, and the policy's compiled object size (text + data)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.c").write_text(source)
    (directory / "policy.h").write_text(header)
    (directory / "timer.c").write_text(TIMER_C)
    subprocess.run(["cc", *CFLAGS, "-c", "policy.c", "-o", "policy.o"], cwd=directory, check=True)
    sizes = subprocess.run(["size", "policy.o"], cwd=directory, check=True, capture_output=True, text=True)
    text, data = (int(value) for value in sizes.stdout.splitlines()[1].split()[:2])
    subprocess.run(["cc", *CFLAGS, "-shared", "-fPIC", "-o", "libpolicy.so", "policy.c", "timer.c", "-lm"],
                   cwd=directory, check=True)
    library = ctypes.CDLL(str(directory / "libpolicy.so"))
    pointer = ctypes.POINTER(ctypes.c_float)
    for function in (library.predict, library.empty):
        function.argtypes, function.restype = [pointer, pointer], None
    library.time_calls.argtypes = [pointer, ctypes.c_int, ctypes.c_int, pointer, ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_double), ctypes.c_int]
    return library, text + data


def float_pointer(array: np.ndarray) -> ctypes._Pointer:
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def c_median_us(library: ctypes.CDLL, obs: np.ndarray, calls: int, clock_only: bool = False) -> float:
    """Median µs of one ``predict`` call timed inside C (or of the clock reads alone)."""
    samples = np.empty(calls)
    action = np.zeros(4096, np.float32)
    library.time_calls(float_pointer(obs), len(obs), obs.shape[1], float_pointer(action), calls,
                       samples.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), int(clock_only))
    return float(np.median(samples)) / 1e3


def session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def measure_density(method: str, density: float, calls: int, obs: np.ndarray, directory: Path) -> dict[str, float]:
    """Sizes (bytes) and latencies (µs) of every form of one SAC actor."""
    directory.mkdir(parents=True, exist_ok=True)
    model = SAC(SparseSACPolicy, "HalfCheetah-v4", seed=0, device="cpu",
                policy_kwargs=dict(density=density, method=method))
    model.save(directory / "model.zip")
    row: dict[str, float] = {"method": method, "density": density}  # type: ignore[dict-item]
    row["model.zip"] = (directory / "model.zip").stat().st_size
    with zipfile.ZipFile(directory / "model.zip") as archive:
        row["policy.pth"] = archive.getinfo("policy.pth").file_size
    actor = model.policy.actor
    linears = [m for net in (actor.latent_pi, actor.mu) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    # from the shapes: a layer on the compact engine holds only its active values as a parameter
    row["dense actor"] = 4 * sum(m.in_features * m.out_features + m.out_features for m in linears)
    export(directory / "model.zip", "onnx", directory / "actor.onnx")
    export(directory / "model.zip", "npz", directory / "actor.npz")
    export(directory / "model.zip", "c", directory / "actor.c")
    row["onnx"] = (directory / "actor.onnx").stat().st_size
    row["npz"] = (directory / "actor.npz").stat().st_size
    row["C source"] = (directory / "actor.c").stat().st_size + (directory / "actor.h").stat().st_size
    policy = ExportedPolicy.load(directory / "actor.npz")
    row["nonzero"] = policy.metadata["nonzero_weights"]
    row["widths"] = "-".join(str(width) for width in policy.metadata["widths_after"])  # type: ignore[assignment]
    row["C layouts"] = "-".join(c_layer_layout(layer) for layer in policy.layers)  # type: ignore[assignment]
    library, row["C object"] = compile_c((directory / "actor.c").read_text().replace('"actor.h"', '"policy.h"'),
                                         (directory / "actor.h").read_text(), directory / "c")
    sess = session(str(directory / "actor.onnx"))
    tensors = torch.as_tensor(obs)
    actions = np.zeros((len(obs), 6), np.float32)
    pointers = [(float_pointer(obs[i]), float_pointer(actions[i])) for i in range(len(obs))]
    n = len(obs)

    def torch_actor(i: int) -> object:
        with torch.no_grad():
            return actor(tensors[i % n:i % n + 1], deterministic=True)

    row["model.predict"] = median_us(lambda i: model.predict(obs[i % n], deterministic=True), calls)
    row["torch actor"] = median_us(torch_actor, calls)
    row["onnxruntime"] = median_us(lambda i: sess.run(None, {"obs": obs[i % n:i % n + 1]}), calls)
    row["numpy"] = median_us(lambda i: policy.predict(obs[i % n]), calls)
    row["C (ctypes)"] = median_us(lambda i: library.predict(*pointers[i % n]), calls)
    row["empty C (ctypes)"] = median_us(lambda i: library.empty(*pointers[i % n]), calls)
    row["C (in C)"] = c_median_us(library, obs, calls)
    row["clock (in C)"] = c_median_us(library, obs, calls, clock_only=True)
    reference = model.predict(obs, deterministic=True)[0]
    for i in range(n):
        library.predict(*pointers[i])
    row["max |C - predict|"] = float(np.abs(actions - reference).max())
    return row


def gather_scatter_onnx(layer: Layer) -> onnx.ModelProto:
    """One layer computed on its nonzero weights at run time: Gather the inputs, multiply, ScatterElements-add
    into the bias (batch 1)."""
    data, indices, indptr = layer.csr()
    rows = np.repeat(np.arange(layer.weight.shape[0]), np.diff(indptr.astype(np.int64)).astype(np.int64))
    inits = [numpy_helper.from_array(array, name) for name, array in (
        ("cols", indices.astype(np.int64)), ("rows", rows.astype(np.int64)), ("data", data), ("bias", layer.bias),
        ("flat", np.array([-1], np.int64)), ("shape", np.array([1, -1], np.int64)))]
    nodes = [helper.make_node("Reshape", ["obs", "flat"], ["x"]),
             helper.make_node("Gather", ["x", "cols"], ["g"], axis=0),
             helper.make_node("Mul", ["g", "data"], ["p"]),
             helper.make_node("ScatterElements", ["bias", "rows", "p"], ["y"], axis=0, reduction="add"),
             helper.make_node("Relu", ["y"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["action"])]
    graph = helper.make_graph(nodes, "gather_scatter",
                              [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, layer.weight.shape[1]])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, layer.weight.shape[0]])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def measure_crossover(shape: tuple[int, int], density: float, calls: int, directory: Path,
                      rng: np.random.Generator) -> dict[str, object]:
    """Batch-1 µs of one ReLU layer of ``shape`` (outputs, inputs) at ``density``, each way of computing it."""
    weight = rng.standard_normal(shape).astype(np.float32) * (rng.random(shape) < density)
    layer = Layer(weight, rng.standard_normal(shape[0]).astype(np.float32), "relu")
    bounds = -np.ones(shape[0], np.float32), np.ones(shape[0], np.float32)
    x = rng.standard_normal((64, shape[1])).astype(np.float32)
    row: dict[str, object] = {"layer": f"{shape[1]} → {shape[0]}", "density": density}
    for name, threshold in (("numpy dense", -1.0), ("numpy CSR", 1.0)):
        policy = ExportedPolicy((shape[1],), [layer], *bounds, csr_max_density=threshold)
        row[name] = median_us(lambda i: policy.predict(x[i % 64]), calls)
    policy = ExportedPolicy((shape[1],), [layer], *bounds)
    for name, layout in (("C dense", "dense"), ("C CSR", "csr")):
        library, _ = compile_c(*c_sources(policy, layout=layout), directory / f"{shape}-{density}-{layout}")
        row[name] = c_median_us(library, x, calls)
    row["C rule"] = "CSR" if c_layer_uses_csr(layer) else "dense"
    fan_in = min(shape[1], max(1, round(density * shape[1])))  # SRigL's k at this density
    weight = np.zeros(shape, np.float32)
    np.put_along_axis(weight, rng.random(shape).argsort(axis=1)[:, :fan_in], rng.standard_normal((shape[0], fan_in)),
                      axis=1)
    uniform = ExportedPolicy((shape[1],), [Layer(weight, layer.bias, "relu")], *bounds)
    row["k"] = fan_in
    for name, layout in (("C CSR, fan-in k", "csr"), ("C condensed", "condensed")):
        library, _ = compile_c(*c_sources(uniform, layout=layout), directory / f"{shape}-{density}-k-{layout}")
        row[name] = c_median_us(library, x, calls)
    row["fan-in rule"] = c_layer_layout(uniform.layers[0])
    exported = session(onnx_model(policy))
    gathered = session(gather_scatter_onnx(layer))
    row["ORT exported Gemm"] = median_us(lambda i: exported.run(None, {"obs": x[i % 64:i % 64 + 1]}), calls)
    row["ORT Gather+Scatter"] = median_us(lambda i: gathered.run(None, {"obs": x[i % 64:i % 64 + 1]}), calls)
    return row


def table(rows: list[dict], columns: list[str], formats: dict[str, str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format(row[c], formats.get(c, "")) for c in columns) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.1, 0.05])
    parser.add_argument("--calls", type=int, default=10_000, help="timed calls per measurement")
    parser.add_argument("--crossover-densities", type=float, nargs="+",
                        default=[0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0])
    parser.add_argument("--crossover-calls", type=int, default=3000)
    parser.add_argument("--methods", nargs="+", choices=["rigl", "srigl"], default=["rigl", "srigl"],
                        help="the actors' mask methods (srigl: constant fan-in, densities below 1 only)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="results file (default results/export.md, whose quote in docs/export.md is refreshed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        obs = rng.standard_normal((1000, 17)).astype(np.float32)
        rows = [measure_density(method, d, args.calls, obs, Path(tmp) / f"{method}-d{d}")
                for method in args.methods for d in args.densities if method == "rigl" or d < 1]
        crossover = [measure_crossover(shape, d, args.crossover_calls, Path(tmp) / "crossover", rng)
                     for shape in ((256, 256), (256, 17)) for d in args.crossover_densities]
    timed = ["model.predict", "torch actor", "onnxruntime", "numpy", "C (ctypes)"]
    for row in rows:
        row["÷ dense actor"] = " / ".join(  # type: ignore[assignment]
            f"{row[name] / row['dense actor']:.3f}" for name in ("onnx", "npz", "C object"))
        fastest = min(timed[1:], key=lambda name: row[name])
        row["fastest"] = f"{fastest}: {row['model.predict'] / row[fastest]:.0f}×"  # type: ignore[assignment]
    command = " ".join(["python", "benchmarks/export.py", *sys.argv[1:]])
    lines = [
        f"Command: `{command}` (SAC actor for HalfCheetah-v4, `SparseSACPolicy` with default ERK layer densities and "
        "random masks (`rigl`: unstructured; `srigl`: the same fan-in k for every neuron of a layer, no neuron "
        "ablated since untrained), SB3's initial weights, no training; batch 1, 1 thread everywhere, medians of "
        f"{args.calls} calls; C compiled with `cc {' '.join(CFLAGS)}`; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, onnxruntime {ort.__version__}, numpy "
        f"{np.__version__}; {time.time() - started:.0f} s).",
        "",
        "Sizes in bytes. `policy.pth`: the policy inside `model.zip` (actor, critics, target critics, uncompressed); "
        "`dense actor`: fp32 weights and biases of `latent_pi` and `mu`; `C object`: text + data of the compiled "
        "`.c` (what a firmware image holds); `C source`: `.c` + `.h`; `÷ dense actor`: onnx / npz / C object as a "
        "fraction of the dense actor; `C layouts`: how the C target stores and computes each layer (`condensed`: "
        "k weights and k column indices per output, no row pointers, for layers whose rows all hold k weights).",
        "",
        *table(rows, ["method", "density", "nonzero", "widths", "C layouts", "model.zip", "policy.pth", "dense actor",
                      "onnx", "npz", "C object", "C source", "÷ dense actor"],
               {"density": "g"} | dict.fromkeys(["model.zip", "policy.pth", "dense actor", "onnx", "npz", "C object",
                                                 "C source"], ".0f")),
        "",
        "Batch-1 latency in µs. `C (ctypes)` includes the ctypes call overhead, which `empty C (ctypes)` (a C "
        "function of the same signature that does nothing) measures; `C (in C)` times the function inside C, "
        "`clock (in C)` is the cost of the two clock reads it includes. `fastest`: the fastest exported target or "
        "torch actor, as a speed-up over `model.predict`.",
        "",
        *table(rows, ["method", "density", *timed, "empty C (ctypes)", "C (in C)", "clock (in C)", "fastest",
                      "max |C - predict|"],
               {**{name: ".2f" for name in [*timed, "empty C (ctypes)", "C (in C)", "clock (in C)"]},
                "density": "g", "max |C - predict|": ".1e"}),
        "",
        "Where CSR pays: batch-1 µs of one ReLU layer (256 inputs, and 17 like HalfCheetah's first layer) at each "
        "density (random mask), computed each way: the numpy runtime (dense product vs CSR gather-and-reduce), C "
        "(dense vs CSR loops, timed inside C; `C rule`: the loop the C target picks, from the cost model "
        "`C_COST_NS` in `sparse_rl/export/c.py`) and ONNX Runtime (the exported graph: a dense Gemm whose weight is "
        "rebuilt from CSR by constant folding at load, vs a Gather + ScatterElements graph computing on the "
        "nonzero weights at run time). `C CSR, fan-in k` and `C condensed`: the CSR and condensed loops on a mask "
        "of the same density with k = round(density × inputs) weights in every row (SRigL's), `fan-in rule` the "
        "layout the C target picks for it. Each time includes the policy's output rescaling.",
        "",
        *table(crossover, ["layer", "density", "numpy dense", "numpy CSR", "C dense", "C CSR", "C rule", "k",
                           "C CSR, fan-in k", "C condensed", "fan-in rule", "ORT exported Gemm", "ORT Gather+Scatter"],
               {"density": "g"} | dict.fromkeys(["numpy dense", "numpy CSR", "C dense", "C CSR", "C CSR, fan-in k",
                                                 "C condensed", "ORT exported Gemm", "ORT Gather+Scatter"], ".2f")),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    if args.out.resolve() == RESULTS.resolve():
        DOCS.write_text(quoted_readme(DOCS.read_text(), ROOT))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
