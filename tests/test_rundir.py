"""RunDir: the one place that names, writes and reads a run directory's (and a ledger record's) files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sparse_rl import rundir, runs
from sparse_rl.ledger import RECORD_FILES, Ledger
from sparse_rl.rundir import SERIES_COLUMNS, RunDir

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "results" / "ledger" / "mujoco_100k" / "HalfCheetah-v4" / "sac-dense-d1-s0"
"""A committed ledger record: SAC on HalfCheetah-v4, dense, seed 0, 100k steps."""
TINY = {"env": "Pendulum-v1", "total_steps": 300, "eval_freq": 150, "eval_episodes": 1, "density": 0.5,
        "set": {"algo_kwargs.learning_starts": 100, "algo_kwargs.batch_size": 32, "policy_kwargs.net_arch": [32, 32]}}


def same_series(a: rundir.Series, b: rundir.Series) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(a[name], b[name], equal_nan=True) for name in a)


def test_written_files_read_back(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    assert not run.is_run() and not run.is_finished() and run.read_evaluations() is None
    config = {"env": "Pendulum-v1", "algo": "sac", "seed": 3, "sparsity": {"density": 0.1}, "total_steps": 10}
    run.write_config(config)
    assert run.is_run() and run.config_file == tmp_path / "run" / "config.yaml"
    assert run.read_config() == config == run.parse_config()
    assert list(run.read_config()) == list(config)  # key order kept
    summary = {"final_return": -150.5, "env_steps": 10, "network_density": {"actor": 0.1, "critic": 0.1}}
    run.write_summary(summary)
    assert run.is_finished() and run.read_summary() == summary
    np.savez(run.evaluations_file, timesteps=np.array([5, 10]), results=np.ones((2, 3)), ep_lengths=np.ones((2, 3)))
    evaluations = run.read_evaluations()
    assert evaluations is not None and sorted(evaluations) == ["ep_lengths", "results", "timesteps"]
    assert list(evaluations["timesteps"]) == [5, 10]
    series = {name: np.array([1.0, 2.5, 1 / 3]) for name in SERIES_COLUMNS}
    series["density_critic"] = np.array([math.nan, 0.5, 0.25])
    run.write_series(series)
    assert run.series_file.read_text().splitlines()[:2] == [",".join(SERIES_COLUMNS), "1.0,1.0,1.0,1.0,"]
    assert same_series(run.read_series(), series)
    other = RunDir(tmp_path / "other")
    other.path.mkdir()
    run.copy_evaluations_to(other)
    assert other.evaluations_file.read_bytes() == run.evaluations_file.read_bytes()
    assert RunDir.search(tmp_path) == [run.path]  # "other" holds no config.yaml


def test_a_checkpoint_is_swapped_in_whole_or_not_at_all(tmp_path):
    run = RunDir(tmp_path)
    assert run.checkpoint.read_state() == {} and not run.checkpoint.exists() and run.saved_model() is None

    def write(step: int):
        def fill(checkpoint: rundir.Checkpoint) -> None:
            assert checkpoint.path == tmp_path / "checkpoint.tmp"
            checkpoint.model_file.write_text(f"model {step}")
            checkpoint.write_state({"env_steps": step})
        return fill

    run.write_checkpoint(write(100))
    run.write_checkpoint(write(200))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint"]
    assert run.checkpoint.exists() and run.checkpoint.read_state() == {"env_steps": 200}
    assert run.saved_model() == run.checkpoint.model_file

    def crash(checkpoint: rundir.Checkpoint) -> None:
        checkpoint.model_file.write_text("half a model")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run.write_checkpoint(crash)
    assert run.checkpoint.read_state() == {"env_steps": 200}
    assert run.checkpoint.model_file.read_text() == "model 200"
    run.model_file.write_text("final")
    assert run.saved_model() == run.model_file  # a finished run's model before its checkpoint's


def test_a_committed_ledger_record_reads_as_a_run():
    record = RunDir(RECORD)
    assert sorted(path.name for path in RECORD.iterdir()) == sorted(RECORD_FILES)
    assert record.is_run() and record.is_finished() and record.saved_model() is None
    config, summary = record.read_config(), record.read_summary()
    assert (config["env"], config["algo"], config["seed"], config["sparsity"]["density"]) == \
        ("HalfCheetah-v4", "sac", 0, 1.0)
    assert summary["env_steps"] == config["total_steps"] == 100_000
    evaluations = record.read_evaluations()
    assert evaluations is not None and evaluations["timesteps"][-1] == 100_000
    assert evaluations["results"][-1].mean() == pytest.approx(summary["final_return"])
    series = record.read_series()
    assert list(series) == list(SERIES_COLUMNS) and len({len(column) for column in series.values()}) == 1
    assert series["env_steps"][-1] == 100_000 and np.all(np.diff(series["env_steps"]) > 0)
    assert series["train_flops"][-1] == pytest.approx(summary["train_flops"], rel=1e-4)  # float32 in TensorBoard
    assert np.all(series["density_actor"] == 1.0)
    assert RECORD in RunDir.search(RECORD.parent.parent)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> RunDir:
    """A finished 300-step RigL 0.5 run on Pendulum-v1."""
    root = tmp_path_factory.mktemp("rundir")
    return RunDir(runs.start_run(runs.make_config(TINY), root / "runs"))


def test_a_real_run_directory_reads_back(tiny_run):
    names = {path.name for path in tiny_run.path.iterdir()}
    assert {"config.yaml", "summary.json", "evaluations.npz", "model.zip", "checkpoint", "tb_1"} <= names
    assert not names & {"checkpoint.tmp", "checkpoint.old", "series.csv"}
    checkpoint = tiny_run.checkpoint
    assert sorted(path.name for path in checkpoint.path.iterdir()) == ["model.zip", "replay_buffer.pkl", "state.json"]
    summary = tiny_run.read_summary()
    assert summary["env_steps"] == checkpoint.read_state()["env_steps"] == tiny_run.read_config()["total_steps"]
    assert tiny_run.saved_model() == tiny_run.model_file
    assert tiny_run.event_files() and all(path.parent.name == "tb_1" for path in tiny_run.event_files())
    evaluations = tiny_run.read_evaluations()
    assert evaluations is not None and list(evaluations["timesteps"]) == [150, 300]
    series = tiny_run.read_series()  # from the TensorBoard events: a run directory has no series.csv
    assert series["env_steps"][-1] == 300
    assert series["train_flops"][-1] == pytest.approx(summary["train_flops"], rel=1e-6)
    assert np.nanmax(np.abs(series["density_actor"] - 0.5)) < 0.01


def test_a_record_of_a_real_run_reads_the_same_series(tiny_run, tmp_path):
    record = RunDir(Ledger(tmp_path, "tiny").add(tiny_run.path))
    assert sorted(path.name for path in record.path.iterdir()) == sorted(RECORD_FILES)
    assert same_series(record.read_series(), tiny_run.read_series())
    assert record.read_config() == tiny_run.read_config()
    assert record.read_evaluations()["results"].tolist() == tiny_run.read_evaluations()["results"].tolist()
    assert record.read_summary() == tiny_run.read_summary()
