"""Tables and plots comparing training runs written by ``python -m sparse_rl.train``.

Usage::

    python -m sparse_rl.report RUNS... --out DIR [--reps 2000]

Each of ``RUNS`` is a run directory or a ledger record (one holding ``config.yaml``,
:mod:`sparse_rl.ledger`) or a directory searched recursively for them, so
``python -m sparse_rl.report runs/ --out report/`` reads every run under ``runs/`` and
``python -m sparse_rl.report results/ledger/mujoco_100k --out results/mujoco_100k`` every record
of a grid. A row holds runs that differ only in their seed: runs are grouped by their
:func:`~sparse_rl.run_config.run_label` (env, algo, method and its settings, densities, width, and
every other setting away from its packaged default: budget, architecture, hyperparameters; the
``settings`` column names them), and a group whose configs still differ is split, the difference named.
Runs without ``summary.json`` (interrupted, or still running) are left out with a warning unless
``--include-unfinished``, which marks them in the ``seeds`` column. ``DIR`` receives:

* ``results.md``: one row per group with the IQM of the final evaluation return and its 95 %
  stratified-bootstrap CI (rliable), the IQM as a percentage of the dense group's (same env,
  algo and settings, density 1.0: "no dense baseline" where the runs have none; blank when the
  dense IQM is not positive) and as a difference from
  it, the parameter ratio to dense, the final actor and critic densities, the inference-FLOP
  and training-FLOP ratios to dense (from ``summary.json``; training FLOPs fall back to the
  cumulative FLOP series for a run that has no summary yet), the mean wall-clock seconds per
  1,000 env steps, the wall-clock ratio to dense and the CPU-time ratio to dense (CPU time is
  what a shared machine's other work does not inflate; ``—`` for records written before runs
  counted it); a line names the machines (CPU model,
  threads) the runs ran on. A second table gives rliable's probability of improvement
  P(X > Y) with its CI, each group against dense, each sparse group against the
  parameter-matched network of its density, and each variant of a method (``rigl+sparse-init``)
  against the method itself (``rigl``) at the same density;
* ``<env>_<algo>_return_vs_steps.png``, ``..._return_vs_flops.png`` and
  ``..._return_vs_wallclock.png``: the mean evaluation return across seeds (shaded min–max)
  against env steps, cumulative training FLOPs (from the first evaluation with FLOPs, on a log axis)
  and wall-clock hours.

A run without ``evaluations.npz`` yet is skipped with a warning; one evaluation is enough. From Python, call
:func:`write_report`.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from rliable import library as rly
from rliable import metrics as rly_metrics

from sparse_rl.cli import OneLineParser
from sparse_rl.ledger import config_difference, resolved
from sparse_rl.run_config import at_least, run_label, run_name
from sparse_rl.rundir import RunDir, Series

PROG = "sparse_rl.report"
CONFIG_KEYS = ("env", "algo", "seed", "total_steps")
MISSING = "—"
COLUMNS = ("env", "algo", "method", "density", "settings", "seeds", "final return IQM [95% CI]", "% of dense",
           "IQM − dense IQM", "params vs dense", "actor / critic density", "inference FLOPs vs dense",
           "training FLOPs vs dense", "s / 1k steps", "wall-clock vs dense", "CPU time vs dense")

PAIR_COLUMNS = ("env", "algo", "X", "Y", "seeds X / Y", "P(X > Y) [95% CI]")

GroupKey = tuple[str, str, str, float, str, str]
"""(env, algo, method, density, detail, settings): a :class:`~sparse_rl.run_config.RunLabel`'s parts, the
settings being every other field that changes what a run learns (:func:`settings_text`)."""
NO_DENSE = "no dense baseline"
SAME_RUN_KEYS = ("seed", "threads", "device", "eval_freq", "checkpoint_freq")
"""Config keys in which runs of one row may differ; any other difference splits the row."""
Curve = tuple[np.ndarray, np.ndarray]
"""(x, y) arrays of equal length, x increasing."""


@dataclass(frozen=True)
class Run:
    """One training run: its config, evaluation curve, summary and scalar series."""

    path: Path
    env: str
    algo: str
    method: str
    density: float
    detail: str
    """What the density alone does not say (``actor 0.1``); see :attr:`~sparse_rl.run_config.RunLabel.detail`."""
    settings: str
    """The fields away from their defaults (``total_steps 4000, net_arch []``); empty if none."""
    config: dict[str, Any]
    seed: int
    total_steps: int
    eval_steps: np.ndarray
    eval_returns: np.ndarray
    """Mean return over the episodes of each evaluation."""
    summary: dict[str, Any] | None
    series: Series
    """Wall-clock, cumulative training FLOPs and densities against env steps (:meth:`RunDir.read_series`)."""

    @property
    def key(self) -> GroupKey:
        return self.env, self.algo, self.method, self.density, self.detail, self.settings

    @property
    def finished(self) -> bool:
        """Whether the run reached its budget (it has ``summary.json``)."""
        return self.summary is not None

    def curve(self, column: str) -> Curve | None:
        """``column`` of the series against env steps, where known; None if never."""
        known = ~np.isnan(self.series[column])
        return (self.series["env_steps"][known], self.series[column][known]) if known.any() else None

    @property
    def train_flops(self) -> Curve | None:
        """Cumulative training FLOPs against env steps."""
        return self.curve("train_flops")

    @property
    def final_return(self) -> float:
        return float(self.eval_returns[-1])


def warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    print(f"{PROG}: {message}", file=sys.stderr)


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Run directories among ``paths``, searching recursively in those that are not runs."""
    found: list[Path] = []
    for path in paths:
        if RunDir(path).is_run():
            found.append(path)
        elif path.is_dir():
            found.extend(RunDir.search(path))
        else:
            raise SystemExit(f"{PROG}: no such directory: {path}")
    return list(dict.fromkeys(found))


