"""Wall-clock of the ``sparse`` execution backend against ``masked`` (dense kernels), in one run.

Per layer: one training step of a lone ``SparseLinear``. The step is forward, backward (input and
weight gradient, ``dense_grad_needed`` off as between topology updates), the controller's gradient
mask, fused Adam and the weight mask. The grid is every shape, batch and density given, with the
same random mask for both backends. The two backends are timed
alternately, one step each, and the table reports medians. The break-even density is where
sparse ÷ masked crosses 1, interpolated linearly in log-density between the measured densities.

End to end (``--e2e``): ms per SAC/TD3 training step on HalfCheetah-v4 with ``backend=auto`` at
each density, against SB3's ``MlpPolicy`` and against the parameter-matched dense network, and
the wide network (``--width-multiplier 4 --iso-params``). All models are trained in alternating
chunks, as in ``benchmarks/speed.py``.

Prints the tables and writes them to ``results/sparse_speed.md``.

    python benchmarks/sparse_speed.py [--shapes 256x256 1024x1024 --batches 256 1 --e2e]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from sparse_rl.backends import auto_backend
from sparse_rl.layers import SparseLinear, random_mask

RESULTS = Path(__file__).resolve().parent.parent / "results" / "sparse_speed.md"


def layer_step(layer: SparseLinear, optimizer: torch.optim.Optimizer, x: torch.Tensor, dy: torch.Tensor) -> None:
    """One training step of ``layer`` as a controller runs it."""
    optimizer.zero_grad(set_to_none=True)
    layer(x).backward(dy)
    layer.mask_grad()
    optimizer.step()
    layer.apply_mask()


def time_layer(in_features: int, out_features: int, batch: int, density: float, repeats: int,
               seed: int = 0) -> dict[str, float]:
    """Median seconds of one training step of the ``masked`` and ``sparse`` backends, timed alternately."""
    generator = torch.Generator().manual_seed(seed)
    mask = random_mask((out_features, in_features), round(density * in_features * out_features), generator)
    steps = {}
    for backend in ("masked", "sparse"):
        torch.manual_seed(seed)
        layer = SparseLinear(in_features, out_features)
        layer.set_mask(mask)
        layer.set_backend(backend)
        layer.dense_grad_needed = False
        optimizer = torch.optim.Adam(layer.parameters(), lr=1e-4, fused=True)
        x = torch.randn(batch, in_features, generator=generator)
        dy = torch.randn(batch, out_features, generator=generator)
        x.requires_grad_(True)
        steps[backend] = (layer, optimizer, x, dy)
    times: dict[str, list[float]] = {backend: [] for backend in steps}
    for i in range(repeats + 3):
        for backend, args in steps.items():
            start = time.perf_counter()
            layer_step(*args)
            if i >= 3:  # warm-up: the first steps allocate optimizer state and the CSR structure
                times[backend].append(time.perf_counter() - start)
    return {backend: statistics.median(values) for backend, values in times.items()}


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
                median = time_layer(in_features, out_features, batch, density, repeats)
                ratio = median["sparse"] / median["masked"]
                ratios.append(ratio)
                auto = auto_backend(in_features, out_features, density, torch.device("cpu"))
                rows.append(f"| {in_features}×{out_features} | {batch} | {density:g} | {median['masked'] * 1e6:.0f} "
                            f"| {median['sparse'] * 1e6:.0f} | {ratio:.2f} | {auto} |")
                print(rows[-1], flush=True)
            summary.append(f"| {in_features}×{out_features} | {batch} | {break_even(densities, ratios)} |")
    return ["| layer (in×out) | batch | density | masked µs | sparse µs | sparse ÷ masked | auto picks |",
            "|---|---|---|---|---|---|---|", *rows, "",
            "Break-even density (sparse faster below it):", "",
            "| layer (in×out) | batch | break-even density |", "|---|---|---|", *summary]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["256x256", "1024x1024"], help="in×out of each layer")
    parser.add_argument("--batches", nargs="+", type=int, default=[256, 1])
    parser.add_argument("--densities", nargs="+", type=float, default=[1.0, 0.5, 0.2, 0.1, 0.05])
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per backend and configuration")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes]

    command = " ".join(["python", "benchmarks/sparse_speed.py", *sys.argv[1:]])
    lines = [f"Command: `{command}` (1 torch thread, float32, random masks; machine: {platform.machine()}, "
             f"{os.cpu_count()} CPU cores, torch {torch.__version__}).", "",
             f"Per layer: median µs of one training step (forward, backward with the input gradient, "
             f"gradient mask, fused Adam, weight mask), {args.repeats} steps per backend, the backends "
             "timed alternately.", "",
             *layer_tables(shapes, args.batches, sorted(args.densities, reverse=True), args.repeats)]
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
