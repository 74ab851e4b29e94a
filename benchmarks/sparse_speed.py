"""Wall-clock and memory of the sparse backends (``compact``, ``sparse``) against ``masked`` and dense agents.

Per layer (``--part layers``): one training step of a lone ``SparseLinear`` (forward, backward with the input and
weight gradient, ``dense_grad_needed`` off as between topology updates, the gradient mask, fused Adam, the weight
mask) on ``masked``, ``sparse`` and ``compact``, the same random mask for each, timed alternately one step each;
medians. The input is row-major (as from a dense layer); the output gradient has the layout of the layer's output
(row-major for ``masked``, feature-major for the sparse kernels), as the next layer hands it back. "compact in
network" feeds the compact layer feature-major input too, as it gets it inside a network (whose dense layers return
feature-major activations when a sparse layer follows), so it pays no transposes. The break-even density is where
compact ÷ masked crosses 1, interpolated linearly in log-density.

Times are the process's CPU time (``time.process_time``), not wall-clock time. With one torch thread
the two are the same on an idle machine. On a shared one, CPU time leaves out the time other
processes take from this one. With ``--threads`` above 1 the times are wall-clock (``time.perf_counter``): CPU time
would add up every thread's, the ones waiting for work included. The process is pinned to ``--threads`` CPUs
(:func:`pin_to_cores`) before it builds anything, so every thread it starts, SBX's XLA threads among them, runs on
those cores: "one core" holds for each model, and CPU time is one core's.

End to end (``--part e2e``): ms per environment step of SAC/TD3 (``--algos`` also takes sb3-contrib's ``tqc`` and
``crossq``, with their default networks; they get no wide network) on HalfCheetah-v4, with one gradient step per
environment step and topology updates included (RigL, ΔT = 1000, never stopped). The models are the sparse policy at
each density on ``backend=auto`` (compact where the compiled kernels are built) and on ``backend=masked``, SB3's
``MlpPolicy``, the parameter-matched dense network of each density, the wide network (``width_multiplier=4,
iso_params=True``, on ``auto``) and, with the ``bench`` extra installed, SBX's dense agent (the JAX SB3, on as many
threads as torch: ``--threads``, default 1).
``--methods rigl srigl`` adds SRigL at each density on ``auto`` (compact where the compiled kernels are built, as
RigL), in its own table. All models first collect ``--learning-starts``
steps and then train in alternating chunks. Each ratio is of two medians and carries, in brackets, a distribution-free
interval for the median of its per-round ratios (:func:`median_interval`; the two models' chunks of a round run back
to back): with nine rounds the 2nd smallest and 2nd largest, 96 % coverage.

Gathers (``--part traffic``): why a half-way fix does not pay. With values inside a dense tensor, one gather of the
active values (``index_select`` at the CSR positions) against one dense pass over the weight (a zero-fill) and a
copy of the same number of values stored contiguously.

Breakdown (``--part breakdown``): where one gradient step's CPU time goes for each of ``--algos``, for the dense
policy, the sparse policy at ``--densities`` on ``auto`` and (SAC, TD3) the wide network. Module hooks time the
forward and backward of the hidden-to-hidden layers, of the input and output layers, of the ReLUs and of CrossQ's
BatchRenorm layers; "rest" is everything else in ``train()``. The hooks add overhead of their own, so the shares are
approximate. A backward hook wraps a layer's output in a new tensor, which drops a fused layer's "rectified" tag, so
here every ReLU computes as an unfused one (``--part relu-fusion`` measures what the fusion saves), and every compact
layer runs as its own autograd node (``--part chains`` measures what running them in one saves).

Compact kernel calls (``--part kernel-calls``): the same question for the compact kernels without hooks: each call
of their Python wrappers inside ``train()`` of each sparse model is timed by its layer, density and what it
computes (calls, µs per call and ms per step), beside the step's time untimed, so that the kernels' share of a step,
and which layer's calls make it, read off as they run inside it.

Lone layer step (``--part layer-step``, ``layer_step.py``): where a compact layer's training step goes, the
"compact in network" step of ``--part layers`` taken apart: zero_grad, forward, backward and optimizer step (with the
two masks), the compiled kernels' share of the forward and the backward, and the same phases of an autograd node that
computes nothing (on parameters of the compact layer's sizes, with the same optimizer), each beside the masked
layer's whole step, the three stepped alternately; medians of CPU time.

Kernels (``--part kernels``, ``sparse_kernels.py``): multiply-adds per second of the compact kernels (forward, input
gradient, weight gradient at the active positions) against torch's MKL products for the same three, and dense GEMM's
rate; and a layer's backward that wants both gradients (one pass over ``Wᵀ`` for the two) against MKL's two.

Memory (``--part memory``): peak RSS of building a SAC model and training ``--chunk`` steps, each model in its own
process.

BatchRenorm (``--part batch-renorm``): forward and backward of sb3-contrib's ``BatchRenorm1d`` against
``FusedBatchRenorm1d`` (the sparse CrossQ policy's) at the shapes CrossQ's ``train()`` gives them, timed alternately;
medians. End to end, ``--algos crossq`` also times the sparse policy at density 1.0 (dense layers, fused
BatchRenorm), which splits the speed-up over ``MlpPolicy`` into what the fused layer gives and what sparsity gives.

Fused ReLUs (``--part relu-fusion``): ``train()``'s CPU time per gradient step of each sparse model (``auto``, and
the wide network for SAC and TD3) with its ReLUs fused into the compact layers before them, as built
(:mod:`sparse_rl.relu_fusion`), against a twin built from the same seed with plain ``nn.ReLU`` modules put back,
timed alternately in ``--rounds`` chunks of ``--chunk`` gradient steps; medians.

Critic weight gradients (``--part actor-loss``): ``train()``'s CPU time per gradient step of each sparse model
(and of the sparse policy at density 1.0), whose critic computes no weight gradients in the actor's loss
(:mod:`sparse_rl.sb3.actor_loss`), against a same-seed twin that computes them as SB3's critics do, timed
alternately in ``--rounds`` chunks of ``--chunk`` gradient steps; medians.

Optimizer (``--part optimizer``): ``train()``'s CPU time per gradient step of each sparse model (and of the sparse
policy at density 1.0) with the optimizer the policies build, :class:`sparse_rl.optim.LeanAdam`, against a same-seed
twin on torch's fused Adam class itself, timed alternately in ``--rounds`` chunks of ``--chunk`` gradient steps;
medians.

Compact input layers (``--part input-layers``): ``train()``'s CPU time per gradient step of each sparse model as
built, whose input layers (``masked.is_input_layer``: at most ``INPUT_LAYER_MAX_IN`` inputs, at least
``INPUT_LAYER_MIN_FANOUT`` times as many outputs) ``auto`` lays out compactly up to density
``COMPACT_NARROW_MAX_DENSITY`` (``COMPACT_CHAINED_INPUT_MAX_DENSITY`` where one feeds a compact layer), against a
same-seed twin built with the hidden layers' density limit for
them too (so they stay masked), timed alternately in ``--rounds`` chunks of ``--chunk`` gradient steps; medians.
The twin is timed first in each round.

Compact output layers (``--part output-layers``): the same comparison for the narrow output layers
(``auto.is_narrow_output_layer``: the actor's and the critics' heads), which ``auto`` lays out compactly at any
density, against a same-seed twin that keeps them masked.

Chained compact layers (``--part chains``): ``train()``'s CPU time per gradient step of each sparse model as built,
whose runs of compact layers inside one ``nn.Sequential`` run as one autograd node
(:mod:`sparse_rl.backends.compact_chain`), against a same-seed twin whose compact layers run one node each (the
twin's steps inside a context that turns the runs off), timed alternately in ``--rounds`` chunks of ``--chunk``
gradient steps; medians. The twin is timed first in each round.

One-pass gradients (``--part one-pass``): the same for a hidden layer's input and weight gradients computed in one
pass over ``Wᵀ`` (as built) against two loops (the weight gradient's over ``W``, the input gradient's over ``Wᵀ``),
one model stepped both ways (the same floats), the two loops first in each round.

Each part rewrites its own section of ``results/sparse_speed.md`` (the file keeps the other
parts' sections) and records its own command line.

    python benchmarks/sparse_speed.py --part layers [--shapes 256x256 1024x1024 --batches 256 1]
    python benchmarks/sparse_speed.py --part e2e [--algos sac td3 --densities 0.5 0.1 0.05 --methods rigl srigl]
    python benchmarks/sparse_speed.py --part layer-step [--shapes 256x256 --densities 0.1 0.05 --repeats 100]
    python benchmarks/sparse_speed.py --part traffic [--shapes 256x256 1024x1024]
    python benchmarks/sparse_speed.py --part breakdown [--algos sac --densities 0.1]
    python benchmarks/sparse_speed.py --part kernel-calls [--algos sac td3 --densities 0.1 --chunk 200]
    python benchmarks/sparse_speed.py --part kernels [--shapes 256x256 1024x1024 --densities 0.2 0.1 0.05 0.02
                                                     --batches 256 32 8 4]
    python benchmarks/sparse_speed.py --part memory [--chunk 200]
    python benchmarks/sparse_speed.py --part batch-renorm [--repeats 30]
    python benchmarks/sparse_speed.py --part relu-fusion [--algos sac td3 --rounds 3 --chunk 200]
    python benchmarks/sparse_speed.py --part actor-loss [--algos sac td3 --rounds 5 --chunk 200]
    python benchmarks/sparse_speed.py --part optimizer [--algos sac td3 --rounds 5 --chunk 200]
    python benchmarks/sparse_speed.py --part input-layers [--algos sac td3 --rounds 9 --chunk 100]
    python benchmarks/sparse_speed.py --part output-layers [--algos sac td3 --rounds 9 --chunk 100]
    python benchmarks/sparse_speed.py --part chains [--algos sac td3 --rounds 9 --chunk 100]
    python benchmarks/sparse_speed.py --part one-pass [--algos sac td3 --rounds 9 --chunk 100]
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch
from sb3_contrib.common.torch_layers import BatchRenorm
from torch import nn

from sparse_rl.backends import auto, compact_chain, kernels, masked
from sparse_rl.backends.auto import auto_backend, auto_rule
from sparse_rl.calibrate import time_layer
from sparse_rl.layers import SparseLinear
from sparse_rl.machine import cpu_model
from sparse_rl.relu_fusion import RectifiedReLU
from sparse_rl.sb3 import actor_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layer_step import layer_step_tables  # noqa: E402
from sparse_kernels import kernel_tables, traffic_tables  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "results" / "sparse_speed.md"
SECTIONS = {"layers": "#### Per layer", "layer-step": "#### Where a lone layer's step goes", "e2e": "#### End to end",
            "traffic": "#### Gathers from a dense weight",
            "breakdown": "#### Where a gradient step's time goes", "kernels": "#### Kernel throughput",
            "kernel-calls": "#### Compact kernel calls inside a gradient step",
            "memory": "#### Peak memory", "batch-renorm": "#### BatchRenorm", "relu-fusion": "#### Fused ReLUs",
            "actor-loss": "#### Critic weight gradients in the actor's loss", "optimizer": "#### Optimizer",
            "input-layers": "#### Compact input layers", "output-layers": "#### Compact output layers",
            "chains": "#### Chained compact layers", "head-fusion": "#### Q heads inside the layer before",
            "one-pass": "#### Input and weight gradients in one pass"}
NET_ARCH: dict[str, list[int] | dict[str, list[int]]] = {
    "sac": [256, 256], "td3": [400, 300], "tqc": [256, 256], "crossq": {"pi": [256, 256], "qf": [1024, 1024]}}
WIDE_ALGOS = ("sac", "td3")
"""Algorithms whose e2e comparison includes the wide network (a 4x-wide CrossQ critic would be 4096 wide)."""
BATCH_RENORM_ALGOS = ("crossq",)
"""Algorithms with BatchRenorm layers: their e2e comparison includes the sparse policy at density 1.0."""


def algo_and_policy(algo: str) -> tuple[type, type]:
    """The algorithm class and its sparse policy class."""
    from sb3_contrib import TQC, CrossQ
    from stable_baselines3 import SAC, TD3

    from sparse_rl import SparseCrossQPolicy, SparseSACPolicy, SparseTD3Policy, SparseTQCPolicy

    return {"sac": (SAC, SparseSACPolicy), "td3": (TD3, SparseTD3Policy), "tqc": (TQC, SparseTQCPolicy),
            "crossq": (CrossQ, SparseCrossQPolicy)}[algo]


def break_even(densities: list[float], ratios: list[float]) -> str:
    """The density where sparse ÷ masked crosses 1 (log-linear interpolation), as text."""
    points = sorted(zip(densities, ratios))
    if all(r >= 1 for _, r in points):
        return f"< {points[0][0]:g} (never faster)"
    if all(r < 1 for _, r in points):
        return f"> {points[-1][0]:g} (always faster)"
    for (d0, r0), (d1, r1) in zip(points, points[1:]):
        if r0 < 1 <= r1:
            f = (1 - r0) / (r1 - r0)
            return f"{math.exp(math.log(d0) + f * (math.log(d1) - math.log(d0))):.2f}"
    return "none (ratio not monotone)"


def layer_tables(shapes: list[tuple[int, int]], batches: list[int], densities: list[float],
                 repeats: int) -> list[str]:
    rows, summary = [], []
    for in_features, out_features in shapes:
        for batch in batches:
            ratios = []
            for density in densities:
                median = time_layer(in_features, out_features, batch, density, repeats,
                                    backends=("masked", "sparse", "compact", "compact in network"))
                ratio = median["compact"] / median["masked"]
                ratios.append(ratio)
                auto = auto_backend(in_features, out_features, density, torch.device("cpu"))
                in_network = median["compact in network"]
                rows.append(f"| {in_features}×{out_features} | {batch} | {density:g} | {median['masked'] * 1e6:.0f} "
                            f"| {median['sparse'] * 1e6:.0f} | {median['compact'] * 1e6:.0f} "
                            f"| {in_network * 1e6:.0f} | {median['sparse'] / median['masked']:.2f} | {ratio:.2f} "
                            f"| {in_network / median['masked']:.2f} | {auto} |")
                print(rows[-1], flush=True)
            summary.append(f"| {in_features}×{out_features} | {batch} | {break_even(densities, ratios)} |")
    return ["| layer (in×out) | batch | density | masked µs | sparse µs | compact µs | compact in network µs "
            "| sparse ÷ masked | compact ÷ masked | in network ÷ masked | auto picks |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *rows, "",
            "Break-even density of `compact` (faster than `masked` below it):", "",
            "| layer (in×out) | batch | break-even density |", "|---|---|---|", *summary]


def build_models(algo: str, env_id: str, densities: list[float], width: int, common: dict,
                 backends: tuple[str, ...] = ("auto", "masked"), matched: bool = True, peer: bool = True,
                 srigl: bool = False) -> dict:
    """The models of one algorithm's comparison, by name: ``mlp``, ``{backend} {density}`` for each backend,
    ``matched {density}`` (the parameter-matched dense network) if ``matched``, ``srigl {density}`` (SRigL on
    ``auto``) if ``srigl``, and ``wide`` (SAC, TD3)."""
    from sparse_rl.sb3.matched import matched_net_arch

    algo_class, policy_class = algo_and_policy(algo)
    net_arch = NET_ARCH[algo]
    models = {"mlp": algo_class("MlpPolicy", env_id, policy_kwargs=dict(net_arch=net_arch), **common)}
    env = models["mlp"].env
    for density in densities:
        for backend in backends:
            models[f"{backend} {density}"] = rigl_model(algo, env_id, common, density, backend)
        if srigl:
            models[f"srigl {density}"] = algo_class(policy_class, env_id, **common, policy_kwargs=dict(
                net_arch=net_arch, density=density, method="srigl", update_end=None, backend="auto"))
        if matched:
            matched_arch = matched_net_arch(policy_class, env.observation_space, env.action_space, net_arch,
                                            dict(density=density))
            models[f"matched {density}"] = algo_class(policy_class, env_id, **common,
                                                      policy_kwargs=dict(net_arch=matched_arch, density=1.0))
    if algo in BATCH_RENORM_ALGOS:
        models["dense"] = algo_class(policy_class, env_id, **common, policy_kwargs=dict(net_arch=net_arch, density=1.0))
    sbx = sbx_model(algo, env_id, net_arch, common) if peer else None
    if sbx is not None:
        models["sbx"] = sbx
    if algo in WIDE_ALGOS:
        models["wide"] = wide_model(algo, env_id, common, width)
    return models


def rigl_model(algo: str, env_id: str, common: dict, density: float, backend: str, **extra: Any):
    """The benchmark's sparse model: RigL at ``density`` on ``backend``, updates never ending (``extra``: more
    policy kwargs)."""
    algo_class, policy_class = algo_and_policy(algo)
    return algo_class(policy_class, env_id, **common, policy_kwargs=dict(
        net_arch=NET_ARCH[algo], density=density, method="rigl", update_end=None, backend=backend, **extra))


def wide_model(algo: str, env_id: str, common: dict, width: int, **extra: Any):
    """The wide ×``width`` iso-parameter RigL network on ``auto`` (``extra``: more policy kwargs)."""
    algo_class, policy_class = algo_and_policy(algo)
    return algo_class(policy_class, env_id, **common, policy_kwargs=dict(
        net_arch=NET_ARCH[algo], width_multiplier=width, iso_params=True, method="rigl", update_end=None,
        backend="auto", **extra))


def sparse_models(algo: str, env_id: str, densities: list[float], width: int, common: dict, **extra: Any) -> dict:
    """Only the sparse models of :func:`build_models`: ``sparse {density}`` on ``auto`` and ``wide`` (SAC, TD3)."""
    models = {f"sparse {density}": rigl_model(algo, env_id, common, density, "auto", **extra)
              for density in densities}
    if algo in WIDE_ALGOS:
        models["wide"] = wide_model(algo, env_id, common, width, **extra)
    return models


def sbx_model(algo: str, env_id: str, net_arch: list[int] | dict[str, list[int]], common: dict):
    """SBX's dense SAC/TD3 (the JAX SB3, ``pip install -e ".[bench]"``) on torch's number of threads, or ``None``
    without it."""
    threads = torch.get_num_threads()
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={str(threads > 1).lower()} "
                                       f"intra_op_parallelism_threads={threads}")
    try:
        import sbx
    except ImportError:
        print("sbx-rl is not installed (pip install -e \".[bench]\"): no SBX row", flush=True)
        return None
    algo_class = getattr(sbx, {"sac": "SAC", "td3": "TD3", "tqc": "TQC", "crossq": "CrossQ"}[algo], None)
    if algo_class is None:
        return None
    return algo_class("MlpPolicy", env_id, policy_kwargs=dict(net_arch=net_arch),
                      learning_starts=common["learning_starts"], seed=common["seed"])


def clock() -> float:
    """Seconds of the clock the timings use: the process's CPU time on one torch thread, wall-clock on more."""
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


