"""The runs a report reads: run directories and ledger records found, loaded and described."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparse_rl.run_names import run_label
from sparse_rl.rundir import RunDir, Series

PROG = "sparse_rl.report"
CONFIG_KEYS = ("env", "algo", "seed", "total_steps")
GroupKey = tuple[str, str, str, float, str, str]
"""(env, algo, method, density, detail, settings): a :class:`~sparse_rl.run_names.RunLabel`'s parts, the
settings being every other field that changes what a run learns (:func:`settings_text`)."""
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
    """What the density alone does not say (``actor 0.1``); see :attr:`~sparse_rl.run_names.RunLabel.detail`."""
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
    """``total_steps 4000, net_arch []``: changed settings (:func:`~sparse_rl.run_names.changed_settings`)."""
    return ", ".join(f"{path.rsplit('.', 1)[-1]} {json.dumps(value)}" for path, value in settings)
