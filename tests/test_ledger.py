"""The run ledger: compact records of finished runs, read by the report, skipped by sweeps."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from run_dirs import only_run

from sparse_rl import ledger, report, runs, sweep
from sparse_rl.backends.auto import AUTO_RULE
from sparse_rl.ledger import Ledger
from sparse_rl.machine import TIMING_EPOCH
from sparse_rl.run_config import ConfigError
from sparse_rl.rundir import RunDir, wall_clock_from_event_times
from tests.test_report import write_scalars
from tests.test_sweep import TINY, write_sweep

RUN = {"env": "Pendulum-v1", "total_steps": 300, "eval_freq": 150, "eval_episodes": 1,
       "set": {"algo_kwargs.learning_starts": 100, "algo_kwargs.batch_size": 32, "policy_kwargs.net_arch": [32, 32]}}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path]:
    """Two finished tiny runs (dense and RigL 0.2) under ``runs/``, each recorded in ``ledger/tiny``."""
    root = tmp_path_factory.mktemp("ledger")
    book = Ledger(root / "ledger", "tiny")
    for density in (1.0, 0.2):
        runs.start_run(runs.make_config({**RUN, "density": density}), root / "runs", ledger=book)
    return root / "runs", root / "ledger"


def table(results: Path) -> list[str]:
    """The table lines of ``results.md`` (the first lines name where the runs were read from)."""
    return [line for line in results.read_text().splitlines() if line.startswith("|")]


def test_record_is_a_few_kb_and_holds_no_model(recorded):
    _, root = recorded
    records = sorted((root / "tiny" / "Pendulum-v1").iterdir())
    assert [record.name for record in records] == ["sac-dense-d1-s0", "sac-rigl-d0.2-s0"]
    for record in records:
        assert sorted(path.name for path in record.iterdir()) == sorted(ledger.RECORD_FILES)
        assert sum(path.stat().st_size for path in record.iterdir()) < 8 * 1024
        summary = json.loads((record / "summary.json").read_text())
        assert {"wall_clock_s", "wall_clock_s_per_1k_steps", "cpu_s", "cpu_s_per_1k_steps", "cpu",
                "threads", "auto_rule"} <= set(summary)
        assert summary["timing_epoch"] == TIMING_EPOCH
        assert summary["auto_rule"] == {"source": "built-in", "rows": [list(row) for row in AUTO_RULE]}
        assert 0 < summary["cpu_s"] and summary["cpu_s_per_1k_steps"] == pytest.approx(summary["cpu_s"] / 0.3)
        series = RunDir(record).read_series()
        assert series["env_steps"][-1] == 300 and np.all(np.diff(series["wall_clock_s"]) > 0)
        assert series["train_flops"][-1] == pytest.approx(summary["train_flops"], rel=1e-6)
        density = 1.0 if "dense" in record.name else 0.2
        assert np.nanmax(np.abs(series["density_actor"] - density)) < 0.01


def test_a_record_matches_the_same_run_on_other_threads_and_devices(recorded):
    _, root = recorded
    book = Ledger(root, "tiny")
    assert book.find(runs.make_config({**RUN, "density": 1.0, "threads": 2})) is not None
    assert book.find(runs.make_config({**RUN, "density": 1.0, "seed": 1})) is None


def test_report_over_records_equals_report_over_run_directories(recorded, tmp_path):
    run_root, ledger_root = recorded
    from_runs = report.write_report([run_root], tmp_path / "from_runs", reps=50)
    from_records = report.write_report([ledger_root / "tiny"], tmp_path / "from_records", reps=50)
    assert table(from_runs) == table(from_records)
    assert len(table(from_runs)) == 4 + 3  # header, rule, dense, rigl; then header, rule, rigl vs dense
    for kind in ("steps", "flops", "wallclock"):
        assert (tmp_path / "from_records" / f"Pendulum-v1_sac_return_vs_{kind}.png").is_file()


def test_report_says_how_many_of_a_grids_runs_are_complete(recorded, tmp_path):
    _, ledger_root = recorded
    grid = write_sweep(tmp_path, name="tiny", base={**TINY, "set": RUN["set"]}, grid={"density": [1.0, 0.2, 0.5]})
    results = report.write_report([ledger_root / "tiny"], tmp_path / "out", reps=20, grid=grid).read_text()
    assert f"Grid tiny ({grid}): 2 of 3 runs complete." in results.splitlines()[:4]


def test_train_records_a_single_run_in_a_ledger(tmp_path):
    from sparse_rl import train

    train.main(["--env", "Pendulum-v1", "--density", "0.5", "--total-steps", "300", "--eval-freq", "300",
                "--eval-episodes", "1", "--logdir", str(tmp_path / "runs"), "--ledger", str(tmp_path / "book"),
                "--grid", "mine", "--no-progress-bar", *(f"--set={k}={v}" for k, v in RUN["set"].items())])
    record = tmp_path / "book" / "mine" / "Pendulum-v1" / "sac-rigl-d0.5-s0"
    assert sorted(path.name for path in record.iterdir()) == sorted(ledger.RECORD_FILES)


def test_add_command_records_finished_runs_and_skips_unfinished_ones(recorded, tmp_path, capsys):
    run_root, _ = recorded
    run_dir = only_run(run_root / "Pendulum-v1", "sac-rigl-d0.2-s0")
    ledger.main(["add", str(run_dir), "--ledger", str(tmp_path / "book"), "--grid", "g"])
    record = tmp_path / "book" / "g" / "Pendulum-v1" / "sac-rigl-d0.2-s0"
    assert f"{run_dir} -> {record}" in capsys.readouterr().out
    assert yaml.safe_load((record / "config.yaml").read_text()) == yaml.safe_load((run_dir / "config.yaml").read_text())
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    ledger.main(["add", str(unfinished), str(run_dir), "--ledger", str(tmp_path / "book"), "--grid", "g"])
    out, err = capsys.readouterr()
    assert err.strip() == f"sparse_rl.ledger: skipping {unfinished}: not finished (no summary.json)"
    assert f"{run_dir} -> {record}" in out  # recorded again: the record is refreshed
    assert not (tmp_path / "book" / "g" / "Pendulum-v1" / "unfinished").exists()
    with pytest.raises(ConfigError, match="is not a finished run"):
        Ledger(tmp_path / "book", "g").add(unfinished)


def test_sweep_skips_recorded_trials_and_refuses_a_changed_config(recorded, tmp_path, capsys):
    _, ledger_root = recorded
    path = write_sweep(tmp_path, name="tiny", base={**TINY, "set": RUN["set"]}, grid={"density": [1.0, 0.2, 0.5]})
    sweep.main([str(path), "--logdir", str(tmp_path / "fresh"), "--ledger", str(ledger_root), "--dry-run"])
    out = capsys.readouterr().out
    assert "3 trials, 2 recorded in the ledger, 0 finished earlier, 1 to run" in out
    reuse = write_sweep(tmp_path, name="other", reuse=["tiny"], base={**TINY, "set": RUN["set"]},
                        grid={"density": [1.0]})
    sweep.main([str(reuse), "--logdir", str(tmp_path / "fresh"), "--ledger", str(ledger_root), "--dry-run"])
    assert "1 trials, 1 recorded in the ledger" in capsys.readouterr().out
    changed = write_sweep(tmp_path, name="tiny", base={**TINY, "set": {**RUN["set"], "algo_kwargs.batch_size": 64}},
                          grid={"density": [1.0]})
    with pytest.raises(SystemExit) as exit_info:
        sweep.main([str(changed), "--logdir", str(tmp_path / "fresh"), "--ledger", str(ledger_root), "--dry-run"])
    assert exit_info.value.code == 2
    assert re.search("holds another config than the trial .*algo_kwargs.batch_size: recorded 32, planned 64",
                     capsys.readouterr().err)


def test_series_of_a_run_without_its_own_tags_comes_from_event_times_and_layer_sizes(tmp_path):
    """Runs started before ``time/wall_clock_s`` and ``sparsity/density/<net>`` were logged (the 100k runs)."""
    run = tmp_path / "run"
    (run / "tb_1").mkdir(parents=True)
    write_scalars(run / "tb_1", "flops/train_cumulative", [(1000, 1.0), (2000, 2.0)])
    write_scalars(run / "tb_1", "sparsity/density/actor/latent_pi.0", [(1000, 0.5), (2000, 0.5)])
    write_scalars(run / "tb_1", "sparsity/density/actor/mu", [(1000, 1.0), (2000, 1.0)])
    masks = {"actor.latent_pi.0.mask": torch.ones(30, 10, dtype=torch.bool), "actor.mu.mask": torch.ones(1, 10)}
    buffer = io.BytesIO()
    torch.save(masks, buffer)
    with zipfile.ZipFile(run / "model.zip", "w") as archive:
        archive.writestr("policy.pth", buffer.getvalue())
    series = RunDir(run).read_series()
    assert list(series["env_steps"]) == [1000, 2000]
    assert series["density_actor"] == pytest.approx([(0.5 * 300 + 10) / 310] * 2)
    assert np.all(np.isnan(series["density_critic"]))


def test_wall_clock_from_event_times_adds_the_time_of_earlier_processes():
    # (event file creation time, event wall time, step, value): a run resumed in a second process
    points = [(100.0, 110.0, 1000, 0.0), (100.0, 130.0, 2000, 0.0), (500.0, 520.0, 3000, 0.0)]
    assert wall_clock_from_event_times(points) == {1000: 10.0, 2000: 30.0, 3000: 50.0}


@pytest.mark.slow
def test_two_trial_sweep_into_a_ledger_then_a_second_sweep_reruns_nothing(tmp_path, capsys):
    path = write_sweep(tmp_path, name="pair", base=TINY, grid={"density": [1.0, 0.2]})
    book = tmp_path / "ledger"
    sweep.main([str(path), "--logdir", str(tmp_path / "first"), "--ledger", str(book), "--max-concurrent", "2"])
    records = sorted((book / "pair" / "Pendulum-v1").iterdir())
    assert [record.name for record in records] == ["sac-dense-d1-s0", "sac-rigl-d0.2-s0"]
    assert all(not (record / "model.zip").exists() for record in records)
    capsys.readouterr()
    # another machine, another logdir: only the committed ledger is shared
    sweep.main([str(path), "--logdir", str(tmp_path / "second"), "--ledger", str(book)])
    out = capsys.readouterr().out
    assert "2 trials, 2 recorded in the ledger, 0 finished earlier, 0 to run" in out
    assert not (tmp_path / "second").exists()


def test_a_record_matches_a_trial_that_spells_the_same_sparsity_settings_differently():
    from sparse_rl.ledger import config_difference, resolved

    explicit = {"algo": "sac", "sparsity": {"density": 0.1, "method": "rigl", "distribution": "erk",
                                            "update_interval": 1000, "drop_fraction": 0.5, "update_end": 0.8}}
    implicit = {"algo": "sac", "sparsity": {"density": 0.1, "method": "rigl", "backend": "sparse"}}
    assert config_difference(resolved(explicit), resolved(implicit)) == ""
    other = {"algo": "sac", "sparsity": {"density": 0.2, "method": "rigl"}}
    assert "sparsity.density" in config_difference(resolved(explicit), resolved(other))


def test_sweep_records_runs_that_finished_before_the_ledger_was_given(recorded, tmp_path, capsys):
    run_root, _ = recorded
    path = write_sweep(tmp_path, name="late", base={**TINY, "set": RUN["set"]}, grid={"density": [1.0, 0.2]})
    book = tmp_path / "book"
    sweep.main([str(path), "--logdir", str(run_root), "--ledger", str(book), "--dry-run"])
    assert "0 recorded in the ledger, 2 finished earlier, 0 to run" in capsys.readouterr().out
    assert not book.exists()  # a dry run writes nothing
    sweep.main([str(path), "--logdir", str(run_root), "--ledger", str(book)])  # nothing to run: no Ray
    assert "2 recorded in the ledger, 0 finished earlier, 0 to run" in capsys.readouterr().out
    assert sorted(p.name for p in (book / "late" / "Pendulum-v1").iterdir()) == ["sac-dense-d1-s0", "sac-rigl-d0.2-s0"]


@pytest.mark.parametrize("grid", ["../elsewhere", "a/b", ".hidden", ""])
def test_a_grid_name_is_one_directory_never_a_path(grid, tmp_path):
    with pytest.raises(ConfigError, match="grid name must be"):
        Ledger(tmp_path, grid)
    with pytest.raises(SystemExit, match="grid name must be"):
        ledger.main(["add", str(tmp_path), "--ledger", str(tmp_path / "book"), "--grid", grid])


def test_add_command_refuses_a_missing_run_directory(tmp_path):
    with pytest.raises(SystemExit, match="no such run directory: .*missing"):
        ledger.main(["add", str(tmp_path / "missing"), "--ledger", str(tmp_path / "book"), "--grid", "g"])
    assert not (tmp_path / "book").exists()