def clock_words() -> str:
    """What :func:`clock` measures, for the tables' text."""
    return "CPU" if torch.get_num_threads() == 1 else "wall-clock"


E2E_WARMUP_STEPS = 20
"""Untimed environment steps with training after the learning starts, before the first timed chunk: SBX compiles its
training step in the first (in a five-round run whose warm-up had none, SBX's first round took up to 5× its median)."""


def time_models(models: dict, rounds: int, chunk: int, learning_starts: int) -> dict[str, list[float]]:
    """Seconds per environment step of each model in each of ``rounds`` alternating chunks (one list per model, in
    round order, so that a round's entries were timed back to back), after ``learning_starts`` steps and
    :data:`E2E_WARMUP_STEPS` untimed training steps (optimizer state, kernel structures, SBX's JIT compilation)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.learn(learning_starts + E2E_WARMUP_STEPS)
    for _ in range(rounds):
        for name, model in models.items():
            start = clock()
            model.learn(chunk, reset_num_timesteps=False)
            times[name].append((clock() - start) / chunk)
    return times


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free interval for the median of the distribution ``values`` were drawn from: their k-th smallest
    and k-th largest, k the largest for which the two hold the median between them with probability ≥ ``level``
    (order statistics: 1 − 2 P(Binomial(n, ½) < k)), or the smallest and largest where no k reaches ``level``.
    Returns ``(low, high, coverage)``, the coverage being that probability (0 for a single value)."""
    if not values:
        raise ValueError("median_interval needs at least one value")
    ordered, n = sorted(values), len(values)

    def coverage(k: int) -> float:
        return max(0.0, 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n)

    k = 1
    while k < n - k and coverage(k + 1) >= level:
        k += 1
    return ordered[k - 1], ordered[n - k], coverage(k)


