"""A run ledger in git: a compact record of every finished run, so a benchmark grows across sessions.

    python -m sparse_rl.ledger add runs/mujoco_100k/*/* --ledger results/ledger --grid mujoco_100k
    python -m sparse_rl.sweep configs/sweeps/mujoco_100k.yaml --ledger results/ledger   # records as runs finish
    python -m sparse_rl.report results/ledger/mujoco_100k --out results/mujoco_100k

A record lives in ``<ledger>/<grid>/<env>/<run name>/`` and holds ``config.yaml`` (the effective
config), ``evaluations.npz``, ``summary.json`` (with wall-clock, CPU model and threads) and
``series.csv``: the scalar series the report plots (env steps, wall-clock seconds, cumulative
training FLOPs, density of the actor and of the critics), a few KB in all and no model or
replay buffer. ``sparse_rl.report`` reads a record exactly as it reads a run directory, and
``sparse_rl.sweep --ledger`` skips every trial whose record exists.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sparse_rl.cli import OneLineParser
from sparse_rl.machine import cpu_model
from sparse_rl.run_config import ConfigError, read_yaml, run_name
from sparse_rl.sparsity import SparsityConfig

PROG = "sparse_rl.ledger"
RECORD_FILES = ("config.yaml", "evaluations.npz", "summary.json", "series.csv")
SERIES_COLUMNS = ("env_steps", "wall_clock_s", "train_flops", "density_actor", "density_critic")
SERIES_TAGS = {"train_flops": "flops/train_cumulative", "wall_clock_s": "time/wall_clock_s",
               "density_actor": "sparsity/density/actor", "density_critic": "sparsity/density/critic"}
"""The TensorBoard tag of each series column (``sparse_rl.runs`` logs the last three)."""
IGNORED_KEYS = ("device", "threads", "checkpoint_freq")
"""Config keys that change where a run ran, not what it computes: a record matches a trial without them
(and so does the sparsity ``backend``: see :func:`resolved`)."""

Series = dict[str, np.ndarray]


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
        record = self.record_dir(config)
        if not (record / "summary.json").is_file():
            return None
        difference = config_difference(resolved(read_yaml(record / "config.yaml")), resolved(config))
        if difference:
            raise ConfigError(f"the ledger record {record} holds another config than the trial ({difference}); "
                              "rename the grid or remove the record")
        return record

    def add(self, run_dir: Path) -> Path:
        """Record the finished run ``run_dir``; return the record's directory."""
        return add_run(Path(run_dir), self)


