"""Tables and plots comparing training runs written by ``python -m sparse_rl.train``.

Usage::

    python -m sparse_rl.report RUNS... --out DIR [--reps 2000]

Each of ``RUNS`` is a run directory or a ledger record (one holding ``config.yaml``,
:mod:`sparse_rl.ledger`) or a directory searched recursively for them, so
``python -m sparse_rl.report runs/ --out report/`` reads every run under ``runs/`` and
``python -m sparse_rl.report results/ledger/mujoco_100k --out results/mujoco_100k`` every record
of a grid. A row holds runs that differ only in their seed: runs are grouped by their
:func:`~sparse_rl.run_names.run_label` (env, algo, method and its settings, densities, width, and
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
  counted it), each run against the dense runs on its own CPU model and thread count only
  (``other machine`` where a row has none; ``(k of n)`` where only k of its runs have); a line names
  the machines (CPU model, threads) the runs ran on. A second table gives rliable's probability of improvement
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

from collections.abc import Sequence
from pathlib import Path

from sparse_rl.cli import OneLineParser, at_least
from sparse_rl.report.groups import SAME_RUN_KEYS, compared_pairs, dense_key, group_name, group_runs
from sparse_rl.report.plots import at_evaluations, plot_curves, plot_env_algo
from sparse_rl.report.runs import CONFIG_KEYS, PROG, Curve, GroupKey, Run, find_run_dirs, load_run, settings_text, warn
from sparse_rl.report.stats import bootstrap, improvement_probability, iqm_with_ci
from sparse_rl.report.tables import (
    COLUMNS,
    MISSING,
    NO_DENSE,
    PAIR_COLUMNS,
    budget_text,
    comparison_markdown,
    machines_text,
    results_markdown,
)
from sparse_rl.run_names import run_name

__all__ = ["COLUMNS", "CONFIG_KEYS", "MISSING", "NO_DENSE", "PAIR_COLUMNS", "PROG", "SAME_RUN_KEYS", "Curve",
           "GroupKey", "Run", "at_evaluations", "bootstrap", "comparison_markdown", "compared_pairs", "dense_key",
           "find_run_dirs", "grid_text", "group_name", "group_runs", "improvement_probability", "iqm_with_ci",
           "load_run", "main", "plot_curves", "plot_env_algo", "results_markdown", "settings_text", "write_report"]


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