class RoundRatios:
    """Ratios of the models' median times, each with the interval (:func:`median_interval`) of its per-round ratios,
    the two models' chunks of one round having run back to back."""

    def __init__(self, times: dict[str, list[float]]) -> None:
        self.times = times
        self.median = {name: statistics.median(values) for name, values in times.items()}

    def __call__(self, numerator: str, denominator: str, digits: int = 2) -> str:
        """``numerator``'s median ÷ ``denominator``'s, as ``"1.90 [1.84, 1.97]"`` ("nan" where one is missing)."""
        if numerator not in self.times or denominator not in self.times:
            return "nan"
        low, high, _ = median_interval([a / b for a, b in zip(self.times[numerator], self.times[denominator])])
        return f"{self.median[numerator] / self.median[denominator]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def interval_words(rounds: int) -> str:
    """What a ratio's brackets are (:class:`RoundRatios`) for ``rounds`` rounds, for the tables' text."""
    low, _, coverage = median_interval(list(range(rounds)))  # the ranks 0..rounds-1: low is k - 1
    k = low + 1
    which = "smallest and largest" if k == 1 else f"{k}{_ordinal(k)} smallest and {k}{_ordinal(k)} largest"
    return (f"Each ratio is of the two medians; in brackets the {which} of its {rounds} per-round ratios, a "
            f"distribution-free interval for their median ({coverage:.0%} coverage)")


def _ordinal(n: int) -> str:
    return "th" if 10 < n % 100 < 14 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def sparse_share(model) -> str:
    """Which of the model's online layers run ``sparse``, as ``sparse / all`` weight counts."""
    layers = [m for name, m in model.policy.named_modules()
              if isinstance(m, SparseLinear) and "target" not in name]
    on_sparse = sum(m.in_features * m.out_features for m in layers if m.resolved_backend in ("sparse", "compact"))
    return f"{on_sparse / sum(m.in_features * m.out_features for m in layers):.0%}"


def e2e_tables(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
               learning_starts: int, seed: int, methods: tuple[str, ...] = ("rigl",)) -> list[str]:
    common = dict(learning_starts=learning_starts, seed=seed, device="cpu")
    rows, wide_rows, srigl_rows, fused_rows = [], [], [], []
    for algo in algos:
        models = build_models(algo, env_id, densities, width, common, srigl="srigl" in methods)
        ratio = RoundRatios(time_models(models, rounds, chunk, learning_starts))
        ms = {name: f"{seconds * 1e3:.2f}" for name, seconds in ratio.median.items()}
        for density in densities:
            auto, masked, matched = (f"{kind} {density}" for kind in ("auto", "masked", "matched"))
            rows.append(f"| {algo} | {density:g} | {ms[auto]} | {ms[masked]} | {ms['mlp']} | {ms[matched]} "
                        f"| {ms.get('sbx', 'nan')} | {ratio('mlp', auto)} | {ratio(auto, matched)} "
                        f"| {ratio('sbx', auto)} | {ratio(auto, masked)} | {sparse_share(models[auto])} |")
            print(rows[-1], flush=True)
            srigl = f"srigl {density}"
            if srigl in ms:
                srigl_rows.append(f"| {algo} | {density:g} | {ms[auto]} | {ms[masked]} | {ms[srigl]} "
                                  f"| {ratio(srigl, auto)} | {ratio(srigl, masked)} | {sparse_share(models[srigl])} |")
                print(srigl_rows[-1], flush=True)
        if "dense" in ms:
            fused_rows.append(f"| {algo} | {ms['mlp']} | {ms['dense']} | {ratio('mlp', 'dense')} "
                              + "".join(f"| {ratio('dense', f'auto {d}')} " for d in densities) + "|")
            print(fused_rows[-1], flush=True)
        wide = models.get("wide")
        if wide is None:
            continue
        wide_rows.append(f"| {algo} | {[w * width for w in NET_ARCH[algo]]} | {wide.policy.actor.sparsity.density:.3f} "
                         f"| {ms['wide']} | {ms['mlp']} | {ratio('wide', 'mlp')} | {sparse_share(wide)} |")
        print(wide_rows[-1], flush=True)
        del models
    return [f"{env_id}, seed {seed}: median {clock_words()} ms per environment step over {rounds} alternating "
            f"chunks of {chunk} "
            f"steps per model, after {learning_starts} learning-starts steps and {E2E_WARMUP_STEPS} untimed training "
            "steps; one gradient step per environment "
            "step, RigL topology updates every 1000 steps included. \"sparse layers\" is the share of the "
            "online weights whose layers `auto` runs on a sparse backend (compact where the kernels are built). "
            "SBX is the JAX SB3's dense agent of the same widths, on as many threads, in the same process, "
            f"pinned to the same cores (all its threads on them). {interval_words(rounds)}.", "",
            "| algo | density | auto ms | masked ms | MlpPolicy ms | matched dense ms | SBX ms | speed-up vs MlpPolicy "
            "| auto ÷ matched | speed-up vs SBX | auto ÷ masked | sparse layers |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, *wide_table(width, wide_rows),
            *srigl_table(srigl_rows), *fused_table(densities, fused_rows)]


def fused_table(densities: list[float], fused_rows: list[str]) -> list[str]:
    """What the fused BatchRenorm gives and what sparsity gives (none without a BatchRenorm algorithm)."""
    if not fused_rows:
        return []
    return ["", "The speed-up over `MlpPolicy` split in two: \"dense, fused\" is the sparse policy at density 1 (dense "
            "layers, `FusedBatchRenorm1d`); MlpPolicy ÷ dense is what the fused BatchRenorm gives, dense ÷ auto what "
            "sparsity gives on top:", "",
            "| algo | MlpPolicy ms | dense, fused ms | MlpPolicy ÷ dense | "
            + " | ".join(f"dense ÷ auto {d:g}" for d in densities) + " |",
            "|---|---|---|---|" + "---|" * len(densities), *fused_rows]


