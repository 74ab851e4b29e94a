"""The Markdown of ``results.md``: one row per group, then the probability-of-improvement table."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from sparse_rl.report.groups import compared_pairs, dense_key, group_name
from sparse_rl.report.runs import GroupKey, Run
from sparse_rl.report.stats import improvement_probability, iqm_with_ci

MISSING = "—"
COLUMNS = ("env", "algo", "method", "density", "settings", "seeds", "final return IQM [95% CI]", "% of dense",
           "IQM − dense IQM", "params vs dense", "actor / critic density", "inference FLOPs vs dense",
           "training FLOPs vs dense", "s / 1k steps", "wall-clock vs dense", "CPU time vs dense")

PAIR_COLUMNS = ("env", "algo", "X", "Y", "seeds X / Y", "P(X > Y) [95% CI]")

NO_DENSE = "no dense baseline"
OTHER_MACHINE = "other machine"
TIME_NOTE = ("`wall-clock vs dense` and `CPU time vs dense` compare each run with the dense runs on the same CPU model "
             "and thread count, timed by code of the same timing epoch, only; `other machine` where none of a row's "
             "runs has such dense runs, and `(k of n)` where only k of its n runs have. `s / 1k steps` averages the "
             "runs of one machine, the one most of a row's runs ran on, `(k of n)` where that leaves k of n.")


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
    """The mean wall-clock seconds per 1,000 env steps of the runs on the machine (:func:`machine`) that most of those
    recording it ran on (the first such machine on a tie): times on other CPUs or thread counts do not average.
    ``(k of n)`` where that leaves k of the n runs; ``—`` if no summary has it."""
    known = [(machine(run), run.summary["wall_clock_s_per_1k_steps"]) for run in runs
             if run.summary is not None and math.isfinite(run.summary.get("wall_clock_s_per_1k_steps", math.nan))]
    if not known:
        return MISSING
    machines = [ran_on for ran_on, _ in known]
    most = max(machines, key=machines.count)
    same = [seconds for ran_on, seconds in known if ran_on == most]
    return of_runs(f"{np.mean(same):.1f}", len(same), len(runs))


def of_runs(cell: str, counted: int, runs: int) -> str:
    """``cell`` as it stands when it counts all ``runs``, else with ``(counted of runs)`` after it."""
    return cell if counted == runs else f"{cell} ({counted} of {runs})"


def machine(run: Run) -> tuple[object, object, object]:
    """The CPU model and torch thread count a run's summary names (``None`` where it names none), and the timing
    epoch of the code that ran it (:data:`sparse_rl.machine.TIMING_EPOCH`; 0 where it names none)."""
    summary = run.summary or {}
    return summary.get("cpu"), summary.get("threads"), summary.get("timing_epoch", 0)


def time_ratio(group: Sequence[Run], name: str, dense_runs: Sequence[Run]) -> str:
    """The mean ratio of ``summary[name]`` (a time) to the dense runs' on the same machine (:func:`machine`), over
    the runs of ``group`` that have such dense runs: times on other CPUs or thread counts do not compare.
    ``—`` where the records do not hold the time."""
    pairs = [(run, [d for d in dense_runs if machine(d) == machine(run)]) for run in group]
    pairs = [(run, same_machine) for run, same_machine in pairs if same_machine]
    if not pairs:
        return OTHER_MACHINE if any(run.summary is not None for run in group) else MISSING
    known = [ratio for ratio in (summary_ratio(run, name, same_machine) for run, same_machine in pairs)
             if ratio is not None]
    return of_runs(mean_ratio(known), len(known), len(group)) if known else MISSING


def machines_text(runs: Sequence[Run]) -> str:
    """Which CPU models and thread counts the runs' summaries name, with how many runs each."""
    counts: dict[str, int] = {}
    for run in runs:
        if run.summary is not None and "cpu" in run.summary:
            cpu, threads, epoch = machine(run)
            name = (f"{cpu}, {'?' if threads is None else threads} thread(s)"
                    + (f", timing epoch {epoch}" if epoch else ""))
            counts[name] = counts.get(name, 0) + 1
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
            NO_DENSE if dense is None else time_ratio(group, "wall_clock_s_per_1k_steps", dense_runs),
            NO_DENSE if dense is None else time_ratio(group, "cpu_s_per_1k_steps", dense_runs))


def results_markdown(groups: dict[GroupKey, list[Run]], reps: int) -> str:
    """The ``results.md`` text: a line naming the runs and budget, then one table row per group."""
    runs = [run for group in groups.values() for run in group]
    iqms = {key: iqm_with_ci([run.final_return for run in group], reps) for key, group in groups.items()}
    lines = [f"Runs read ({len(runs)}): {runs_text(runs)}. Budget: {budget_text(runs)}. Rows group runs that "
             "differ only in their seed; `settings` names what differs from the packaged defaults.",
             f"Machines: {machines_text(runs)}. {TIME_NOTE}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(group_row(key, groups, iqms)) + " |" for key in groups]
    comparison = comparison_markdown(groups, reps)
    return "\n".join(lines) + "\n" + (f"\n{comparison}" if comparison else "")
