"""``python -m sparse_rl.calibrate``: measure where the ``sparse`` backend beats ``masked`` on this machine.

    python -m sparse_rl.calibrate                      # writes ~/.cache/sparse_rl/auto_rule.json
    python -m sparse_rl.calibrate --dry-run            # measure and print, write nothing

The break-even density of CSR kernels against dense GEMM moves with the CPU and the BLAS build: for a
256×256 layer at batch 256 it was about 0.1 on this project's Intel Xeon and 0.3 on an AMD EPYC, so a
rule measured on one machine is wrong on the other. This command times one training step of a lone
layer (:func:`time_layer`: forward, backward with the input gradient, gradient mask, fused Adam (the policies'
LeanAdam), weight mask) on both backends, alternately, for each shape and density, and writes the rule ``auto``
follows from then on (:func:`sparse_rl.backends.auto_rule`): for each layer size, the highest measured density up
to which every measured ``sparse`` step took at most ``--margin`` × the ``masked`` one. The margin keeps ``auto``
off layers where the lone-layer gain is too small to survive inside a network. Layers smaller than the
smallest shape stay on ``masked``. The file records the CPU model and torch version; on another CPU or
torch it is ignored. Timing happens here, once, never inside a run.

The rule decides only where the compiled compact kernels are missing. Where they are built, ``auto`` lays
fixed-count layers out compactly by a constant rule (:mod:`sparse_rl.backends.auto`), and this command prints
the ``compact`` step beside the others so that its margin over that rule can be read on each machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from sparse_rl.backends.auto import Rule, auto_backend, auto_rule, rule_path, write_rule
from sparse_rl.cli import OneLineParser, at_least, fraction
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import random_mask
from sparse_rl.optim import LeanAdam

SHAPES = ((256, 256), (400, 300), (1024, 1024))
"""Default layers timed, (in, out): SAC's and TD3's hidden layers, and a wide (×4) one."""

DENSITIES = (0.5, 0.3, 0.2, 0.1, 0.05, 0.02)
"""Default densities timed."""


def layer_step(layer: SparseLinear, optimizer: torch.optim.Optimizer, x: torch.Tensor, dy: torch.Tensor) -> None:
    """One training step of ``layer`` as a controller runs it. The input's gradient is computed and handed back, not
    added into the last step's: in a network the layer before reads it, and no layer's input is a leaf that
    accumulates one (adding it into ``x.grad`` cost a feature-major 256×256 step about 30-80 µs, cold)."""
    optimizer.zero_grad(set_to_none=True)
    x.grad = None
    layer(x).backward(dy)
    masked_optimizer_step(layer, optimizer)


def masked_optimizer_step(layer: SparseLinear, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer step of :func:`layer_step`, between the gradient mask and the weight mask (no-ops on the
    compact layout)."""
    layer.mask_grad()
    optimizer.step()
    layer.apply_mask()


def timed_layer(mask: torch.Tensor, backend: str, seed: int = 0) -> tuple[SparseLinear, torch.optim.Optimizer]:
    """A lone layer of ``mask``'s pattern on ``backend`` and its optimizer, as :func:`time_layer` steps them: no
    dense gradient kept for scoring, the optimizer the sparse policies build."""
    torch.manual_seed(seed)
    layer = SparseLinear(mask.shape[1], mask.shape[0])
    layer.set_mask(mask)
    layer.set_backend(backend)
    layer.dense_grad_needed = False
    return layer, LeanAdam(layer.parameters(), lr=1e-4)


def time_layer(in_features: int, out_features: int, batch: int, density: float, repeats: int,
               seed: int = 0, backends: tuple[str, ...] = ("masked", "sparse", "compact")) -> dict[str, float]:
    """Median CPU seconds of one training step of each backend, timed alternately.

    The input is row-major (as from a dense layer); the output gradient has the layout of the layer's
    output, row-major for ``masked`` and feature-major for the sparse kernels, as the next layer hands it back.
    A backend named ``"<backend> in network"`` gets its input feature-major too, as inside a network whose dense
    layers hand the sparse ones feature-major activations (:class:`~sparse_rl.layers.LayoutGroup`): no transposes.
    """
    generator = torch.Generator().manual_seed(seed)
    mask = random_mask((out_features, in_features), round(density * in_features * out_features), generator)
    steps = {}
    for name in backends:
        backend = name.removesuffix(" in network")
        layer, optimizer = timed_layer(mask, backend, seed)
        x = torch.randn(batch, in_features, generator=generator)
        dy = torch.randn(batch, out_features, generator=generator)
        if backend != "masked":
            dy = dy.t().contiguous().t()
        if name != backend:
            x = x.t().contiguous().t()
        x.requires_grad_(True)
        steps[name] = (layer, optimizer, x, dy)
    return alternating_medians({backend: partial(layer_step, *args) for backend, args in steps.items()},
                               repeats, time.process_time)