def wide_table(width: int, wide_rows: list[str]) -> list[str]:
    """The wide network's table (none when no algorithm had one)."""
    if not wide_rows:
        return []
    return ["", f"Wide network: every hidden width ×{width}, density set so each network keeps the weight count of "
            "its dense version at width ×1 (`iso_params`), backend `auto`:", "",
            "| algo | actor widths | actor density | wide ms | MlpPolicy ms | wide ÷ MlpPolicy | sparse layers |",
            "|---|---|---|---|---|---|---|", *wide_rows]


def srigl_table(srigl_rows: list[str]) -> list[str]:
    """The SRigL table (none without ``--methods srigl``)."""
    if not srigl_rows:
        return []
    return ["", "SRigL (`method=\"srigl\"`: constant fan-in, neuron ablation; RigL's ΔT and drop fraction) beside "
            "RigL, timed in the same alternating chunks, both on `auto`: SRigL's layers take the compact layout "
            "by the same rule as RigL's (an update whose neuron ablation changes a layer's count gives the layer a "
            "new `values` parameter; `docs/architecture.md`, SRigL). \"sparse layers (srigl)\" is the share of its "
            "online weights on sparse kernels (`compact` or `sparse`).", "",
            "| algo | density | rigl auto ms | rigl masked ms | srigl ms | srigl ÷ rigl auto | srigl ÷ rigl masked "
            "| sparse layers (srigl) |", "|---|---|---|---|---|---|---|---|", *srigl_rows]


MEMORY_MODELS = {
    "MlpPolicy": {}, "sparse 0.1 auto": dict(density=0.1), "sparse 0.1 masked": dict(density=0.1, backend="masked"),
    "wide ×4 iso auto": dict(width_multiplier=4, iso_params=True),
    "wide ×16 iso auto": dict(width_multiplier=16, iso_params=True),
    "wide ×16 iso masked": dict(width_multiplier=16, iso_params=True, backend="masked"),
}
"""The memory table's SAC models (policy_kwargs of ``SparseSACPolicy``; ``MlpPolicy`` is SB3's own)."""


def peak_rss_mb(name: str, env_id: str, steps: int, interval: int) -> float:
    """Build one model of :data:`MEMORY_MODELS` and train ``steps`` gradient steps in this process (topology updates
    every ``interval`` steps); its peak RSS."""
    import resource

    from stable_baselines3 import SAC

    from sparse_rl import SparseSACPolicy

    kwargs = MEMORY_MODELS[name]
    common = dict(learning_starts=100, buffer_size=10_000, seed=0, device="cpu")
    model = (SAC("MlpPolicy", env_id, **common) if not kwargs else
             SAC(SparseSACPolicy, env_id, **common, policy_kwargs=dict(update_end=None, update_interval=interval,
                                                                        **kwargs)))
    model.learn(100 + steps)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_tables(env_id: str, steps: int) -> list[str]:
    """Peak RSS of each memory model, each in a fresh process, without and with topology updates in the steps."""
    rows, base = [], {}
    for name in MEMORY_MODELS:
        cells = []
        for interval in (1000, 100):
            result = subprocess.run([sys.executable, __file__, "--memory-of", name, "--env", env_id, "--chunk",
                                     str(steps), "--update-interval", str(interval)],
                                    capture_output=True, text=True, check=True)
            mb = float(result.stdout.strip().splitlines()[-1])
            base.setdefault(interval, mb)
            cells.append(f"{mb:.0f} | {mb / base[interval]:.2f}")
        rows.append(f"| {name} | {' | '.join(cells)} |")
        print(rows[-1], flush=True)
    return [f"SAC on {env_id}: peak resident memory (`ru_maxrss`) of a fresh process that builds the model (replay "
            f"buffer 10,000 rows) and trains {steps} gradient steps after 100 random ones, with RigL's default "
            "ΔT = 1000 (no topology update in these steps) and with ΔT = 100 (updates, which score with the dense "
            "weight and gradient).", "",
            "| model | ΔT 1000: peak RSS MB | ÷ MlpPolicy | ΔT 100: peak RSS MB | ÷ MlpPolicy |",
            "|---|---|---|---|---|", *rows]


def time_breakdown(model, steps: int) -> tuple[float, dict[str, float]]:
    """CPU seconds per gradient step of ``model.train`` in all, and in each kind of module (forward, backward)."""
    spent: dict[str, float] = {}

    def timer(kind: str, start_attr: str):
        def start(module, *_):
            setattr(module, start_attr, clock())

        def stop(module, *_):
            spent[kind] = spent.get(kind, 0.0) + clock() - getattr(module, start_attr)
        return start, stop

    handles = []
    linears = [m for m in model.policy.modules() if isinstance(m, torch.nn.Linear)]
    fed, fed_by = {m.in_features for m in linears}, {m.out_features for m in linears}
    for module in model.policy.modules():
        if isinstance(module, torch.nn.Linear):  # hidden: reads and feeds widths that other linear layers have
            hidden = module.in_features in fed_by and module.out_features in fed
            kind = "hidden" if hidden else "in/out"
        elif isinstance(module, (torch.nn.ReLU, BatchRenorm)):
            kind = "ReLU" if isinstance(module, torch.nn.ReLU) else "BatchRenorm"
        else:
            continue
        forward_start, forward_stop = timer(f"{kind} fwd", "_fwd_start")
        backward_start, backward_stop = timer(f"{kind} bwd", "_bwd_start")
        handles += [module.register_forward_pre_hook(forward_start), module.register_forward_hook(forward_stop),
                    module.register_full_backward_pre_hook(backward_start),
                    module.register_full_backward_hook(backward_stop)]
    total = train_seconds(model, steps)
    for handle in handles:
        handle.remove()
    return total, {kind: seconds / steps for kind, seconds in spent.items()}


def train_seconds(model, steps: int) -> float:
    """Seconds (:func:`clock`) per gradient step of ``model.train`` over ``steps`` steps."""
    start = clock()
    model.train(gradient_steps=steps, batch_size=model.batch_size)
    return (clock() - start) / steps


def breakdown_tables(algos: list[str], env_id: str, densities: list[float], width: int, chunk: int,
                     learning_starts: int, seed: int) -> list[str]:
    common = dict(learning_starts=learning_starts, seed=seed, device="cpu")
    labels = ({"mlp": "MlpPolicy", "wide": f"wide ×{width}", "dense": "dense, fused BatchRenorm"}
              | {f"auto {d}": f"sparse {d:g}" for d in densities})
    kinds = [f"{kind} {part}" for kind in ("hidden", "in/out", "ReLU", "BatchRenorm") for part in ("fwd", "bwd")]
    rows = []
    for algo in algos:
        models = build_models(algo, env_id, densities, width, common, backends=("auto",), matched=False, peer=False)
        for name, model in models.items():
            warm_up(model, learning_starts)
            plain = train_seconds(model, chunk)
            total, spent = time_breakdown(model, chunk)
            rest = total - sum(spent.values())
            rows.append(f"| {algo} | {labels[name]} | {plain * 1e3:.2f} | {total * 1e3:.2f} | " + " | ".join(
                f"{spent.get(kind, 0.0) * 1e3:.2f} ({spent.get(kind, 0.0) / total:.0%})" for kind in kinds)
                + f" | {rest * 1e3:.2f} ({rest / total:.0%}) |")
            print(rows[-1], flush=True)
    return [f"{', '.join(algos)} on {env_id}, seed {seed}: "
            f"{clock_words()} ms per gradient step of `train()` (batch 256), "
            f"{chunk} steps after {learning_starts} learning-starts steps, without hooks and then with module hooks "
            "that time the forward and backward of each kind of module (ms, and share of the hooked step). The hooks "
            "add overhead of their own to every module call, so the hooked step is the longer, and a kind's time "
            "includes its hooks' share. "
            "\"hidden\" are the hidden-to-hidden layers, \"in/out\" the input and output layers, \"BatchRenorm\" "
            "CrossQ's normalisation layers, \"rest\" everything else. The hooks also undo the ReLU fusion (a "
            "hooked layer's output loses its tag), so the ReLUs here cost what unfused ones do, and run each "
            "compact layer as its own autograd node (a hooked layer is never chained).", "",
            "| algo | model | step ms | hooked step ms | " + " | ".join(kinds) + " | rest |",
            "|---|---|---|---|" + "---|" * (len(kinds) + 1), *rows]


