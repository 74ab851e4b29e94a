"""One run directory's files: where each lives, how it is written and how it is read.

A run directory ``<logdir>/<env>/<algo>-<label>-s<seed>/`` (:mod:`sparse_rl.runs`) holds::

    config.yaml          the effective config (written first; a directory holding it is a run)
    tb_1/                TensorBoard events (SB3's logger, ``tb_log_name`` :data:`TENSORBOARD_NAME`)
    evaluations.npz      SB3's EvalCallback (timesteps, results, ep_lengths)
    checkpoint/          model.zip, replay_buffer.pkl, state.json (FLOP counters, wall-clock, CPU time)
    MUJOCO_LOG.TXT       MuJoCo's warnings (:func:`sparse_rl.quiet.mujoco_log_to`), MuJoCo envs only
    model.zip            at the end
    summary.json         at the end: a run with it is finished

A ledger record (:mod:`sparse_rl.ledger`) is a subset with the same names, ``config.yaml``,
``evaluations.npz`` and ``summary.json``, plus ``series.csv``, the scalar series
(:data:`SERIES_COLUMNS`) that a run directory keeps in its TensorBoard events; :class:`RunDir`
reads both, so :meth:`RunDir.read_series` is the series of either.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sparse_rl.run_config import read_yaml, upgrade_config

CONFIG = "config.yaml"
SUMMARY = "summary.json"
EVALUATIONS = "evaluations.npz"
SERIES = "series.csv"
MODEL = "model.zip"
CHECKPOINT = "checkpoint"
REPLAY_BUFFER = "replay_buffer.pkl"
STATE = "state.json"
TENSORBOARD_NAME = "tb"
"""SB3's ``tb_log_name`` of a run: its events go to ``tb_1/`` (SB3 numbers the directory)."""
EVENT_FILES = "events.out.tfevents.*"

SERIES_COLUMNS = ("env_steps", "wall_clock_s", "train_flops", "density_actor", "density_critic")
SERIES_TAGS = {"train_flops": "flops/train_cumulative", "wall_clock_s": "time/wall_clock_s",
               "density_actor": "sparsity/density/actor", "density_critic": "sparsity/density/critic"}
"""The TensorBoard tag of each series column (``sparse_rl.runs`` logs the last three)."""

Series = dict[str, np.ndarray]
"""A run's scalar series by column (:data:`SERIES_COLUMNS`), one value per logged step."""
Evaluations = dict[str, np.ndarray]
"""The arrays of ``evaluations.npz`` by name (``timesteps``, ``results``, ``ep_lengths``)."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint directory: model, replay buffer and the run's counters (``state.json``)."""

    path: Path

    @property
    def model_file(self) -> Path:
        """The SB3 model (``model.zip``)."""
        return self.path / MODEL

    @property
    def replay_buffer_file(self) -> Path:
        """The replay buffer (``replay_buffer.pkl``)."""
        return self.path / REPLAY_BUFFER

    @property
    def state_file(self) -> Path:
        """FLOP counters, wall-clock, CPU time and steps (``state.json``)."""
        return self.path / STATE

    def exists(self) -> bool:
        """Whether the checkpoint holds a model (a run resumes from it)."""
        return self.model_file.exists()

    def read_state(self) -> dict[str, Any]:
        """The recorded counters; {} if there are none."""
        return json.loads(self.state_file.read_text()) if self.state_file.is_file() else {}

    def write_state(self, state: Mapping[str, Any]) -> None:
        """Write the counters as ``state.json``."""
        self.state_file.write_text(json.dumps(state))