def load_run(run_dir: Path) -> Run | None:
    """Read one run directory; None (with a warning) if it has no evaluation yet."""
    files = RunDir(run_dir)
    config = files.parse_config()
    missing = [key for key in CONFIG_KEYS if key not in (config or {})]
    if missing:
        raise SystemExit(f"{PROG}: {files.config_file} lacks {', '.join(missing)}")
    evaluations = files.read_evaluations()
    if evaluations is None:
        warn(f"skipping {run_dir}: no evaluations.npz yet")
        return None
    eval_steps, results = evaluations["timesteps"], evaluations["results"]
    if len(eval_steps) == 0:
        warn(f"skipping {run_dir}: evaluations.npz holds no evaluation yet")
        return None
    label = run_label(config)
    return Run(
        path=run_dir, env=str(config["env"]), algo=str(config["algo"]), method=label.method,
        density=float(label.density), detail=label.detail, settings=settings_text(label.settings), config=config,
        seed=int(config["seed"]),
        total_steps=int(config["total_steps"]), eval_steps=np.asarray(eval_steps),
        eval_returns=np.asarray(results, dtype=float).mean(axis=1),
        summary=files.read_summary() if files.is_finished() else None,
        series=files.read_series(),
    )


def settings_text(settings: Iterable[tuple[str, Any]]) -> str:
    """``total_steps 4000, net_arch []``: changed settings (:func:`~sparse_rl.run_config.changed_settings`)."""
    return ", ".join(f"{path.rsplit('.', 1)[-1]} {json.dumps(value)}" for path, value in settings)


def comparable(run: Run) -> dict[str, Any]:
    """What runs of one row share: the run's config without :data:`SAME_RUN_KEYS`, its sparsity as the
    settings it resolves to (:func:`~sparse_rl.ledger.resolved`), and for a dense network only its width."""
    config = resolved({key: value for key, value in run.config.items() if key not in SAME_RUN_KEYS})
    if run.method in ("dense", "matched"):  # a network that stays dense has no sparse schedule
        config["sparsity"] = {"width_multiplier": config["sparsity"].get("width_multiplier", 1)}
    return config