def call_kind(name: str, call: inspect.BoundArguments) -> tuple[str, str, str]:
    """A compact kernel call's layer (in×out), density and what it computes, from the wrapper's arguments."""
    structure = call.arguments["structure"]
    rows, cols = structure.shape
    layer, density = f"{cols}×{rows}", f"{structure.nnz / (rows * cols):.3g}"
    if name == "layer_forward":
        return layer, density, "forward"
    if name == "layer_forward_into_head":
        return layer, density, "forward, head inside"
    call.apply_defaults()
    wanted = [part for part, wants in zip(("input", "values", "bias"), call.arguments["wants"]) if wants]
    input_from = call.arguments["input_from"]
    return (layer, density, f"backward: {', '.join(wanted) or 'none'}"
            + (f" from feature {input_from}" if input_from else "")
            + (", head inside" if call.arguments["head"] is not None else ""))


@contextmanager
def timed_kernel_calls(spent: dict[tuple[str, str, str], list[float]]) -> Iterator[None]:
    """Inside, every call of the compact kernels' wrappers (``kernels.layer_forward``, ``layer_forward_into_head``,
    ``layer_backward``) appends its wall-clock seconds to ``spent`` under :func:`call_kind`."""
    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(function)

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = function(*args, **kwargs)
            seconds = time.perf_counter() - start
            spent.setdefault(call_kind(name, signature.bind(*args, **kwargs)), []).append(seconds)
            return result
        return call

    names = ("layer_forward", "layer_forward_into_head", "layer_backward")
    with patch.multiple(kernels, **{name: timed(name, getattr(kernels, name)) for name in names}):
        yield


def kernel_call_tables(algos: list[str], env_id: str, densities: list[float], width: int, chunk: int,
                       learning_starts: int, seed: int) -> list[str]:
    """Where the compact kernels' share of a ``train()`` step goes: each kind of call (layer, what it computes), its
    calls and time per step, timed around the calls inside ``train()`` (not in a loop of their own: inside a step
    their data comes from wherever the step left it)."""
    if not kernels.compiled():
        return ["The compiled kernels are not built here: no compact kernel calls to time."]
    common = dict(learning_starts=learning_starts, seed=seed, device="cpu")
    tables = []
    for algo in algos:
        for name, model in sparse_models(algo, env_id, densities, width, common).items():
            warm_up(model, learning_starts)
            plain = train_seconds(model, chunk)
            spent: dict[tuple[str, str, str], list[float]] = {}
            with timed_kernel_calls(spent):
                step = train_seconds(model, chunk)
            total = sum(sum(times) for times in spent.values()) / chunk
            label = name if name != "wide" else f"wide ×{width}"
            rows = [f"| {layer} | {density} | {what} | {len(times) / chunk:.2g} | "
                    f"{statistics.median(times) * 1e6:.0f} | {sum(times) / chunk * 1e3:.3f} | "
                    f"{sum(times) / chunk / plain:.0%} |"
                    for (layer, density, what), times in sorted(spent.items(), key=lambda item: -sum(item[1]))]
            tables += [f"{algo}, {label}: `train()` step {plain * 1e3:.2f} ms ({step * 1e3:.2f} ms with the calls "
                       f"timed), of which the compact kernel calls {total * 1e3:.2f} ms ({total / plain:.0%}):", "",
                       "| layer (in×out) | density | call | calls per step | µs per call (median) | ms per step "
                       "| share of the step |", "|---|---|---|---|---|---|---|", *rows, ""]
            print("\n".join(tables[-len(rows) - 5:]), flush=True)
    return [f"{', '.join(algos)} on {env_id}, seed {seed}: {clock_words()} ms per gradient step of `train()` (batch "
            f"256) over {chunk} steps after {learning_starts} learning-starts steps, each sparse model (RigL on "
            "`auto`) as built, then the same again with each call of the compact kernels' Python wrappers "
            "(`kernels.layer_forward`, `layer_forward_into_head`, `layer_backward`) timed (wall-clock, the "
            "wrappers' Python included) by its layer, density and what it computes (\"head inside\": a critic's "
            "one-output Q head run inside the layer's own passes; \"from feature n\": the input gradient of the "
            "actions' features alone). Shares are of the step untimed (timing each call adds its own cost around "
            "the calls, not inside them). The rest of a step is autograd, SB3's `train()` and the other layers' "
            "kernels (dense, ReLU, optimizer).", "", *tables[:-1]]


def unfuse_relus(model) -> None:
    """Put plain ``nn.ReLU`` modules back where :func:`~sparse_rl.relu_fusion.fuse_relus` fused them."""
    for sequence in model.policy.modules():
        if isinstance(sequence, nn.Sequential):
            for name, module in sequence.named_children():
                if isinstance(module, RectifiedReLU):
                    setattr(sequence, name, nn.ReLU())


def warm_up(model, learning_starts: int) -> None:
    """Collect ``learning_starts`` steps and take 10 untimed gradient steps (optimizer state, kernel structures)."""
    model.learn(learning_starts + 1)
    model.train(gradient_steps=10, batch_size=model.batch_size)


def train_ms(pair: dict, rounds: int, chunk: int, learning_starts: int,
             contexts: dict[str, Callable[[], ContextManager]] | None = None) -> RoundRatios:
    """ms per gradient step of ``train()`` (batch 256) of each model of ``pair`` in each of ``rounds`` alternating
    chunks of ``chunk`` steps, after ``learning_starts`` collected steps and 10 untimed gradient steps (medians and
    ratios through the returned :class:`RoundRatios`); each model's steps run inside its ``contexts`` entry, if any."""
    contexts = contexts or {}
    times: dict[str, list[float]] = {kind: [] for kind in pair}
    warmed: list = []
    for kind, model in pair.items():
        if any(model is other for other in warmed):  # one model stepped two ways (stepped_twin_table)
            continue
        warmed.append(model)
        with contexts.get(kind, nullcontext)():
            warm_up(model, learning_starts)
    for _ in range(rounds):
        for kind, model in pair.items():
            with contexts.get(kind, nullcontext)():
                times[kind].append(train_seconds(model, chunk) * 1e3)
    return RoundRatios(times)


def twin_rows(algo: str, models: dict, twins: dict, kinds: tuple[str, str], width: int, rounds: int, chunk: int,
              learning_starts: int, contexts: dict[str, Callable[[], ContextManager]] | None = None) -> list[str]:
    """One table row per model: ``train_ms`` of it (the first of ``kinds``) and of its twin (the second), the
    second's ms, the first's ms and their ratio (with its per-round interval, :class:`RoundRatios`)."""
    rows = []
    for name in models:
        ratio = train_ms({kinds[0]: models[name], kinds[1]: twins[name]}, rounds, chunk, learning_starts, contexts)
        label = f"wide ×{width}" if name == "wide" else name
        base, changed = ratio.median[kinds[1]], ratio.median[kinds[0]]
        rows.append(f"| {algo} | {label} | {base:.2f} | {changed:.2f} | {ratio(kinds[1], kinds[0], digits=3)} |")
        print(rows[-1], flush=True)
    return rows


def relu_fusion_tables(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
                       learning_starts: int, seed: int) -> list[str]:
    """ms per gradient step of ``train()`` of each sparse model with its ReLUs fused (as built) and unfused (plain
    ``nn.ReLU`` modules put back in a twin built from the same seed), timed alternately."""
    common = dict(learning_starts=learning_starts, seed=seed, device="cpu")
    rows = []
    for algo in algos:
        fused = sparse_models(algo, env_id, densities, width, common)
        unfused = sparse_models(algo, env_id, densities, width, common)
        for model in unfused.values():
            unfuse_relus(model)
        rows += twin_rows(algo, fused, unfused, ("fused", "unfused"), width, rounds, chunk, learning_starts)
    return [f"{', '.join(algos)} on {env_id}, seed {seed}: "
            f"median {clock_words()} ms per gradient step of `train()` (batch 256) "
            f"over {rounds} alternating chunks of {chunk} steps, after {learning_starts} learning-starts steps, each "
            "sparse model with its ReLUs fused into the compact layers before them (as built) and a twin with plain "
            "`nn.ReLU` modules put back:", "",
            "| algo | model | unfused ms | fused ms | unfused ÷ fused |", "|---|---|---|---|---|",
            *rows, "", f"{interval_words(rounds)}."]


@contextmanager
def critic_weight_grads_in_actor_loss() -> Iterator[None]:
    """The sparse critics compute their weight gradients in the actor's loss too, as SB3's critics do."""
    original = actor_loss.called_from_actor_loss
    actor_loss.called_from_actor_loss = lambda actions: False
    try:
        yield
    finally:
        actor_loss.called_from_actor_loss = original


