import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from run_dirs import only_run
from stable_baselines3 import SAC
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sparse_rl import report, runs, train
from sparse_rl.masks import sparse_layers
from sparse_rl.run_config import parse_override
from sparse_rl.run_names import run_label, run_name
from sparse_rl.sb3 import SparseMetricsCallback
from sparse_rl.sb3.flops import model_step_flops

FAST = ["--total-steps", "800", "--eval-freq", "400", "--eval-episodes", "2", "--no-progress-bar",
        "--set", "algo_kwargs.learning_starts=200", "--set", "sparsity.update_interval=100",
        "--set", "policy_kwargs.net_arch=[64, 64]"]


def scalars(run_dir, tag):
    values = []
    for events in run_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values += [(e.step, e.value) for e in accumulator.Scalars(tag)]
    return values


def test_run_directory_layout_tags_and_flops_ratio(tmp_path):
    train.main(["--env", "Pendulum-v1", "--density", "0.2", "--logdir", str(tmp_path), *FAST])
    run_dir = only_run(tmp_path / "Pendulum-v1", "sac-rigl-d0.2-s0")
    assert {"config.yaml", "evaluations.npz", "model.zip", "summary.json", "checkpoint"} <= {
        p.name for p in run_dir.iterdir()}
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["sparsity"]["density"] == 0.2 and config["total_steps"] == 800
    assert config["policy_kwargs"]["net_arch"] == [64, 64] and config["algo_kwargs"]["learning_starts"] == 200
    with np.load(run_dir / "evaluations.npz") as evaluations:
        assert list(evaluations["timesteps"]) == [400, 800] and evaluations["results"].shape == (2, 2)
    for tag in ("flops/train_cumulative", "flops/train_per_step", "flops/inference_per_action",
                "flops/train_vs_dense", "sparsity/density/actor/latent_pi.2", "sparsity/churn/critic",
                "sparsity/dead_neurons/actor", "eval/mean_reward", "train/critic_loss"):
        assert scalars(run_dir, tag), f"missing TensorBoard tag {tag}"
    ratio = scalars(run_dir, "flops/train_vs_dense")[-1][1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params"] / summary["dense_params"] == pytest.approx(0.2, abs=0.01)
    # float32 in TensorBoard
    assert ratio == pytest.approx(summary["train_flops"] / summary["dense_train_flops"], rel=1e-4)
    # analytic: sparse/dense FLOPs of one gradient step, plus RigL's dense weight gradient on 5 of 600 steps
    model = SAC.load(run_dir / "model.zip", device="cpu")
    sparse, dense = model_step_flops(model), model_step_flops(model, dense=True)
    per_step = (sparse.critic_step + sparse.actor_step) / (dense.critic_step + dense.actor_step)
    updates = int(model.policy.critic_controller.num_updates)
    extra = updates * (sparse.critic_controller_update + sparse.actor_controller_update) / (
        600 * (dense.critic_step + dense.actor_step))
    assert updates == 4, "updates every 100 steps while env steps < 0.8 * 800"
    assert ratio == pytest.approx(per_step + extra, rel=0.02)
    assert 0.15 < per_step < 0.25
    cumulative = [v for _, v in sorted(scalars(run_dir, "flops/train_cumulative"))]
    assert cumulative == sorted(cumulative) and cumulative[-1] > 0


def test_dense_run_logs_the_same_flops_tags(tmp_path):
    train.main(["--algo", "td3", "--env", "InvertedPendulum-v4", "--density", "1.0", "--logdir", str(tmp_path),
                *FAST])
    run_dir = only_run(tmp_path / "InvertedPendulum-v4", "td3-dense-d1-s0")
    assert scalars(run_dir, "flops/train_vs_dense")[-1][1] == pytest.approx(1.0)
    assert scalars(run_dir, "flops/train_cumulative")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_checkpoints_then_resume_reaches_the_uninterrupted_counts(signum, tmp_path, monkeypatch):
    captured = {}
    original = SparseMetricsCallback._on_step

    def signal_at_450(self):  # between topology updates (every 100 gradient steps)
        if self.num_timesteps == 450 and "masks" not in captured:
            captured["masks"] = {n: layer.mask.clone() for n, layer in sparse_layers(self.model.policy).items()}
            os.kill(os.getpid(), signum)  # as `kill`, `timeout` or a scheduler would send it
        return original(self)

    monkeypatch.setattr(SparseMetricsCallback, "_on_step", signal_at_450)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--env", "Pendulum-v1", "--density", "0.2", "--logdir", str(tmp_path), *FAST])
    assert exit_info.value.code == 128 + signum
    run_dir = only_run(tmp_path / "Pendulum-v1", "sac-rigl-d0.2-s0")
    saved = SAC.load(run_dir / "checkpoint" / "model.zip", device="cpu")
    assert saved.num_timesteps == 450 and saved._n_updates == 250  # the step's gradient step was taken
    assert all(torch.equal(captured["masks"][n], layer.mask) for n, layer in sparse_layers(saved.policy).items())
    assert not (run_dir / "model.zip").exists() and not (run_dir / "summary.json").exists()
    checkpointed = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    monkeypatch.setattr(SparseMetricsCallback, "_on_step", original)
    train.main(["--resume", str(run_dir), "--no-progress-bar"])
    final = SAC.load(run_dir / "model.zip", device="cpu")
    # exactly an uninterrupted run's counts: env steps 1..800, gradient steps at 201..800
    assert final.num_timesteps == 800
    assert int(final.policy.critic_controller.step) == final._n_updates == 600
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["gradient_steps"] == 600
    for seconds in ("wall_clock_s", "cpu_s"):  # both clocks count the first process's time too
        assert 0 < checkpointed[seconds] < summary[seconds]
    with np.load(run_dir / "evaluations.npz") as evaluations:
        assert list(evaluations["timesteps"]) == [400, 800]


def test_sigterm_from_outside_then_resume_completes(tmp_path):
    args = ["--env", "Pendulum-v1", "--density", "0.2", "--logdir", str(tmp_path), *FAST, "--total-steps", "3000",
            "--eval-freq", "3000", "--set", "policy_kwargs.net_arch=[16]"]
    process = subprocess.Popen([sys.executable, "-m", "sparse_rl.train", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("Pendulum-v1/*/tb_1/events*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    run_dir = only_run(tmp_path / "Pendulum-v1", "sac-rigl-d0.2-s0")
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and f"python -m sparse_rl.train --resume {run_dir}" in stderr
    assert (run_dir / "checkpoint" / "model.zip").is_file() and not (run_dir / "model.zip").exists()
    result = run_cli("--resume", str(run_dir), "--no-progress-bar", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 3000 and summary["gradient_steps"] == 3000 - 200


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "sparse_rl.train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


BAD_INPUTS = [
    (["--env", "NoSuchEnv-v0"], "unknown env 'NoSuchEnv-v0'"),
    (["--env", "CartPole-v1"], "Discrete action space"),
    (["--env", "Pendulum-v1", "--density", "1.5"], r"\(0, 1\]"),
    (["--env", "Pendulum-v1", "--method", "lottery"], "allowed: rigl, set"),
    (["--env", "Pendulum-v1", "--set", "algo_kwargs.batchsize=3"],
      "unknown config key algo_kwargs.batchsize; valid:.*batch_size"),
    (["--env", "Pendulum-v1", "--set", "colour=red"], "unknown config key 'colour'; valid: algo, env"),
    (["--env", "Pendulum-v1", "--config", "missing.yaml"], "cannot read config file missing.yaml"),
    (["--resume", "."], "is not a run directory"),
    (["--env", "Pendulum-v1", "--param-matched", "0.1", "--density", "0.5"], "needs density 1.0"),
    (["--env", "Pendulum-v1", "--param-matched", "1.0"], r"param_matched must be a density in \(0, 1\)"),
    # every class of numeric field, SB3's own arguments included, before any env or file exists
    (["--env", "Pendulum-v1", "--set", "algo_kwargs.batch_size=-3"],
      "algo_kwargs.batch_size must be a positive integer, got -3"),
    (["--env", "Pendulum-v1", "--total-steps", "-5"], "total_steps must be a positive integer, got -5"),
    (["--env", "Pendulum-v1", "--set", "policy_kwargs.net_arch=[0]"],
      "policy_kwargs.net_arch must be a list of positive"),
    (["--env", "Pendulum-v1", "--n-envs", "0"], "n_envs must be a positive integer, got 0"),
    (["--env", "Pendulum-v1", "--eval-freq", "0"], "eval_freq must be a positive integer"),
    (["--env", "Pendulum-v1", "--threads", "0"], "threads must be a positive integer"),
    (["--env", "Pendulum-v1", "--device", "tpu"], "device must be a torch device; allowed here: auto, cpu"),
    (["--env", "Pendulum-v1", "--device", "cuda:7"], "device 'cuda:7' is not available on this machine; allowed"),
    (["--env", "Pendulum-v1", "--set", "algo_kwargs.tau=1.5"], r"algo_kwargs.tau must be a number in \(0, 1\]"),
    (["--env", "Pendulum-v1", "--set", "algo_kwargs.gamma=-0.1"], r"algo_kwargs.gamma must be a number in \[0, 1\]"),
    (["--env", "Pendulum-v1", "--set", "algo_kwargs.learning_rate=0"],
      "algo_kwargs.learning_rate must be a number > 0"),
    (["--env", "Pendulum-v1", "--set", "algo_kwargs.ent_coef=-1"], "algo_kwargs.ent_coef must be a number > 0"),
    (["--env", "Pendulum-v1", "--set", "algo_kwargs.train_freq=[1, 'stp']"], "algo_kwargs.train_freq must be"),
    (["--env", "Pendulum-v1", "--total-steps", "500"], r"learning_starts \(1000\) must be below total_steps \(500\)"),
    (["--env", "Pendulum-v1", "--set", "algo_kwargs.policy_delay=2"], "unknown config key algo_kwargs.policy_delay"),
    (["--algo", "td3", "--env", "Pendulum-v1", "--set", "algo_kwargs.policy_delay=0"],
      "policy_delay must be a positive"),
    (["--env", "Pendulum-v1", "--method", "rlx2", "--set", "sparsity.shrink_fraction=1.5"],
      r"sparsity: shrink_fraction must be a number in \(0, 1\)"),
    (["--env", "Pendulum-v1", "--set", "sparsity.shrink_fraction=0.5"],
      r"sparsity: 'shrink_fraction' is a setting of method rlx2, not of 'rigl'"),
    (["--env", "Pendulum-v1", "--set", "sparsity.drop_fraction=1.5"],
      r"sparsity: drop_fraction must be a number in \[0, 1\)"),
    (["--env", "Pendulum-v1", "--set", "sparsity.update_interval=0"], "sparsity: update_interval must be a positive"),
]


def main_in_process(args, cwd, monkeypatch, capfd):
    """``python -m sparse_rl.train ARGS`` run in this process, from ``cwd``: (exit status, stderr), with the
    interpreter's handling of ``SystemExit`` (a message goes to stderr, status 1)."""
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exit_info:
        train.main(list(args))
    code = exit_info.value.code
    err = capfd.readouterr().err  # the file descriptor, as a parent process would read it
    if code is not None and not isinstance(code, int):
        return 1, f"{err}{code}\n"
    return code or 0, err


# Every case in this process (each one's own process would spend ~2 s importing torch before the same code runs);
# test_bad_input_from_the_command_line_is_the_same runs some of them as their own processes too.
@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_bad_input_exits_with_one_line_and_leaves_no_run_dir(args, message, tmp_path, monkeypatch, capfd):
    returncode, stderr = main_in_process([*args, "--logdir", str(tmp_path / "runs")], tmp_path, monkeypatch, capfd)
    assert returncode != 0
    assert "Traceback" not in stderr
    assert re.search(message, stderr.strip().splitlines()[-1]), stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [BAD_INPUTS[0], BAD_INPUTS[6], BAD_INPUTS[7]],
                         ids=["env", "config-file", "resume"])
def test_bad_input_from_the_command_line_is_the_same(args, message, tmp_path, monkeypatch, capfd):
    result = run_cli(*args, "--logdir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr.strip().splitlines()[-1]), result.stderr
    assert not (tmp_path / "runs").exists()
    assert main_in_process([*args, "--logdir", str(tmp_path / "runs")], tmp_path, monkeypatch, capfd) == (
        result.returncode, result.stderr)


def test_help_explains_every_flag():
    out = run_cli("--help", cwd=None).stdout
    for flag in ("--algo", "--env", "--density", "--actor-density", "--critic-density", "--method", "--backend",
                 "--width-multiplier", "--iso-params", "--ledger", "--grid", "--total-steps",
                 "--seed", "--n-envs", "--config", "--set", "--logdir", "--eval-freq", "--eval-episodes",
                 "--threads", "--device", "--resume", "--param-matched"):
        assert flag in out


def test_param_matched_run_is_a_narrow_dense_network_reported_as_matched(tmp_path, capsys):
    train.main(["--env", "Pendulum-v1", "--param-matched", "0.2", "--logdir", str(tmp_path), *FAST])
    run_dir = only_run(tmp_path / "Pendulum-v1", "sac-matched-d0.2-s0")
    model = SAC.load(run_dir / "model.zip")
    assert model.policy.sparsity.is_dense
    assert all(bool(layer.mask.all()) for layer in sparse_layers(model.policy.critic).values())
    assert model.policy.net_arch["qf"][0] < 64 and model.policy.net_arch["pi"][0] < 64
    results = report.write_report([tmp_path], tmp_path / "report", reps=50).read_text()
    settings = "total_steps 800, learning_starts 200, net_arch [64, 64]"
    assert f"| Pendulum-v1 | sac | matched | 0.2 | {settings} | 1 |" in results
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--resume", str(run_dir)])
    assert exit_info.value.code == 2 and re.search("is finished .*nothing to resume", capsys.readouterr().err)


@pytest.mark.parametrize("raw, value", [
    ("1e-3", 1e-3), ("5E+2", 500), ("5.0e2", 500.0), ("-2.5e-1", -0.25), ("0.001", 0.001),
    ("{c: 1e-2}", {"c": 0.01}), ("[1e-3, x]", [1e-3, "x"]), ("e5", "e5")])
def test_exponent_notation_is_a_number(raw, value):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; --set, sweep files and config files mean the number."""
    assert parse_override(f"sparsity.threshold_alpha={raw}") == ("sparsity.threshold_alpha", value)
    config = runs.make_config({"env": "Pendulum-v1", "method": "thresholds", "total_steps": "2e4",
                               "set": {"sparsity.threshold_alpha": "1e-3"}})  # as a sweep file gives them
    assert config["sparsity"]["threshold_alpha"] == 1e-3 and config["total_steps"] == 20000


@pytest.mark.parametrize("backend", ["auto", "masked", "sparse"])
def test_backend_flag_sets_the_sparsity_backend_and_keeps_the_run_name(backend):
    config = runs.make_config(train.run_options(train.parse_args(
        ["--env", "Pendulum-v1", "--density", "0.1", "--backend", backend])))
    assert config["sparsity"]["backend"] == backend and run_name(config) == "sac-rigl-d0.1-s0"


def test_a_topology_update_refusing_non_finite_scores_is_a_divergence(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):  # as the controller's pre-step hook raises it from inside SAC.train
        raise FloatingPointError("topology update of critic: non-finite scores in qf0.0")

    monkeypatch.setattr("stable_baselines3.SAC.train", refuse)
    with pytest.raises(SystemExit, match=r"error: diverged at env step 201 \(gradient step 0\): topology update of "
                                         r"critic: non-finite scores in qf0.0; no checkpoint"):
        train.main(["--env", "Pendulum-v1", "--density", "0.2", "--logdir", str(tmp_path), *FAST])
    assert not (only_run(tmp_path / "Pendulum-v1", "sac-rigl-d0.2-s0") / "model.zip").exists()


def test_criterion_ablations_get_their_own_run_directories():
    base = {"env": "Pendulum-v1", "method": "dst-ee", "density": 0.1}
    assert run_name(runs.make_config(base)) == "sac-dst-ee-d0.1-s0"
    ablated = runs.make_config({**base, "set": {"sparsity.grow_kwargs": {"c": 0.01}}})
    assert run_name(ablated) == "sac-dst-ee+c0.01-d0.1-s0"
    assert run_name(runs.make_config({**base, "set": {"sparsity.prune": "snip"}})) == "sac-dst-ee+prune-snip-d0.1-s0"


@pytest.mark.parametrize("options, name, row", [
    # the committed results and the running 100k runs use these directory names
    ({"density": 1.0}, "sac-dense-d1-s0", ("dense", 1.0, "")),
    ({"density": 0.1}, "sac-rigl-d0.1-s0", ("rigl", 0.1, "")),
    ({"param_matched": 0.1}, "sac-matched-d0.1-s0", ("matched", 0.1, "")),
    ({"method": "thresholds"}, "sac-thresholds-d1-s0", ("thresholds", 1.0, "")),
    ({"method": "static", "density": 1.0}, "sac-dense-d1-s0", ("dense", 1.0, "")),
    # where train.run_name and report.load_run used to disagree ("rigl-d1" vs "dense"; "matched" vs "matched-dense")
    ({"density": 1.0, "actor_density": 0.1}, "sac-rigl-d1-a0.1-s0", ("rigl", 1.0, "actor 0.1")),
    ({"density": 0.1, "critic_density": 0.2}, "sac-rigl-d0.1-c0.2-s0", ("rigl", 0.1, "critic 0.2")),
])
def test_run_label_names_the_directory_and_the_report_row_alike(options, name, row, tmp_path):
    config = runs.make_config({"env": "Pendulum-v1", **options})
    assert run_name(config) == name
    label = run_label(config)
    assert (label.method, label.density, label.detail) == row
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    np.savez(run_dir / "evaluations.npz", timesteps=np.array([100]), results=np.zeros((1, 1)),
             ep_lengths=np.ones((1, 1)))
    run = report.load_run(run_dir)
    assert (run.method, run.density, run.detail) == row


def test_short_run_has_one_final_evaluation_and_the_report_reads_it(tmp_path):
    train.main(["--env", "InvertedPendulum-v4", "--total-steps", "1200", "--logdir", str(tmp_path),
                "--eval-episodes", "2", "--no-progress-bar", "--set", "policy_kwargs.net_arch=[32, 32]"])
    run_dir = only_run(tmp_path / "InvertedPendulum-v4", "sac-dense-d1-s0")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["eval_freq"] == 2000  # the packaged default
    with np.load(run_dir / "evaluations.npz") as evaluations:
        assert list(evaluations["timesteps"]) == [1200]
    assert json.loads((run_dir / "summary.json").read_text())["final_return"] is not None
    results = report.write_report([run_dir], tmp_path / "report", reps=20).read_text()
    assert "| InvertedPendulum-v4 | sac | dense | 1.0 | total_steps 1200, net_arch [32, 32] | 1 |" in results


def test_evaluation_at_the_last_step_is_not_repeated(tmp_path):
    train.main(["--env", "Pendulum-v1", "--density", "0.2", "--logdir", str(tmp_path), *FAST])
    with np.load(only_run(tmp_path / "Pendulum-v1", "sac-rigl-d0.2-s0") / "evaluations.npz") as evaluations:
        assert list(evaluations["timesteps"]) == [400, 800]


def test_divergence_stops_with_the_step_and_network_and_writes_no_model(tmp_path):
    result = run_cli("--env", "Pendulum-v1", "--logdir", str(tmp_path / "runs"), *FAST, "--total-steps", "1000",
                     "--set", "algo_kwargs.learning_rate=1000", "--set", "checkpoint_freq=100", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"sparse_rl\.train: error: diverged at env step \d+ \(gradient step \d+\): non-finite "
                        r"(critic|actor|entropy coefficient)\S* .*", line), line
    run_dir = only_run(tmp_path / "runs" / "Pendulum-v1", "sac-dense-d1-s0")
    assert not (run_dir / "model.zip").exists() and not (run_dir / "summary.json").exists()
    if (run_dir / "checkpoint").exists():  # the last one written while everything was finite
        checkpoint = SAC.load(run_dir / "checkpoint" / "model.zip", device="cpu")
        assert all(torch.isfinite(p).all() for p in checkpoint.policy.parameters())
        assert f"step {checkpoint.num_timesteps})" in line