def split_unlike(key: GroupKey, runs: list[Run]) -> dict[GroupKey, list[Run]]:
    """``runs`` of one label, split where their configs differ in more than :data:`SAME_RUN_KEYS`,
    each further part's settings naming how it differs from the first."""
    parts: list[list[Run]] = []
    for run in runs:
        part = next((p for p in parts if not config_difference(comparable(p[0]), comparable(run))), None)
        if part is None:
            parts.append([run])
        else:
            part.append(run)
    differences = [re.sub(r": recorded (.*), planned (.*)", r" \2 (vs \1)",
                          config_difference(comparable(parts[0][0]), comparable(part[0])))
                   for part in parts[1:]]
    keys = [key] + [(*key[:5], ", ".join(filter(None, (key[5], difference)))) for difference in differences]
    return dict(zip(keys, parts))


def group_runs(runs: Iterable[Run]) -> dict[GroupKey, list[Run]]:
    """Runs grouped by label (env, algo, method, density, detail, settings) and split where their configs
    differ otherwise; sorted by env, algo, settings, density descending, method."""
    labelled: dict[GroupKey, list[Run]] = {}
    for run in runs:
        labelled.setdefault(run.key, []).append(run)
    groups = {k: v for key, runs_of in labelled.items() for k, v in split_unlike(key, runs_of).items()}
    order = sorted(groups, key=lambda key: (key[0], key[1], key[5], -key[3], key[2], key[4]))
    return {key: sorted(groups[key], key=lambda run: run.seed) for key in order}


def dense_key(groups: dict[GroupKey, list[Run]], env: str, algo: str, settings: str = "") -> GroupKey | None:
    """The dense (density 1.0) group of ``env`` and ``algo`` with the same settings (architecture, budget,
    hyperparameters), if any."""
    dense = [key for key in groups if key[:2] == (env, algo) and key[2] == "dense" and key[5] == settings]
    return min(dense, key=lambda key: bool(key[4]), default=None)  # the plain dense network first


def iqm_with_ci(final_returns: Sequence[float], reps: int) -> tuple[float, float, float]:
    """IQM of the final returns and its 95 % stratified-bootstrap CI, with rliable."""
    scores = {"runs": np.asarray(final_returns, dtype=float).reshape(-1, 1)}
    return bootstrap(scores, lambda x: np.array([rly_metrics.aggregate_iqm(x)]), reps)


def bootstrap(scores: dict[str, Any], statistic: Callable[..., np.ndarray], reps: int) -> tuple[float, float, float]:
    """rliable's point estimate of ``statistic`` over ``scores`` (one key) and its 95 % stratified-bootstrap
    CI, the same on every call: rliable draws its resamples from numpy's global generator and ignores the
    ``random_state`` it passes on, so the global generator is seeded for the call and restored after it."""
    saved = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():  # rliable passes arch the random_state it deprecates; not ours to fix
            warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
            point, interval = rly.get_interval_estimates(scores, statistic, reps=reps)
    finally:
        np.random.set_state(saved)
    (key,) = scores
    (low,), (high,) = interval[key]
    return float(point[key][0]), float(low), float(high)


def improvement_probability(x: Sequence[float], y: Sequence[float], reps: int) -> tuple[float, float, float]:
    """P(X > Y), rliable's probability of improvement (the Mann–Whitney statistic over final returns:
    how often a run of X beats a run of Y, ties counting half), with its 95 % stratified-bootstrap CI."""
    scores = {"pair": [np.asarray(x, dtype=float).reshape(-1, 1), np.asarray(y, dtype=float).reshape(-1, 1)]}
    return bootstrap(scores, lambda a, b: np.array([rly_metrics.probability_of_improvement(a, b)]), reps)