def actor_loss_tables(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
                      learning_starts: int, seed: int) -> list[str]:
    """ms per gradient step of ``train()`` of each sparse model (and of the sparse policy at density 1.0) as
    built (no critic weight gradients in the actor's loss) and of a same-seed twin that computes them, timed
    alternately."""
    common = dict(learning_starts=learning_starts, seed=seed, device="cpu")
    rows = []
    for algo in algos:
        frozen = sparse_models(algo, env_id, [*densities, 1.0], width, common)
        every = sparse_models(algo, env_id, [*densities, 1.0], width, common)
        rows += twin_rows(algo, frozen, every, ("frozen", "every"), width, rounds, chunk, learning_starts,
                          {"every": critic_weight_grads_in_actor_loss})
    return [f"{', '.join(algos)} on {env_id}, seed {seed}: "
            f"median {clock_words()} ms per gradient step of `train()` (batch 256) "
            f"over {rounds} alternating chunks of {chunk} steps, after {learning_starts} learning-starts steps, each "
            "sparse model (RigL on `auto`; `sparse 1.0` is the sparse policy at density 1, dense layers) as built, "
            "whose critic computes no weight gradients in the actor's loss (`sparse_rl.sb3.actor_loss`), and a "
            "same-seed twin that computes them, as SB3's critics do:", "",
            "| algo | model | every gradient ms | frozen ms | every ÷ frozen |", "|---|---|---|---|---|",
            *rows, "", f"{interval_words(rounds)}."]


class TorchAdam(torch.optim.Adam):
    """torch's Adam class itself, under a name the sparse policies do not replace with ``LeanAdam``."""


def optimizer_tables(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
                     learning_starts: int, seed: int) -> list[str]:
    """ms per gradient step of ``train()`` of each sparse model (and of the sparse policy at density 1.0) on
    ``LeanAdam``, as built, and of a same-seed twin on torch's fused Adam class, timed alternately."""
    from sparse_rl.sb3.contrib_policies import CROSSQ_ADAM_BETAS

    common = dict(learning_starts=learning_starts, seed=seed, device="cpu")
    rows = []
    for algo in algos:
        settings = {"fused": True, **({"betas": CROSSQ_ADAM_BETAS} if algo == "crossq" else {})}
        lean = sparse_models(algo, env_id, [*densities, 1.0], width, common)
        plain = sparse_models(algo, env_id, [*densities, 1.0], width, common, optimizer_class=TorchAdam,
                              optimizer_kwargs=settings)
        rows += twin_rows(algo, lean, plain, ("lean", "torch"), width, rounds, chunk, learning_starts)
    return [f"{', '.join(algos)} on {env_id}, seed {seed}: "
            f"median {clock_words()} ms per gradient step of `train()` (batch 256) "
            f"over {rounds} alternating chunks of {chunk} steps, after {learning_starts} learning-starts steps, each "
            "sparse model (RigL on `auto`; `sparse 1.0` is the sparse policy at density 1, dense layers) on the "
            "optimizer the policies build, `sparse_rl.optim.LeanAdam`, and a same-seed twin on torch's fused Adam "
            "class (same floats):", "",
            "| algo | model | torch Adam ms | LeanAdam ms | torch ÷ lean |", "|---|---|---|---|---|",
            *rows, "", f"{interval_words(rounds)}."]


def one_node_per_layer() -> ContextManager:
    """Steps taken inside run every compact layer as its own autograd node (no runs, :mod:`compact_chain`)."""
    return patch.object(compact_chain, "run_length", lambda modules, start, x: 0)


def stepped_twin_table(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
                       learning_starts: int, seed: int, twin_steps: Callable[[], ContextManager],
                       kinds: tuple[str, str], built: str, stepped: str) -> list[str]:
    """A table of :func:`twin_rows` of each sparse model as built (``kinds[1]``; ``built`` says what that does), its
    chunks stepped alternately inside ``twin_steps`` (``kinds[0]``, ``stepped`` says how; first in each round) and
    as built. One model, not a same-seed twin: these contexts change how a step is computed, not its floats, so both
    ways train the same model, while two instances of one model differ in `train()` time on their own (quiet Xeon,
    same-seed twins stepped the same way: SAC 0.994×, TQC 0.973× [0.938, 1.069]; a change that measured 1.00× on one
    TQC model stepped both ways measured 1.02-1.04× on twins)."""
    common = dict(learning_starts=learning_starts, seed=seed, device="cpu")
    rows = []
    for algo in algos:
        models = sparse_models(algo, env_id, densities, width, common)
        rows += twin_rows(algo, models, models, kinds, width, rounds, chunk, learning_starts, {kinds[0]: twin_steps})
    return [f"{', '.join(algos)} on {env_id}, seed {seed}: "
            f"median {clock_words()} ms per gradient step of `train()` (batch 256) "
            f"over {rounds} alternating chunks of {chunk} steps, after {learning_starts} learning-starts steps, each "
            f"sparse model (RigL on `auto`) as built, {built}, its chunks stepped alternately with {stepped} (first in "
            "each round) and as built (the same floats either way, so one model):", "",
            f"| algo | model | {kinds[1]} ms | {kinds[0]} ms | {kinds[1]} ÷ {kinds[0]} |",
            "|---|---|---|---|---|", *rows, "", f"{interval_words(rounds)}."]


def chain_tables(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
                 learning_starts: int, seed: int) -> list[str]:
    """ms per gradient step of ``train()`` of each sparse model as built (runs of compact layers as one node) and
    stepped with one node per layer, timed alternately."""
    return stepped_twin_table(algos, env_id, densities, width, rounds, chunk, learning_starts, seed,
                              one_node_per_layer, ("one node per layer", "chained"),
                              "whose compact layers in a row inside one `nn.Sequential` (the critics' Q networks, the "
                              "actor's body) run as one autograd node (`sparse_rl.backends.compact_chain`)",
                              "one node per layer")


def heads_apart() -> ContextManager:
    """Steps taken inside run a run's one-output last layer as its own layer of the run (``compact_chain.fuses_head``
    false), not inside the layer before it."""
    return patch.object(compact_chain, "fuses_head", lambda structures, relus: False)


def head_fusion_tables(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
                       learning_starts: int, seed: int) -> list[str]:
    """ms per gradient step of ``train()`` of each sparse model as built (the critics' one-output heads inside the
    layer before them) and stepped with the heads apart, timed alternately."""
    return stepped_twin_table(algos, env_id, densities, width, rounds, chunk, learning_starts, seed, heads_apart,
                              ("head apart", "head fused"),
                              "whose critics' Q networks run their one-output last layer inside the layer before it "
                              "(its forward in that layer's pass over its output rows, its input gradient made row by "
                              "row in that layer's backward: `compact_chain.fuses_head`)",
                              "that layer apart, still in the same autograd node,")


def gradients_in_two_loops() -> ContextManager:
    """Steps taken inside compute a compact layer's input and weight gradients in two loops (the weight gradient's
    over ``W``, the input gradient's over ``Wᵀ``), not in one pass over ``Wᵀ``: the same floats."""
    return kernels.setting("one_pass_grads", False)


def one_pass_tables(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
                    learning_starts: int, seed: int) -> list[str]:
    """ms per gradient step of ``train()`` of each sparse model as built (a hidden layer's input and weight
    gradients in one pass over ``Wᵀ``) and stepped with them in two loops, timed alternately."""
    if not kernels.compiled():
        return ["The compiled kernels are not built here: no one-pass gradients to compare."]
    return stepped_twin_table(algos, env_id, densities, width, rounds, chunk, learning_starts, seed,
                              gradients_in_two_loops, ("two loops", "one pass"),
                              "whose compact layers that want both their input and their weight gradient compute "
                              "them in one pass over `Wᵀ` (`grads_t` in `kernels.c`)",
                              "the two gradients in two loops")


@contextmanager
def narrow_layers_on_the_hidden_rule() -> Iterator[None]:
    """Models built inside lay narrow input layers out by the hidden layers' density limit (masked at ERK's, and
    dense ones masked where they feed a compact layer too)."""
    with patch.object(auto, "COMPACT_NARROW_MAX_DENSITY", auto.COMPACT_MAX_DENSITY), \
            patch.object(auto, "COMPACT_CHAINED_INPUT_MAX_DENSITY", auto.COMPACT_MAX_DENSITY):
        yield