@dataclass(frozen=True)
class RunDir:
    """A run directory or a ledger record: its files' paths, writers and readers."""

    path: Path

    @property
    def config_file(self) -> Path:
        """The effective config (``config.yaml``)."""
        return self.path / CONFIG

    @property
    def summary_file(self) -> Path:
        """The finished run's summary (``summary.json``)."""
        return self.path / SUMMARY

    @property
    def evaluations_file(self) -> Path:
        """SB3's EvalCallback log (``evaluations.npz``)."""
        return self.path / EVALUATIONS

    @property
    def series_file(self) -> Path:
        """A ledger record's scalar series (``series.csv``)."""
        return self.path / SERIES

    @property
    def model_file(self) -> Path:
        """The finished run's model (``model.zip``)."""
        return self.path / MODEL

    @property
    def checkpoint(self) -> Checkpoint:
        """The run's checkpoint (``checkpoint/``)."""
        return self.checkpoint_at("")

    def checkpoint_at(self, suffix: str) -> Checkpoint:
        """The checkpoint directory named ``checkpoint<suffix>`` (``.tmp`` and ``.old`` while one is replaced)."""
        return Checkpoint(self.path / f"{CHECKPOINT}{suffix}")

    def is_run(self) -> bool:
        """Whether the directory is a run or a record (it holds ``config.yaml``)."""
        return self.config_file.is_file()

    def is_finished(self) -> bool:
        """Whether the run reached its budget (it holds ``summary.json``)."""
        return self.summary_file.is_file()

    def has_evaluations(self) -> bool:
        """Whether SB3's EvalCallback has written ``evaluations.npz``."""
        return self.evaluations_file.is_file()

    def read_config(self) -> dict[str, Any]:
        """The effective config (one written by sparse_rl 0.1.0 upgraded, :func:`~sparse_rl.run_config.upgrade_config`);
        ``ConfigError`` if it cannot be read or is not a mapping."""
        return upgrade_config(read_yaml(self.config_file))

    def parse_config(self) -> Any:
        """Whatever ``config.yaml`` holds as YAML (None if empty); ``yaml.YAMLError`` if it is not YAML."""
        return yaml.safe_load(self.config_file.read_text())

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write the effective config as ``config.yaml``, in its own key order."""
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def read_summary(self) -> dict[str, Any]:
        """The finished run's summary."""
        return json.loads(self.summary_file.read_text())

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write the summary as ``summary.json``."""
        self.summary_file.write_text(json.dumps(summary, indent=2))

    def read_evaluations(self) -> Evaluations | None:
        """The arrays of ``evaluations.npz``; None if there is none yet."""
        if not self.has_evaluations():
            return None
        with np.load(self.evaluations_file) as data:
            return {name: data[name] for name in data.files}

    def copy_evaluations_to(self, other: RunDir) -> None:
        """Copy ``evaluations.npz`` into ``other``."""
        shutil.copyfile(self.evaluations_file, other.evaluations_file)

    def read_series(self) -> Series:
        """The series (:data:`SERIES_COLUMNS`): a record's ``series.csv``, else the TensorBoard events."""
        if not self.series_file.is_file():
            return series_from_events(self.path)
        with self.series_file.open() as handle:
            rows = list(csv.DictReader(handle))
        return {name: np.array([float(row[name]) if row[name] else math.nan for row in rows])
                for name in SERIES_COLUMNS}

    def write_series(self, series: Series) -> None:
        """Write ``series.csv``: one row per logged step; an unknown value is an empty cell."""
        with self.series_file.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(SERIES_COLUMNS)
            for row in zip(*(series[name] for name in SERIES_COLUMNS)):
                writer.writerow(["" if math.isnan(value) else repr(float(value)) for value in row])

    def saved_model(self) -> Path | None:
        """The run's ``model.zip``, else its checkpoint's; None without either."""
        return next((model for model in (self.model_file, self.checkpoint.model_file) if model.is_file()), None)

    def event_files(self) -> list[Path]:
        """Every TensorBoard event file under the directory."""
        return list(self.path.rglob(EVENT_FILES))

    def write_checkpoint(self, write: Callable[[Checkpoint], None]) -> None:
        """Have ``write`` fill a fresh checkpoint next to the old one, then swap, so a crash never leaves half of
        one (nor none)."""
        fresh, final, old = (self.checkpoint_at(suffix).path for suffix in (".tmp", "", ".old"))
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        write(Checkpoint(fresh))
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        fresh.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def search(root: Path) -> list[Path]:
        """The run directories and records under ``root`` (those holding ``config.yaml``), sorted."""
        return sorted(config.parent for config in root.rglob(CONFIG))


# ---------------------------------------------------------------------------------------------
# The series of a run directory, from its TensorBoard events (a record has them in series.csv)

Events = dict[str, list[tuple[float, float, int, float]]]
"""TensorBoard scalars by tag: (creation time of the event file, wall time, step, value)."""


def scalar_events(run_dir: Path) -> Events:
    """Every TensorBoard scalar under ``run_dir``, by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events: Events = {}
    for path in RunDir(run_dir).event_files():
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

    model = RunDir(run_dir).saved_model()
    if model is None:
        return {}
    with zipfile.ZipFile(model) as archive:
        state = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
    return {key.removesuffix(".mask").replace(".", "/", 1): int(value.numel()) for key, value in state.items()
            if key.endswith(".mask") and key.split(".")[0] in ("actor", "critic")}


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