def compared_pairs(groups: dict[GroupKey, list[Run]]) -> list[tuple[GroupKey, GroupKey]]:
    """The (X, Y) groups the report compares: every group against its dense group, every sparse
    group against the parameter-matched dense group of the same env, algo and density, and every
    variant of a method (its label has a ``+``, e.g. ``rigl+sparse-init``) against the method's own
    group of the same env, algo, density and network details."""
    pairs = []
    for key in groups:
        env, algo, method, density, detail, settings = key
        dense = dense_key(groups, env, algo, settings)
        if dense is not None and key != dense:
            pairs.append((key, dense))
        matched = [other for other in groups if other[:2] == (env, algo) and other[2] == "matched"
                   and other[3] == density and other[4] == "" and other[5] == settings]
        if method not in ("dense", "matched") and matched:
            pairs.append((key, matched[0]))
        base = (env, algo, method.split("+", 1)[0], density, detail, settings)
        if base[2] != method and base in groups:
            pairs.append((key, base))
    return pairs


def group_name(key: GroupKey) -> str:
    """``rigl 0.1``, ``dense 1.0 [total_steps 4000]``, ``rigl 0.1 (width x4)``: a group's method, density and
    settings."""
    _, _, method, density, detail, settings = key
    return f"{method} {density}" + (f" ({detail})" if detail else "") + (f" [{settings}]" if settings else "")