def alternating_medians(ops: dict[str, Callable[[], object]], repeats: int,
                        clock: Callable[[], float] = time.perf_counter, warmup: int = 3) -> dict[str, float]:
    """Median seconds (by ``clock``) of each operation, the operations run in turn, ``warmup`` rounds untimed.

    Warm-up rounds let the first calls allocate what they keep (optimizer state, CSR structures).
    """
    times: dict[str, list[float]] = {name: [] for name in ops}
    for i in range(repeats + warmup):
        for name, op in ops.items():
            start = clock()
            op()
            if i >= warmup:
                times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def max_sparse_density(ratios: dict[float, float], margin: float) -> float:
    """The highest density up to which every measured ``sparse ÷ masked`` ratio is at most ``margin``
    (0 when the lowest density already misses it)."""
    best = 0.0
    for density in sorted(ratios):
        if ratios[density] > margin:
            break
        best = density
    return best


def measure_rule(shapes: tuple[tuple[int, int], ...] = SHAPES, densities: tuple[float, ...] = DENSITIES,
                 batch: int = 256, repeats: int = 30, margin: float = 0.9,
                 report: bool = True) -> tuple[Rule, list[dict[str, float]]]:
    """Time every shape at every density and return the rule with its measurements."""
    rows, measurements = [], []
    for in_features, out_features in shapes:
        ratios = {}
        for density in densities:
            median = time_layer(in_features, out_features, batch, density, repeats)
            ratios[density] = median["sparse"] / median["masked"]
            measurements.append({"in": in_features, "out": out_features, "batch": batch, "density": density,
                                 **{f"{backend}_s": seconds for backend, seconds in median.items()}})
            if report:
                compact = auto_backend(in_features, out_features, density, torch.device("cpu"))
                print(f"{in_features}x{out_features} batch {batch} density {density:g}: masked "
                      f"{median['masked'] * 1e6:.0f} µs, sparse {median['sparse'] * 1e6:.0f} µs "
                      f"(ratio {ratios[density]:.2f}), compact {median['compact'] * 1e6:.0f} µs "
                      f"(ratio {median['compact'] / median['masked']:.2f}); auto picks {compact} for such a layer "
                      "that is not a network's head (heads: docs/execution.md)", flush=True)
        rows.append((in_features * out_features, max_sparse_density(ratios, margin)))
    return tuple(sorted(rows, reverse=True)), measurements


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m sparse_rl.calibrate", description=__doc__)
    parser.add_argument("--shapes", nargs="+", type=shape, default=list(SHAPES), metavar="INxOUT",
                        help=f"layers to time (default: {' '.join(f'{i}x{o}' for i, o in SHAPES)})")
    parser.add_argument("--densities", nargs="+", type=fraction, default=list(DENSITIES),
                        help=f"densities to time (default: {' '.join(map(str, DENSITIES))})")
    parser.add_argument("--batch", type=at_least(int, 4), default=256, help="rows per step (default 256)")
    parser.add_argument("--repeats", type=at_least(int, 1), default=30, help="timed steps per backend and point")
    parser.add_argument("--margin", type=fraction, default=0.9,
                        help="sparse must take at most this share of masked's time (default 0.9)")
    parser.add_argument("--out", type=Path, default=None,
                        help="calibration file (default: $SPARSE_RL_AUTO_RULE, else ~/.cache/sparse_rl/auto_rule.json)")
    parser.add_argument("--dry-run", action="store_true", help="measure and print the rule, write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rule, measurements = measure_rule(tuple(args.shapes), tuple(args.densities), args.batch, args.repeats,
                                      args.margin)
    print("rule (min weights -> sparse at density <=):",
          ", ".join(f"{weights} -> {density:g}" for weights, density in rule))
    if args.dry_run:
        return
    path = args.out or rule_path()
    write_rule(rule, path, measurements)
    auto_rule.cache_clear()
    print(f"wrote {path}")


def shape(text: str) -> tuple[int, int]:
    """``"256x256"`` as ``(256, 256)``."""
    try:
        in_features, out_features = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be INxOUT with positive integers, e.g. 256x256; got {text!r}")
    if in_features < 1 or out_features < 1:
        raise argparse.ArgumentTypeError(f"shape must be INxOUT with positive integers, e.g. 256x256; got {text!r}")
    return in_features, out_features


if __name__ == "__main__":
    main()
