"""The report's plots: the mean evaluation return across seeds against env steps, training FLOPs and wall-clock."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from sparse_rl.report.runs import Curve, GroupKey, Run, warn


def seed_band(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, mean, min and max across curves, on the x grid of the curve that ends first."""
    grid = min((x for x, _ in curves), key=lambda x: x[-1])
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def plot_curves(path: Path, title: str, xlabel: str, lines: dict[str, list[Curve]], log_x: bool = False,
                caption: str = "") -> None:
    """Save a figure with one mean line and min–max band per label (its seed count in the legend)."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    if caption:
        figure.supxlabel(caption, fontsize=7)
    axes = figure.subplots()
    for label, curves in lines.items():
        x, mean, low, high = seed_band(curves)
        (line,) = axes.plot(x, mean, marker="o" if len(x) == 1 else None,  # one point is a dot, not nothing
                            label=f"{label} ({len(curves)} seed{'' if len(curves) == 1 else 's'})")
        axes.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if log_x:
        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set(title=title, xlabel=xlabel, ylabel="mean evaluation return")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=120)


def at_evaluations(run: Run, column: str, scale: float = 1.0) -> Curve | None:
    """(``column`` interpolated at the run's evaluation steps × ``scale``, evaluation returns); None if unknown."""
    curve = run.curve(column)
    if curve is None:
        return None
    x = scale * np.interp(run.eval_steps, *curve)
    counted = x > 0  # an evaluation before the first FLOP (or second) has no place on a log axis
    return (x[counted], run.eval_returns[counted]) if counted.any() else None


def plot_env_algo(groups: dict[GroupKey, list[Run]], env: str, algo: str, out: Path, caption: str = "") -> None:
    """Write the return-vs-steps, -FLOPs and -wall-clock plots of one env and algo."""
    by_steps: dict[str, list[Curve]] = {}
    by_flops: dict[str, list[Curve]] = {}
    by_hours: dict[str, list[Curve]] = {}
    for (group_env, group_algo, method, density, detail, settings), group in groups.items():
        if (group_env, group_algo) != (env, algo):
            continue
        label = f"{method} d={density}" + (f" ({detail})" if detail else "") + (f" [{settings}]" if settings else "")
        by_steps[label] = [(run.eval_steps, run.eval_returns) for run in group]
        for lines, column, scale in ((by_flops, "train_flops", 1.0), (by_hours, "wall_clock_s", 1 / 3600)):
            curves = [curve for curve in (at_evaluations(run, column, scale) for run in group) if curve is not None]
            if curves:
                lines[label] = curves
    stem = f"{env}_{algo}".replace("/", "_")
    name = f"{env} {algo.upper()}"
    plot_curves(out / f"{stem}_return_vs_steps.png", f"{name}: return vs env steps", "env steps", by_steps,
                caption=caption)
    if by_flops:
        plot_curves(out / f"{stem}_return_vs_flops.png", f"{name}: return vs training FLOPs",
                    "cumulative training FLOPs (log scale)", by_flops, log_x=True, caption=caption)
    else:
        warn(f"no training FLOP series in any {name} run: no return-vs-FLOPs plot")
    if by_hours:
        plot_curves(out / f"{stem}_return_vs_wallclock.png", f"{name}: return vs wall-clock",
                    "wall-clock hours of training", by_hours, caption=caption)
    else:
        warn(f"no wall-clock series in any {name} run: no return-vs-wall-clock plot")