def comparison_markdown(groups: dict[GroupKey, list[Run]], reps: int) -> str:
    """A table of P(X > Y) for the pairs of :func:`compared_pairs`; empty when there is none."""
    pairs = compared_pairs(groups)
    if not pairs:
        return ""
    lines = ["Probability of improvement (rliable): P(X > Y) is how often a run of X ends above a run of Y "
             "(final returns, ties half), with its 95 % stratified-bootstrap CI; 0.5 is no difference.", "",
             "| " + " | ".join(PAIR_COLUMNS) + " |", "|" + "---|" * len(PAIR_COLUMNS)]
    for x, y in pairs:
        x_finals, y_finals = ([run.final_return for run in groups[key]] for key in (x, y))
        probability, low, high = improvement_probability(x_finals, y_finals, reps)
        cells = (x[0], x[1], group_name(x), group_name(y), f"{len(x_finals)} / {len(y_finals)}",
                 f"{probability:.2f} [{low:.2f}, {high:.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_ratio(run: Run, name: str, dense_runs: Sequence[Run] = ()) -> float | None:
    """``summary[name]`` over the dense runs' mean ``name``, or over the run's own ``dense_<name>``
    when no dense run has a summary; None without a summary.

    The dense runs are the reference because a parameter-matched run is dense itself: its own
    ``dense_<name>`` is its narrow network's, not the full-width baseline's.
    """
    if run.summary is None or name not in run.summary:
        return None
    dense = [d.summary[name] for d in dense_runs if d.summary is not None and name in d.summary]
    if not dense and f"dense_{name}" not in run.summary:
        return None
    return run.summary[name] / (float(np.mean(dense)) if dense else run.summary[f"dense_{name}"])


def train_flops_ratio(run: Run, dense_runs: Sequence[Run]) -> float | None:
    """Training FLOPs relative to dense: from the summary, else from the TensorBoard curves.

    Without a summary the run's last cumulative FLOPs are divided by the dense runs' mean
    cumulative FLOPs at the same step (dense runs that stopped earlier are left out).
    """
    if run.summary is not None:
        return summary_ratio(run, "train_flops", dense_runs)
    if run.train_flops is None:
        return None
    steps, flops = run.train_flops
    dense = [np.interp(steps[-1], *d.train_flops) for d in dense_runs
             if d.train_flops is not None and d.train_flops[0][-1] >= steps[-1]]
    return float(flops[-1] / np.mean(dense)) if dense else None


def final_densities(runs: Sequence[Run]) -> str:
    """The runs' mean final actor and critic densities (``0.26 / 0.16``), which methods that learn their
    density end at and ``actor_density``/``critic_density`` set apart; ``—`` if no summary has them."""
    known = [run.summary["network_density"] for run in runs if run.summary is not None
             and {"actor", "critic"} <= set(run.summary.get("network_density") or {})]
    if not known:
        return MISSING
    return " / ".join(f"{np.mean([density[net] for density in known]):.2f}" for net in ("actor", "critic"))


def seconds_per_1k_steps(runs: Sequence[Run]) -> str:
    """The runs' mean wall-clock seconds per 1,000 env steps; ``—`` if no summary has it."""
    known = [run.summary["wall_clock_s_per_1k_steps"] for run in runs
             if run.summary is not None and math.isfinite(run.summary.get("wall_clock_s_per_1k_steps", math.nan))]
    return f"{np.mean(known):.1f}" if known else MISSING


def machines_text(runs: Sequence[Run]) -> str:
    """Which CPU models and thread counts the runs' summaries name, with how many runs each."""
    counts: dict[str, int] = {}
    for run in runs:
        if run.summary is not None and "cpu" in run.summary:
            machine = f"{run.summary['cpu']}, {run.summary.get('threads', '?')} thread(s)"
            counts[machine] = counts.get(machine, 0) + 1
    unknown = len(runs) - sum(counts.values())
    counts |= {"not recorded (no summary.json yet)": unknown} if unknown else {}
    return "; ".join(f"{machine} ({count} of {len(runs)} runs)" for machine, count in counts.items())


def mean_ratio(ratios: Iterable[float | None]) -> str:
    """The mean of the known ratios, formatted like ``0.10×``; ``—`` if none is known."""
    known = [ratio for ratio in ratios if ratio is not None]
    return f"{np.mean(known):.2f}×" if known else MISSING


def budget_text(runs: Sequence[Run]) -> str:
    """The env-step budget of the runs, listing the distinct values if they differ."""
    budgets = sorted({run.total_steps for run in runs})
    if len(budgets) == 1:
        return f"{budgets[0]} env steps per run"
    return f"{', '.join(map(str, budgets))} env steps (differs between runs)"


def runs_text(runs: Sequence[Run]) -> str:
    """The runs' directories, named relative to their common parent (itself relative to the working directory)."""
    paths = [run.path.resolve() for run in runs]
    parent = Path(os.path.commonpath([path.parent for path in paths]))
    shown = Path(os.path.relpath(parent)) if parent.is_relative_to(Path.cwd()) else parent
    return f"{', '.join(str(path.relative_to(parent)) for path in paths)} under {shown}"


def group_row(key: GroupKey, groups: dict[GroupKey, list[Run]], iqms: dict[GroupKey, tuple[float, float, float]]
              ) -> tuple[str, ...]:
    """The cells of one group's row; the "vs dense" cells compare with the dense group of the same
    settings (:func:`dense_key`), or say :data:`NO_DENSE` (weights and FLOPs then use each run's own
    dense count, which its summary records for the same architecture)."""
    env, algo, method, density, detail, settings = key
    group = groups[key]
    iqm, low, high = iqms[key]
    dense = dense_key(groups, env, algo, settings)
    dense_runs = groups[dense] if dense is not None else []
    dense_iqm = iqms[dense][0] if dense is not None else None
    unfinished = sum(not run.finished for run in group)
    counts = [mean_ratio(summary_ratio(run, name, dense_runs) for run in group)
              for name in ("params", "inference_flops")]
    counts.append(mean_ratio(train_flops_ratio(run, dense_runs) for run in group))
    if dense is None and method == "matched":  # its own dense count is its narrow network's, not the baseline's
        counts = [NO_DENSE] * 3
    return (env, algo, method, f"{density} ({detail})" if detail else str(density), settings or "default",
            str(len(group)) + (f" ({unfinished} unfinished)" if unfinished else ""),
            f"{iqm:.1f} [{low:.1f}, {high:.1f}]",
            NO_DENSE if dense_iqm is None else f"{100 * iqm / dense_iqm:.1f}" if dense_iqm > 0 else MISSING,
            NO_DENSE if dense_iqm is None else f"{iqm - dense_iqm:+.1f}",
            counts[0], final_densities(group), counts[1], counts[2],
            seconds_per_1k_steps(group),
            NO_DENSE if dense is None else
            mean_ratio(summary_ratio(run, "wall_clock_s_per_1k_steps", dense_runs) for run in group),
            NO_DENSE if dense is None else
            mean_ratio(summary_ratio(run, "cpu_s_per_1k_steps", dense_runs) for run in group))


def results_markdown(groups: dict[GroupKey, list[Run]], reps: int) -> str:
    """The ``results.md`` text: a line naming the runs and budget, then one table row per group."""
    runs = [run for group in groups.values() for run in group]
    iqms = {key: iqm_with_ci([run.final_return for run in group], reps) for key, group in groups.items()}
    lines = [f"Runs read ({len(runs)}): {runs_text(runs)}. Budget: {budget_text(runs)}. Rows group runs that "
             "differ only in their seed; `settings` names what differs from the packaged defaults.",
             f"Machines: {machines_text(runs)}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(group_row(key, groups, iqms)) + " |" for key in groups]
    comparison = comparison_markdown(groups, reps)
    return "\n".join(lines) + "\n" + (f"\n{comparison}" if comparison else "")


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


def grid_text(grid: Path, runs: Sequence[Run]) -> str:
    """How many of the runs a sweep file plans are among ``runs`` and finished (with a summary)."""
    from sparse_rl.run_config import read_yaml
    from sparse_rl.sweep import plan_trials

    sweep = read_yaml(grid)
    planned = {(trial.config["env"], run_name(trial.config, settings=False)) for trial in plan_trials(sweep, Path("."))}
    done = planned & {(run.env, run_name(run.config, settings=False)) for run in runs if run.summary is not None}
    return f"Grid {sweep.get('name') or grid.stem} ({grid}): {len(done)} of {len(planned)} runs complete."


def write_report(run_dirs: list[Path], out: Path, reps: int = 2000, grid: Path | None = None,
                 include_unfinished: bool = False) -> Path:
    """Write ``results.md`` and the plots of the runs in or under ``run_dirs`` to ``out``; return results.md.
    With ``grid`` (a sweep file), ``results.md`` and the plots say how many of its runs are complete.
    Runs without ``summary.json`` are left out (with a warning) unless ``include_unfinished``."""
    found = find_run_dirs(map(Path, run_dirs))
    if not found:
        raise SystemExit(f"{PROG}: no run directories (with config.yaml) under {', '.join(map(str, run_dirs))}")
    runs = [run for run in map(load_run, found) if run is not None]
    unfinished = [run for run in runs if not run.finished]
    if unfinished and not include_unfinished:
        warn(f"leaving out {len(unfinished)} unfinished run(s) (no summary.json; --include-unfinished adds them, "
             f"marked): {', '.join(str(run.path) for run in unfinished)}")
        runs = [run for run in runs if run.finished]
    if not runs:
        raise SystemExit(f"{PROG}: none of the {len(found)} run directories has a finished run with evaluations")
    groups = group_runs(runs)
    completeness = grid_text(grid, runs) if grid is not None else ""
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.md"
    text = results_markdown(groups, reps)
    results.write_text(text.replace("\n\n", f"\n{completeness}\n\n", 1) if completeness else text)
    caption = f"{budget_text(runs)}; machines: {machines_text(runs)}" + (f"\n{completeness}" if completeness else "")
    for env, algo in dict.fromkeys(key[:2] for key in groups):
        plot_env_algo(groups, env, algo, out, caption)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: ``python -m sparse_rl.report RUNS... --out DIR``."""
    parser = OneLineParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, or directories holding them")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.md and the plots")
    parser.add_argument("--reps", type=at_least(int, 1), default=2000, help="bootstrap resamples for the CIs")
    parser.add_argument("--grid", type=Path, metavar="SWEEP_FILE",
                        help="say how many of this sweep file's runs are complete (in results.md and the plots)")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="also report runs without summary.json (interrupted or still running), marked as such")
    args = parser.parse_args(argv)
    from sparse_rl.quiet import filter_known_warnings  # --grid plans the sweep's runs, which checks their envs

    filter_known_warnings()
    try:
        print(write_report(args.runs, args.out, reps=args.reps, grid=args.grid,
                           include_unfinished=args.include_unfinished))
    except ValueError as error:  # an unreadable or invalid --grid file (ConfigError, SweepError)
        raise SystemExit(f"{PROG}: error: {error}") from None


if __name__ == "__main__":
    main()
