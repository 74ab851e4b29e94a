"""A run ledger in git: a compact record of every finished run, so a benchmark grows across sessions.

    python -m sparse_rl.ledger add runs/mujoco_100k/*/* --ledger results/ledger --grid mujoco_100k
    python -m sparse_rl.sweep configs/sweeps/mujoco_100k.yaml --ledger results/ledger   # records as runs finish
    python -m sparse_rl.report results/ledger/mujoco_100k --out results/mujoco_100k

A record lives in ``<ledger>/<grid>/<env>/<run name>/`` and holds ``config.yaml`` (the effective
config), ``evaluations.npz``, ``summary.json`` (with wall-clock, CPU model and threads) and
``series.csv``: the scalar series the report plots (env steps, wall-clock seconds, cumulative
training FLOPs, density of the actor and of the critics), a few KB in all and no model or
replay buffer: a run directory's subset, under the same names (:class:`~sparse_rl.rundir.RunDir`
reads both). ``sparse_rl.report`` reads a record exactly as it reads a run directory, and
``sparse_rl.sweep --ledger`` skips every trial whose record exists.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparse_rl.cli import OneLineParser
from sparse_rl.machine import cpu_model
from sparse_rl.run_config import ConfigError, sparsity_of
from sparse_rl.run_names import run_name
from sparse_rl.rundir import CONFIG, EVALUATIONS, SERIES, SUMMARY, RunDir, Series

PROG = "sparse_rl.ledger"
RECORD_FILES = (CONFIG, EVALUATIONS, SUMMARY, SERIES)
"""The files of a record: a run directory's subset (:mod:`sparse_rl.rundir`), plus its series."""
IGNORED_KEYS = ("device", "threads", "checkpoint_freq")
"""Config keys that change where a run ran, not what it computes: a record matches a trial without them
(and so does the sparsity ``backend``: see :func:`resolved`)."""


GRID_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
"""A grid's name is one directory of the ledger, never a path."""


@dataclass(frozen=True)
class Ledger:
    """The records of one grid: ``<root>/<grid>/<env>/<run name>/``."""

    root: Path
    grid: str

    def __post_init__(self) -> None:
        if not GRID_NAME.fullmatch(self.grid):
            raise ConfigError(f"grid name must be letters, digits, '_', '-' or '.' (not first), got {self.grid!r}")

    def record_dir(self, config: Mapping[str, Any]) -> Path:
        """Where the record of the run of ``config`` lives: named without its changed settings, as records were
        before run names had them (two configs of one name are told apart by :meth:`find`)."""
        return Path(self.root) / self.grid / str(config["env"]) / run_name(config, settings=False)

    def find(self, config: Mapping[str, Any]) -> Path | None:
        """The record of the run of ``config``, if there is one; ``ConfigError`` when a record of that
        name holds another config (a grid file changed under its records)."""
        record = RunDir(self.record_dir(config))
        if not record.is_finished():
            return None
        difference = config_difference(resolved(record.read_config()), resolved(config))
        if difference:
            raise ConfigError(f"the ledger record {record.path} holds another config than the trial ({difference}); "
                              "rename the grid or remove the record")
        return record.path

    def add(self, run_dir: Path) -> Path:
        """Record the finished run ``run_dir``; return the record's directory."""
        return add_run(Path(run_dir), self)


def resolved(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with its sparsity section as the settings it resolves to (a method preset's defaults
    filled in, the execution backend left out), so a record matches a trial that spells them differently."""
    settings = sparsity_of(config).as_kwargs()
    settings.pop("backend")
    return {**config, "sparsity": settings}


def config_difference(recorded: Mapping[str, Any], planned: Mapping[str, Any], prefix: str = "") -> str:
    """The first config path whose value differs (``algo_kwargs.batch_size: 256 vs 128``); empty if none."""
    for key in sorted(set(recorded) | set(planned)):
        if not prefix and key in IGNORED_KEYS:
            continue
        old, new = recorded.get(key), planned.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            inner = config_difference(old, new, f"{prefix}{key}.")
            if inner:
                return inner
        elif old != new:
            return f"{prefix}{key}: recorded {old!r}, planned {new!r}"
    return ""


def completed_summary(run_dir: Path, series: Series) -> dict[str, Any]:
    """``summary.json`` with the machine fields filled for runs that predate them (wall-clock from the events)."""
    run = RunDir(run_dir)
    summary = run.read_summary()
    if "wall_clock_s" not in summary:
        known = series["wall_clock_s"][~np.isnan(series["wall_clock_s"])]
        seconds = float(known[-1]) if len(known) else math.nan
        summary.update(wall_clock_s=seconds, wall_clock_s_per_1k_steps=1000 * seconds / max(1, summary["env_steps"]),
                       wall_clock_source="TensorBoard event times")
    summary.setdefault("cpu", cpu_model())
    summary.setdefault("threads", int(run.read_config().get("threads", 1)))
    return summary


def add_run(run_dir: Path, ledger: Ledger) -> Path:
    """Write the record of the finished run ``run_dir`` (replacing a record of the same run)."""
    run = RunDir(run_dir)
    if not run.is_finished() or not run.has_evaluations():
        raise ConfigError(f"{run_dir} is not a finished run (no summary.json or evaluations.npz)")
    config = run.read_config()
    record = RunDir(ledger.record_dir(config))
    if record.is_run():
        difference = config_difference(resolved(record.read_config()), resolved(config))
        if difference:
            raise ConfigError(f"{record.path} records another run ({difference})")
    series = run.read_series()
    fresh = RunDir(record.path.with_name(record.path.name + ".tmp"))
    shutil.rmtree(fresh.path, ignore_errors=True)
    fresh.path.mkdir(parents=True)
    fresh.write_config(config)
    run.copy_evaluations_to(fresh)
    fresh.write_summary(completed_summary(run_dir, series))
    fresh.write_series(series)
    shutil.rmtree(record.path, ignore_errors=True)
    fresh.path.rename(record.path)
    return record.path


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m sparse_rl.ledger add RUN_DIR... --ledger DIR --grid NAME``."""
    parser = OneLineParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="record finished run directories (unfinished ones are skipped)")
    add.add_argument("runs", nargs="+", type=Path, help="run directories; those without summary.json are skipped")
    add.add_argument("--ledger", type=Path, required=True, help="the ledger's root, e.g. results/ledger")
    add.add_argument("--grid", required=True, help="the grid the runs belong to (a sweep file's name)")
    args = parser.parse_args(argv)
    try:
        ledger = Ledger(args.ledger, args.grid)
        for run_dir in args.runs:
            if not run_dir.is_dir():
                raise ConfigError(f"no such run directory: {run_dir}")
            if not RunDir(run_dir).is_finished():  # still training, or interrupted: record it later
                print(f"{PROG}: skipping {run_dir}: not finished (no summary.json)", file=sys.stderr)
                continue
            record = ledger.add(run_dir)
            size = sum(path.stat().st_size for path in record.iterdir())
            print(f"{run_dir} -> {record} ({size / 1024:.1f} KB)")
    except ConfigError as error:
        raise SystemExit(f"{PROG}: error: {error}") from None


if __name__ == "__main__":
    main()
