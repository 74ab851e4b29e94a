"""``python -m sparse_rl.sweep``: trial expansion and validation, and real sweeps on a local Ray."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sparse_rl import report, sweep
from sparse_rl.run_config import read_yaml
from sparse_rl.sweep import SweepError, parse_sweep_args, plan_trials, trial_options

SWEEP_FILES = sorted((Path(__file__).resolve().parents[1] / "configs" / "sweeps").glob("*.yaml"))

TINY = {"env": "Pendulum-v1", "total_steps": 300, "eval_freq": 150, "eval_episodes": 1,
        "set": {"algo_kwargs.learning_starts": 100, "algo_kwargs.batch_size": 32}}


def write_sweep(tmp_path: Path, **spec) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_and_trials_expand_over_base():
    options = trial_options({"base": {"env": "Pendulum-v1", "set": {"a.b": 1}},
                             "grid": {"density": [1.0, 0.5], "seed": [0, 1, 2]},
                             "trials": [{"param_matched": 0.5, "seed": [0, 1], "set": {"c.d": 2}}]})
    assert len(options) == 6 + 2
    assert {(o["density"], o["seed"]) for o in options[:6]} == {(d, s) for d in (1.0, 0.5) for s in (0, 1, 2)}
    assert all(o["env"] == "Pendulum-v1" for o in options)
    assert options[-1] == {"env": "Pendulum-v1", "param_matched": 0.5, "seed": 1, "set": {"a.b": 1, "c.d": 2}}


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"densty": [0.1]}}, "unknown trial option"),
    ({"grids": {}}, "unknown sweep key"),
    ({"grid": {"density": 0.1}}, "must be a list"),
    ({"grid": {"seed": []}}, "empty list"),
    ({"base": {"set": ["x"]}}, "'set' must be a mapping"),
])
def test_bad_sweep_files_are_refused(spec, message):
    with pytest.raises(SweepError, match=message):
        trial_options(spec)


def test_every_trial_config_is_validated_before_running(tmp_path):
    with pytest.raises(SweepError, match="unknown method"):
        plan_trials({"base": TINY, "grid": {"method": ["rigl", "rigll"], "density": [0.5]}}, tmp_path)
    with pytest.raises(SweepError, match="net_arch must be a list of positive layer widths"):
        plan_trials({"base": TINY, "trials": [{"seed": 0}, {"seed": 1, "set": {"policy_kwargs.net_arch": [-1]}}]},
                    tmp_path)
    with pytest.raises(SweepError, match="two trials write"):
        plan_trials({"base": TINY, "trials": [{"seed": 1}, {"seed": 1}]}, tmp_path)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[path.stem for path in SWEEP_FILES])
def test_every_committed_sweep_plans_valid_distinct_runs(path, tmp_path):
    trials = plan_trials(read_yaml(path), tmp_path)
    assert trials and len({trial.run_dir for trial in trials}) == len(trials)


def test_trials_are_train_runs_with_distinct_directories(tmp_path):
    trials = plan_trials({"base": TINY, "grid": {"density": [1.0, 0.2]}, "trials": [{"param_matched": 0.2}]},
                         tmp_path)
    settings = "t300-bs32-ls100"  # TINY's budget, batch size and learning start
    assert [t.run_dir.name for t in trials] == [f"sac-dense-d1-{settings}-s0", f"sac-rigl-d0.2-{settings}-s0",
                                                f"sac-matched-d0.2-{settings}-s0"]
    assert all(t.run_dir.parent == tmp_path / "Pendulum-v1" for t in trials)
    assert trials[2].config["param_matched"] == 0.2 and trials[2].config["threads"] == 1


@pytest.mark.slow
def test_local_sweep_runs_resumes_without_rerunning_and_reports(tmp_path, capsys):
    path = write_sweep(tmp_path, name="tiny", base=TINY, grid={"density": [1.0, 0.2]})
    logdir = tmp_path / "out"
    sweep.main([str(path), "--logdir", str(logdir), "--max-concurrent", "2"])
    runs = [logdir / "Pendulum-v1" / f"sac-{label}-t300-bs32-ls100-s0" for label in ("dense-d1", "rigl-d0.2")]
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["env_steps"] == 300 and summary["final_return"] is not None
        assert (run / "model.zip").is_file() and (run / "evaluations.npz").is_file()
    stamps = {run: (run / "summary.json").stat().st_mtime_ns for run in runs}
    capsys.readouterr()

    sweep.main([str(path), "--logdir", str(logdir)])
    out = capsys.readouterr().out
    assert "2 finished earlier, 0 to run" in out
    assert {run: (run / "summary.json").stat().st_mtime_ns for run in runs} == stamps

    results = report.write_report([logdir], tmp_path / "report", reps=50).read_text()
    settings = "total_steps 300, batch_size 32, learning_starts 100"
    assert f"| Pendulum-v1 | sac | dense | 1.0 | {settings} | 1 |" in results
    assert f"| Pendulum-v1 | sac | rigl | 0.2 | {settings} | 1 |" in results


@pytest.mark.slow
def test_failing_trial_is_reported_with_its_error_and_others_finish(tmp_path, capsys):
    path = write_sweep(tmp_path, name="failing", base=TINY,
                       trials=[{"seed": 0}, {"seed": 1, "set": {"algo_kwargs.learning_rate": 1000}}])
    logdir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        sweep.main([str(path), "--logdir", str(logdir), "--max-concurrent", "2", "--max-failures", "1"])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert (logdir / "Pendulum-v1" / "sac-dense-d1-t300-bs32-ls100-s0" / "summary.json").is_file()
    diverging = "sac-dense-d1-t300-bs32-lr1000-ls100-s1"
    failed = next((line for line in out.splitlines() if diverging in line and "FAILED" in line), out)
    assert "diverged at env step" in failed


@pytest.mark.slow
def test_ctrl_c_checkpoints_the_running_trial_and_starts_no_other(tmp_path):
    base = {**TINY, "total_steps": 100_000, "eval_freq": 100_000,
            "set": {**TINY["set"], "checkpoint_freq": 100_000}}  # no periodic checkpoint: only the stop writes one
    path = write_sweep(tmp_path, name="stopping", base=base, grid={"seed": [0, 1]})
    logdir = tmp_path / "out"
    first, second = (logdir / "Pendulum-v1" / f"sac-dense-d1-t100k-bs32-ls100-s{seed}" for seed in (0, 1))
    process = subprocess.Popen([sys.executable, "-m", "sparse_rl.sweep", str(path), "--logdir", str(logdir),
                                "--max-concurrent", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (first / "config.yaml").is_file() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # training
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, err
    assert "stopping: each running trial writes its checkpoint" in out
    assert "sac-dense-d1-t100k-bs32-ls100-s0 stopped (unfinished)" in out
    state = json.loads((first / "checkpoint" / "state.json").read_text())
    assert 0 < state["env_steps"] < 100_000 and not (first / "summary.json").exists()
    assert not second.exists() and "ls100-s1 started" not in out, "no trial starts once the sweep is stopping"
    assert not (logdir / ".stop-stopping").exists()
    assert "2 of 2 trials did not finish" in err


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_unreachable_cluster_is_one_line_naming_the_address_and_ray_start(address, tmp_path):
    path = write_sweep(tmp_path, name="remote", base=TINY)
    result = subprocess.run([sys.executable, "-m", "sparse_rl.sweep", str(path), "--address", address,
                             "--logdir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"sparse_rl.sweep: error: cannot reach a Ray cluster at {address}")
    assert "ray start --head" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--max-concurrent", "0"], "argument --max-concurrent: must be an integer >= 1, got '0'"),
    (["--max-failures", "-1"], "argument --max-failures: must be an integer >= 0, got '-1'"),
    (["--gpus-per-trial", "nan"], "argument --gpus-per-trial: must be a number >= 0, got 'nan'"),
    (["--threads", "0"], "argument --threads: must be an integer >= 1, got '0'"),
])
def test_bad_sweep_arguments_are_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit):
        parse_sweep_args(["configs/sweeps/mujoco_100k.yaml", *args])
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_sweep_plans_gpu_trials_on_a_machine_without_one(tmp_path):
    # a cluster's head node may lack the GPUs its workers have: the device is checked where a trial trains
    trials = plan_trials({"base": TINY, "trials": [{"seed": 0}]}, tmp_path, gpus_per_trial=0.5)
    assert trials[0].config["device"] == "cuda"


def test_threads_per_trial_reach_the_config_and_nothing_else(tmp_path):
    one, two = (plan_trials({"base": TINY, "trials": [{"seed": 0}]}, tmp_path, threads=threads)[0]
                for threads in (1, 2))
    assert (one.config["threads"], two.config["threads"]) == (1, 2)
    assert one.run_dir == two.run_dir
    assert {k: v for k, v in one.config.items() if k != "threads"} == {k: v for k, v in two.config.items()
                                                                       if k != "threads"}


def test_more_threads_per_trial_than_local_cpus_is_one_line_before_anything_runs(tmp_path, capsys):
    path = write_sweep(tmp_path, name="greedy", base=TINY)
    with pytest.raises(SystemExit) as exit_info:
        sweep.main([str(path), "--threads", "999", "--logdir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--threads 999: this machine has" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