def input_layer_tables(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
                       learning_starts: int, seed: int) -> list[str]:
    """ms per gradient step of ``train()`` of each sparse model as built (compact narrow input layers where
    ``auto`` picks them) and of a same-seed twin whose narrow input layers stay masked, timed alternately."""
    rows, layouts = layout_twin_rows(algos, env_id, densities, width, rounds, chunk, learning_starts, seed,
                                     narrow_layers_on_the_hidden_rule, masked.is_input_layer,
                                     ("masked inputs", "compact inputs"))
    return [f"{', '.join(algos)} on {env_id}, seed {seed}: "
            f"median {clock_words()} ms per gradient step of `train()` (batch 256) "
            f"over {rounds} alternating chunks of {chunk} steps, after {learning_starts} learning-starts steps, each "
            f"sparse model (RigL on `auto`) as built, whose input layers (≤ {masked.INPUT_LAYER_MAX_IN} inputs, "
            f"≥ {masked.INPUT_LAYER_MIN_FANOUT}× as many outputs) "
            f"`auto` lays out compactly up to density {auto.COMPACT_NARROW_MAX_DENSITY:g}, and up to "
            f"{auto.COMPACT_CHAINED_INPUT_MAX_DENSITY:g} where one feeds a compact layer straight (the two then run "
            "as one autograd node), and a same-seed twin that "
            f"keeps them masked (the hidden layers' limit, {auto.COMPACT_MAX_DENSITY:g}); the twin runs first in each "
            "round. The "
            "input layers as built (in×out at density: backend):", "", *layouts, "",
            "| algo | model | compact inputs ms | masked inputs ms | compact ÷ masked |", "|---|---|---|---|---|",
            *rows, "", f"{interval_words(rounds)}."]


def layout_twin_rows(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
                     learning_starts: int, seed: int, twin_rule: Callable[[], ContextManager],
                     chosen: Callable[[int, int], bool], kinds: tuple[str, str]) -> tuple[list[str], list[str]]:
    """Table rows of :func:`twin_rows` for each sparse model as built against a same-seed twin built under
    ``twin_rule`` (the twin, ``kinds[0]``, runs first in each round), and the built models' layers of the shapes
    ``chosen`` takes (:func:`layer_layouts`)."""
    common = dict(learning_starts=learning_starts, seed=seed, device="cpu")
    rows, layouts = [], []
    for algo in algos:
        with twin_rule():
            twins = sparse_models(algo, env_id, densities, width, common)
        built = sparse_models(algo, env_id, densities, width, common)
        layouts += layer_layouts(algo, built, chosen)
        rows += twin_rows(algo, twins, built, kinds, width, rounds, chunk, learning_starts)
    return rows, layouts


def layer_layouts(algo: str, models: dict, chosen: Callable[[int, int], bool]) -> list[str]:
    """One line per model: its layers whose shape ``chosen`` takes, as in×out at density: backend."""
    lines = []
    for name, model in models.items():
        layers = [f"{layer.in_features}×{layer.out_features} at {layer.density:.2f}: {layer.resolved_backend}"
                  for layer in model.policy.modules()
                  if isinstance(layer, SparseLinear) and chosen(layer.in_features, layer.out_features)]
        lines.append(f"- {algo} {name}: " + ", ".join(dict.fromkeys(layers)))
    return lines


def heads_stay_masked() -> ContextManager:
    """Models built inside keep their narrow output layers (``auto.is_narrow_output_layer``) masked, as ``auto``
    did before it laid them out compactly."""
    return patch.object(auto, "is_narrow_output_layer", lambda in_features, out_features: False)


def output_layer_tables(algos: list[str], env_id: str, densities: list[float], width: int, rounds: int, chunk: int,
                        learning_starts: int, seed: int) -> list[str]:
    """ms per gradient step of ``train()`` of each sparse model as built (compact narrow output layers) and of a
    same-seed twin whose narrow output layers stay masked, timed alternately."""
    rows, layouts = layout_twin_rows(algos, env_id, densities, width, rounds, chunk, learning_starts, seed,
                                     heads_stay_masked, auto.is_narrow_output_layer, ("masked heads", "compact heads"))
    return [f"{', '.join(algos)} on {env_id}, seed {seed}: "
            f"median {clock_words()} ms per gradient step of `train()` (batch 256) "
            f"over {rounds} alternating chunks of {chunk} steps, after {learning_starts} learning-starts steps, each "
            f"sparse model (RigL on `auto`) as built, whose output layers (≤ {auto.NARROW_OUTPUT_MAX_OUT} outputs "
            f"from ≥ {auto.NARROW_OUTPUT_MIN_IN} inputs: the actor's and the critics' heads) `auto` lays out "
            "compactly at any density, and a same-seed twin that keeps them masked; the twin runs first in each "
            "round. The output layers as built (in×out at density: backend):", "", *layouts, "",
            "| algo | model | compact heads ms | masked heads ms | compact ÷ masked |", "|---|---|---|---|---|",
            *rows, "", f"{interval_words(rounds)}."]


TWIN_TABLES: dict[str, Callable[..., list[str]]] = {
    "relu-fusion": relu_fusion_tables, "actor-loss": actor_loss_tables, "optimizer": optimizer_tables,
    "input-layers": input_layer_tables, "output-layers": output_layer_tables, "chains": chain_tables,
    "head-fusion": head_fusion_tables, "one-pass": one_pass_tables}
"""The parts that time ``train()`` of each sparse model two ways, each table function taking (algos, env,
densities, width multiplier, rounds, chunk, learning starts, seed)."""


BATCH_RENORM_SHAPES = ((512, 23, True, False), (512, 1024, True, False), (512, 1024, True, True),
                       (256, 1024, False, True), (256, 17, True, False), (256, 256, True, True))
"""(batch, features, training, feature-major) of CrossQ's BatchRenorm calls in one ``train()`` step on
HalfCheetah-v4: the critics' joint batch (input and hidden layers, training mode), the critics under the actor loss
(eval mode), the actor (training mode). A hidden layer's input is feature-major after a compact layer, row-major
after a dense one."""


def batch_renorm_tables(repeats: int) -> list[str]:
    """Median µs of forward + backward of sb3-contrib's BatchRenorm1d and of FusedBatchRenorm1d, timed alternately."""
    from sb3_contrib.common.torch_layers import BatchRenorm1d

    from sparse_rl.sb3.batch_renorm import FusedBatchRenorm1d

    rows = []
    for batch, features, training, feature_major in BATCH_RENORM_SHAPES:
        layers = {"sb3-contrib": BatchRenorm1d(features), "fused": FusedBatchRenorm1d(features)}
        x = torch.randn(batch, features).relu_()
        grad = torch.randn(batch, features)
        if feature_major:
            x, grad = x.t().contiguous().t(), grad.t().contiguous().t()
        x.requires_grad_()
        times: dict[str, list[float]] = {name: [] for name in layers}
        for _ in range(repeats + 3):
            for name, layer in layers.items():
                layer.train(training)
                start = time.perf_counter()
                layer(x).backward(grad)
                times[name].append(time.perf_counter() - start)
        plain, fused = (statistics.median(times[name][3:]) for name in layers)
        rows.append(f"| {batch}×{features} | {'train' if training else 'eval'} "
                    f"| {'feature-major' if feature_major else 'row-major'} | {plain * 1e6:.0f} | {fused * 1e6:.0f} "
                    f"| {plain / fused:.2f} |")
        print(rows[-1], flush=True)
    return [f"Median µs (wall-clock, {repeats} repeats after 3 warm-up ones, the two layers timed alternately) of one "
            "forward and backward (input gradient and parameter gradients) of a BatchRenorm at the shapes CrossQ's "
            "`train()` step gives it on HalfCheetah-v4 (critics' joint batch of 512, the critics under the actor loss "
            "in eval mode, the actor's batch of 256), input `relu(N(0, 1))` stored row-major (after a dense layer) "
            "or feature-major (after a compact one), its gradient stored alike. "
            f"Fused: {'compiled kernels, ' + kernels.simd_level() if kernels.compiled() else 'torch ops'}.", "",
            "| batch×features | mode | input | sb3-contrib µs | fused µs | speed-up |", "|---|---|---|---|---|---|",
            *rows]


def write_section(path: Path, part: str, lines: list[str]) -> str:
    """Replace ``part``'s section of the results file (keeping the other's); returns the new text."""
    sections = {}
    if path.is_file():
        current = None
        for line in path.read_text().splitlines():
            if line in SECTIONS.values():
                current = line
                sections[current] = []
            elif current is not None:
                sections[current].append(line)
    sections[SECTIONS[part]] = ["", *lines]
    blocks = ["\n".join([header, *sections[header]]).rstrip() for header in SECTIONS.values() if header in sections]
    text = "\n\n".join(blocks) + "\n"  # one blank line between sections
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def pin_to_cores(count: int) -> str:
    """Pin this process to the first ``count`` CPUs it may run on, before any model starts a thread, so that every
    thread it starts later (torch's, the kernels', SBX's XLA threads) shares those cores; in words, for the header.

    SBX computes on XLA's threads while Python's waits: unpinned on two cores, its CPU time per environment step
    counted both cores' (7.9 ms against 6.5 ms pinned to one, SAC, quiet Intel Xeon), so "one core" is held here."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cores = sorted(os.sched_getaffinity(0))[:count]
    os.sched_setaffinity(0, cores)
    return f"pinned to CPU {', '.join(map(str, cores))}"


def thread_count() -> str:
    """torch's intra-op threads, in words ("1 torch thread", "2 torch threads")."""
    threads = torch.get_num_threads()
    return f"{threads} torch thread{'s' if threads > 1 else ''}"