def resolved(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with its sparsity section as the settings it resolves to (a method preset's defaults
    filled in, the execution backend left out), so a record matches a trial that spells them differently."""
    settings = SparsityConfig.from_kwargs(**(config.get("sparsity") or {})).as_kwargs()
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


Events = dict[str, list[tuple[float, float, int, float]]]
"""TensorBoard scalars by tag: (creation time of the event file, wall time, step, value)."""


def scalar_events(run_dir: Path) -> Events:
    """Every TensorBoard scalar under ``run_dir``, by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events: Events = {}
    for path in run_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        epoch = event_file_epoch(path)
        for tag in accumulator.Tags()["scalars"]:
            events.setdefault(tag, []).extend((epoch, e.wall_time, e.step, e.value) for e in accumulator.Scalars(tag))
    return events


def event_file_epoch(path: Path) -> float:
    """When an event file was created (its name says: ``events.out.tfevents.<epoch>.<host>...``)."""
    match = re.match(r"events\.out\.tfevents\.(\d+(?:\.\d+)?)", path.name)
    return float(match.group(1)) if match else path.stat().st_mtime


def by_step(points: Sequence[tuple[float, float, int, float]]) -> dict[int, float]:
    """Values by step, a later process's event replacing an earlier one's at the same step (a resumed run)."""
    return {step: value for _, _, step, value in sorted(points)}


def wall_clock_from_event_times(points: Sequence[tuple[float, float, int, float]]) -> dict[int, float]:
    """Training seconds by step, for runs that did not log ``time/wall_clock_s``: each event's time
    since its event file (its process's ``learn()``) began, plus the time spent in earlier processes."""
    ends: dict[float, float] = {}
    for epoch, wall_time, _, _ in points:
        ends[epoch] = max(ends.get(epoch, epoch), wall_time)
    offsets, total = {}, 0.0
    for epoch in sorted(ends):
        offsets[epoch], total = total, total + ends[epoch] - epoch
    return {step: offsets[epoch] + wall_time - epoch for epoch, wall_time, step, _ in sorted(points)}


def layer_sizes(run_dir: Path) -> dict[str, int]:
    """Weights per layer (``actor/latent_pi.0``) from the masks in the run's model or checkpoint; {} without one."""
    import torch

    for model in (run_dir / "model.zip", run_dir / "checkpoint" / "model.zip"):
        if model.is_file():
            with zipfile.ZipFile(model) as archive:
                state = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
            return {key.removesuffix(".mask").replace(".", "/", 1): int(value.numel()) for key, value in state.items()
                    if key.endswith(".mask") and key.split(".")[0] in ("actor", "critic")}
    return {}


def network_density_series(run_dir: Path, events: Events, net: str) -> dict[int, float]:
    """A network's density by step from its layers' ``sparsity/density/<net>/<layer>`` tags, weighted by
    layer size (for runs that did not log ``sparsity/density/<net>``); {} when sizes are unknown."""
    prefix = f"sparsity/density/{net}/"
    layers = {tag[len(prefix):]: by_step(points) for tag, points in events.items() if tag.startswith(prefix)}
    sizes = layer_sizes(run_dir) if layers else {}
    if not layers or any(f"{net}/{name}" not in sizes for name in layers):
        return {}
    steps = sorted(set.intersection(*(set(values) for values in layers.values())))
    total = sum(sizes[f"{net}/{name}"] for name in layers)
    return {step: sum(values[step] * sizes[f"{net}/{name}"] for name, values in layers.items()) / total
            for step in steps}


def series_from_events(run_dir: Path) -> Series:
    """The series columns of a run directory, from its TensorBoard events."""
    events = scalar_events(run_dir)
    columns: dict[str, dict[int, float]] = {name: by_step(events.get(tag, [])) for name, tag in SERIES_TAGS.items()}
    if not columns["wall_clock_s"] and events.get(SERIES_TAGS["train_flops"]):
        columns["wall_clock_s"] = wall_clock_from_event_times(events[SERIES_TAGS["train_flops"]])
    for net in ("actor", "critic"):
        if not columns[f"density_{net}"]:
            columns[f"density_{net}"] = network_density_series(run_dir, events, net)
    steps = sorted(set(columns["train_flops"]) | set(columns["wall_clock_s"]))
    series = {"env_steps": np.array(steps, dtype=float)}
    for name, values in columns.items():
        series[name] = np.array([values.get(step, math.nan) for step in steps], dtype=float)
    return series


def read_series(run_dir: Path) -> Series:
    """A run's series (columns :data:`SERIES_COLUMNS`): a record's ``series.csv``, else its TensorBoard events."""
    path = run_dir / "series.csv"
    if not path.is_file():
        return series_from_events(run_dir)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {name: np.array([float(row[name]) if row[name] else math.nan for row in rows]) for name in SERIES_COLUMNS}


def write_series(path: Path, series: Series) -> None:
    """``series.csv``: one row per logged step; an unknown value is an empty cell."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SERIES_COLUMNS)
        for row in zip(*(series[name] for name in SERIES_COLUMNS)):
            writer.writerow(["" if math.isnan(value) else repr(float(value)) for value in row])


def completed_summary(run_dir: Path, series: Series) -> dict[str, Any]:
    """``summary.json`` with the machine fields filled for runs that predate them (wall-clock from the events)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if "wall_clock_s" not in summary:
        known = series["wall_clock_s"][~np.isnan(series["wall_clock_s"])]
        seconds = float(known[-1]) if len(known) else math.nan
        summary.update(wall_clock_s=seconds, wall_clock_s_per_1k_steps=1000 * seconds / max(1, summary["env_steps"]),
                       wall_clock_source="TensorBoard event times")
    summary.setdefault("cpu", cpu_model())
    summary.setdefault("threads", int(read_yaml(run_dir / "config.yaml").get("threads", 1)))
    return summary


def add_run(run_dir: Path, ledger: Ledger) -> Path:
    """Write the record of the finished run ``run_dir`` (replacing a record of the same run)."""
    if not (run_dir / "summary.json").is_file() or not (run_dir / "evaluations.npz").is_file():
        raise ConfigError(f"{run_dir} is not a finished run (no summary.json or evaluations.npz)")
    config = read_yaml(run_dir / "config.yaml")
    record = ledger.record_dir(config)
    if (record / "config.yaml").is_file():
        difference = config_difference(resolved(read_yaml(record / "config.yaml")), resolved(config))
        if difference:
            raise ConfigError(f"{record} records another run ({difference})")
    series = read_series(run_dir)
    fresh = record.with_name(record.name + ".tmp")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    (fresh / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copyfile(run_dir / "evaluations.npz", fresh / "evaluations.npz")
    (fresh / "summary.json").write_text(json.dumps(completed_summary(run_dir, series), indent=2))
    write_series(fresh / "series.csv", series)
    shutil.rmtree(record, ignore_errors=True)
    fresh.rename(record)
    return record


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
            if not (run_dir / "summary.json").is_file():  # still training, or interrupted: record it later
                print(f"{PROG}: skipping {run_dir}: not finished (no summary.json)", file=sys.stderr)
                continue
            record = ledger.add(run_dir)
            size = sum(path.stat().st_size for path in record.iterdir())
            print(f"{run_dir} -> {record} ({size / 1024:.1f} KB)")
    except ConfigError as error:
        raise SystemExit(f"{PROG}: error: {error}") from None


if __name__ == "__main__":
    main()
