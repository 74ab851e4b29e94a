"""Cost of the sparse core against plain ``nn.Linear`` in the same run.

SAC-sized MLP (17 -> 256 -> 256 -> 6, HalfCheetah's shapes), batch 256, one torch thread.
Prints the ratio of a masked forward + backward + Adam step (gradient masked before the step,
weights re-masked after it, via the controller's optimizer hooks) to the same step on a plain
``nn.Linear`` network, and the time of one RigL topology update in units of training steps.

Both are measured with torch's default (``foreach``) Adam and with ``fused=True`` Adam. On the
CPUs this project was measured on, ``sqrt`` of a tensor containing exact zeros is tens of times
slower than of one without, and a sparse network's Adam ``exp_avg_sq`` is exactly zero at every
masked position, so foreach Adam pays that; fused Adam does not (see docs/architecture.md).

Prints a table and writes it to ``results/core_overhead.md``.

    python benchmarks/core_overhead.py [--density 0.1] [--repeats 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sparse_rl.criteria import resolve_criterion
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import init_masks, sparse_layers
from sparse_rl.methods.prune_grow import PruneGrowController
from sparse_rl.schedules import UpdateSchedule

SHAPE = (17, 256, 256, 6)
BATCH = 256
RESULTS = Path(__file__).resolve().parent.parent / "results" / "core_overhead.md"


def mlp(linear: type[nn.Linear]) -> nn.Sequential:
    return nn.Sequential(linear(SHAPE[0], SHAPE[1]), nn.ReLU(), linear(SHAPE[1], SHAPE[2]), nn.ReLU(),
                         linear(SHAPE[2], SHAPE[3]))


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    optimizer.zero_grad()
    net(x).pow(2).mean().backward()
    optimizer.step()


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of dense and sparse timing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(BATCH, SHAPE[0])

    rows = []
    for adam_kwargs in ({"foreach": True}, {"fused": True}):
        dense = mlp(nn.Linear)
        dense_opt = torch.optim.Adam(dense.parameters(), lr=3e-4, **adam_kwargs)
        sparse = mlp(SparseLinear)
        layers = sparse_layers(sparse)
        init_masks(layers, args.density, "erk")
        sparse_opt = torch.optim.Adam(sparse.parameters(), lr=3e-4, **adam_kwargs)
        controller = PruneGrowController(layers, resolve_criterion("prune", "magnitude"),
                                        resolve_criterion("grow", "gradient"),
                                        UpdateSchedule(interval=10**9, end=None))
        controller.attach(sparse_opt)

        dense_times, sparse_times = [], []
        for _ in range(args.rounds):
            dense_times += timed(lambda: train_step(dense, dense_opt, x), args.repeats // args.rounds)
            sparse_times += timed(lambda: train_step(sparse, sparse_opt, x), args.repeats // args.rounds)

        def rigl_update() -> None:
            sparse_opt.zero_grad()
            sparse(x).pow(2).mean().backward()
            controller.update(0.3, sparse_opt)

        dense_step, sparse_step = statistics.median(dense_times), statistics.median(sparse_times)
        update = statistics.median(timed(rigl_update, 50))
        rows.append(f"| {next(iter(adam_kwargs))} | {dense_step * 1e3:.3f} | {sparse_step * 1e3:.3f} | "
                    f"{sparse_step / dense_step:.3f} | {update * 1e3:.3f} | {update / dense_step:.2f} |")
    table = "\n".join([
        f"Command: `{' '.join(['python', 'benchmarks/core_overhead.py', *sys.argv[1:]])}` (MLP {SHAPE}, batch "
        f"{BATCH}, density {args.density} ERK, 1 torch thread, medians of {args.repeats} steps each, dense and "
        f"sparse alternating in {args.rounds} rounds; machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}). Ratio = masked `SparseLinear` step ÷ plain `nn.Linear` step; update = "
        "forward + backward + one RigL topology update.", "",
        "| Adam | dense ms/step | masked ms/step | ratio | update ms | update in dense steps |",
        "|---|---|---|---|---|---|", *rows])
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