def code_version() -> str:
    """The commit the benchmark runs (and whether tracked files differ from it), named in every table's header so that
    a results file holding sections of different code shows it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit, changes = (subprocess.run(["git", *command], cwd=root, capture_output=True, text=True,
                                          check=True).stdout.strip()
                           for command in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain",
                                                                              "--untracked-files=no"]))
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"{commit} with uncommitted changes" if changes else commit


def auto_rule_text() -> str:
    """What ``auto`` does on this machine: the constant compact rule where the kernels are built, else the MKL table."""
    rule, source = auto_rule()
    origin = "the built-in" if source == "built-in" else "this machine's calibrated"
    table = (f"{origin} MKL table (sparse for layers "
             + ", ".join(f"≥ {weights:,} weights at density ≤ {density:g}" for weights, density in rule) + ")")
    if not kernels.compiled():
        return f"no compiled kernels, so {table}"
    return (f"compact for a layer of a fixed-count method with ≥ {auto.COMPACT_MIN_WEIGHTS:,} weights at density ≤ "
            f"{auto.COMPACT_MAX_DENSITY:g} (≤ {auto.COMPACT_NARROW_MAX_DENSITY:g} with ≤ "
            f"{masked.INPUT_LAYER_MAX_IN} inputs and ≥ {masked.INPUT_LAYER_MIN_FANOUT}× as many outputs, "
            f"≤ {auto.COMPACT_CHAINED_INPUT_MAX_DENSITY:g} for such a layer feeding a compact one straight), and for a "
            f"head of such a network (≤ {auto.NARROW_OUTPUT_MAX_OUT} outputs from ≥ {auto.NARROW_OUTPUT_MIN_IN} "
            f"inputs) at any density (compiled kernels, SIMD level {kernels.simd_level()}), else {table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=list(SECTIONS), default="layers")
    parser.add_argument("--shapes", nargs="+", default=["256x256", "1024x1024"], help="layers: in×out of each layer")
    parser.add_argument("--batches", nargs="+", type=int,
                        help="layers: batch sizes (default 256 1); kernels, layer-step: batch sizes (default 256)")
    parser.add_argument("--densities", nargs="+", type=float, default=None,
                        help="default: 1 0.5 0.2 0.1 0.05 (layers), 0.1 0.05 (layer-step), 0.5 0.1 0.05 (e2e), "
                             "0.5 0.2 0.1 0.05 0.02 (traffic, kernels), 0.1 (breakdown)")
    parser.add_argument("--repeats", type=int, default=30,
                        help="layers, layer-step, traffic, kernels, batch-renorm: timed repeats per backend (or "
                             "operation) and configuration")
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--algos", nargs="+", default=list(WIDE_ALGOS), choices=list(NET_ARCH))
    parser.add_argument("--methods", nargs="+", default=["rigl"], choices=["rigl", "srigl"],
                        help="e2e: srigl adds an SRigL model per density beside RigL's (rigl is always timed)")
    parser.add_argument("--width-multiplier", type=int, default=4, help="e2e: the wide network's multiplier")
    parser.add_argument("--rounds", type=int, default=3, help="e2e: alternating chunks per model")
    parser.add_argument("--chunk", type=int, default=200, help="e2e: environment steps per chunk")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, choices=range(1, (os.cpu_count() or 1) + 1),
                        metavar=f"{{1..{os.cpu_count()}}}",
                        help="torch's intra-op threads (the compact kernels run on as many; SBX's XLA too)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory-of", choices=list(MEMORY_MODELS), help=argparse.SUPPRESS)  # memory: one model
    parser.add_argument("--update-interval", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pinned = pin_to_cores(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args.memory_of:
        print(peak_rss_mb(args.memory_of, args.env, args.chunk, args.update_interval))
        return

    command = " ".join(["python", "benchmarks/sparse_speed.py", *sys.argv[1:]])
    header = (f"Command: `{command}` ({thread_count()}, {pinned}, float32; machine: {cpu_model()}, "
              f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; code of "
              f"{code_version()}). `auto`'s rule: {auto_rule_text()}.")
    if args.part == "layers":
        shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes]
        densities = sorted(args.densities or [1.0, 0.5, 0.2, 0.1, 0.05], reverse=True)
        lines = [header, "",
                 "Median µs of one training step of a lone layer (forward, backward with the input gradient "
                 "(handed back, not added into the last step's), gradient mask, fused Adam as the policies build it "
                 "(LeanAdam), weight mask), "
                 f"{args.repeats} steps per backend, the backends timed alternately, random masks:", "",
                 *layer_tables(shapes, args.batches or [256, 1], densities, args.repeats)]
    elif args.part == "layer-step":
        shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes]
        densities = sorted(args.densities or [0.1, 0.05], reverse=True)
        lines = [header, "",
                 f"Median µs (CPU time) of each phase of one training step of a lone layer, {args.repeats} steps "
                 "each, stepped alternately: the masked layer's whole step (row-major activations, as `--part "
                 "layers`), the compact layer's phases (feature-major activations, as inside a network: `--part "
                 "layers`' \"compact in network\", after an untimed step of a twin on row-major input, as there, so "
                 "that it finds its code warm as a layer inside a network does), in brackets the compiled kernels' "
                 "calls inside the forward and the backward, and an autograd node that computes nothing (it "
                 "allocates the output and the three gradients as the compact layer does) on parameters of the "
                 "compact layer's sizes with the same optimizer (LeanAdam): what a layer written in Python costs "
                 "before any work. The optimizer step includes the two masks (no-ops on the compact layout). A "
                 "phase's median is of its own times, so the phases need not add up to the step's median:", "",
                 *layer_step_tables(shapes, args.batches or [256], densities, args.repeats)]
    elif args.part == "traffic":
        shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes]
        densities = sorted(args.densities or [0.5, 0.2, 0.1, 0.05, 0.02], reverse=True)
        lines = [header, "",
                 f"Median µs (wall-clock, {args.repeats} repeats, the three operations timed alternately) of "
                 "gathering a weight's active values (float32, random mask, the CSR order the sparse backend "
                 "uses), of one dense pass over the weight (a zero-fill), and of copying the same number of "
                 "values stored contiguously:", "",
                 *traffic_tables(shapes, densities, args.repeats)]
    elif args.part == "kernels":
        shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes]
        densities = sorted(args.densities or [0.2, 0.1, 0.05, 0.02], reverse=True)
        batches = args.batches or [256]
        lines = [header, "",
                 f"GFLOP/s (medians of {args.repeats} wall-clock repeats, all products timed alternately) at batch "
                 f"{', '.join(map(str, batches))}, activations feature-major `(features, batch)` as the sparse "
                 "backends hold them, "
                 "random masks; sparse products counted at their active weights, dense GEMM at the whole weight. "
                 "MKL's three are `torch.sparse.mm` on `W`'s and on `Wᵀ`'s CSR copy and `torch.sparse.sampled_addmm`; "
                 "the input gradient's in brackets with that copy's values gathered from `W`'s in the call, as ours "
                 "reads them (they change at every optimizer step, and the `sparse` backend gathers them in every "
                 "backward): the ratios to MKL take that one, and so does MKL's side of the one call. "
                 "\"In one call\" is a layer's backward wanting both the input and the weight gradient (a hidden "
                 "layer's), which runs them in one pass over `Wᵀ`, against the sum of MKL's two products' times:",
                 "",
                 *kernel_tables(shapes, densities, batches, args.repeats)]
    elif args.part == "memory":
        lines = [header, "", *memory_tables(args.env, args.chunk)]
    elif args.part == "batch-renorm":
        lines = [header, "", *batch_renorm_tables(args.repeats)]
    elif args.part in TWIN_TABLES:
        lines = [header, "", *TWIN_TABLES[args.part](args.algos, args.env, args.densities or [0.1],
                                                     args.width_multiplier, args.rounds, args.chunk,
                                                     args.learning_starts, args.seed)]
    elif args.part == "breakdown":
        lines = [header, "", *breakdown_tables(args.algos, args.env, args.densities or [0.1], args.width_multiplier,
                                               args.chunk, args.learning_starts, args.seed)]
    elif args.part == "kernel-calls":
        lines = [header, "", *kernel_call_tables(args.algos, args.env, args.densities or [0.1],
                                                 args.width_multiplier, args.chunk, args.learning_starts, args.seed)]
    else:
        lines = [header, "", *e2e_tables(args.algos, args.env, args.densities or [0.5, 0.1, 0.05],
                                          args.width_multiplier, args.rounds, args.chunk, args.learning_starts,
                                          args.seed, tuple(args.methods))]
    print(write_section(args.out, args.part, lines))


if __name__ == "__main__":
    main()
