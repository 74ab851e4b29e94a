import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import SAC
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sparse_rl import train
from sparse_rl.sb3 import SparseMetricsCallback
from sparse_rl.sb3.flops import model_step_flops
from sparse_rl.topology import sparse_layers

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
    run_dir = tmp_path / "Pendulum-v1" / "sac-rigl-d0.2-s0"
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
    assert ratio == pytest.approx(summary["train_flops"] / summary["dense_train_flops"], rel=1e-4)  # float32 in TensorBoard
    # analytic: sparse/dense FLOPs of one gradient step, plus RigL's dense weight gradient on 5 of 600 steps
    model = SAC.load(run_dir / "model.zip", device="cpu")
    sparse, dense = model_step_flops(model), model_step_flops(model, dense=True)
    per_step = (sparse.critic_step + sparse.actor_step) / (dense.critic_step + dense.actor_step)
    updates = int(model.policy.critic_topology.num_updates)
    extra = updates * (sparse.critic_topology_update + sparse.actor_topology_update) / (
        600 * (dense.critic_step + dense.actor_step))
    assert updates == 4, "updates every 100 steps while env steps < 0.8 * 800"
    assert ratio == pytest.approx(per_step + extra, rel=0.02)
    assert 0.15 < per_step < 0.25
    cumulative = [v for _, v in sorted(scalars(run_dir, "flops/train_cumulative"))]
    assert cumulative == sorted(cumulative) and cumulative[-1] > 0


def test_dense_run_logs_the_same_flops_tags(tmp_path):
    train.main(["--algo", "td3", "--env", "InvertedPendulum-v4", "--density", "1.0", "--logdir", str(tmp_path),
                *FAST])
    run_dir = tmp_path / "InvertedPendulum-v4" / "td3-dense-d1-s0"
    assert scalars(run_dir, "flops/train_vs_dense")[-1][1] == pytest.approx(1.0)
    assert scalars(run_dir, "flops/train_cumulative")


def test_interrupted_run_resumes_with_same_masks_and_continued_counters(tmp_path, monkeypatch):
    captured = {}
    original = SparseMetricsCallback._on_step

    def interrupt_at_500(self):
        if self.num_timesteps == 500 and "masks" not in captured:
            captured["masks"] = {n: l.mask.clone() for n, l in sparse_layers(self.model.policy).items()}
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(SparseMetricsCallback, "_on_step", interrupt_at_500)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--env", "Pendulum-v1", "--density", "0.2", "--logdir", str(tmp_path), *FAST])
    assert exit_info.value.code == 130
    run_dir = tmp_path / "Pendulum-v1" / "sac-rigl-d0.2-s0"
    saved = SAC.load(run_dir / "checkpoint" / "model.zip", device="cpu")
    assert saved.num_timesteps == 500
    assert all(torch.equal(captured["masks"][n], l.mask) for n, l in sparse_layers(saved.policy).items())
    monkeypatch.setattr(SparseMetricsCallback, "_on_step", original)
    train.main(["--resume", str(run_dir), "--no-progress-bar"])
    final = SAC.load(run_dir / "model.zip", device="cpu")
    assert final.num_timesteps == 800
    # gradient steps at env steps 201..800, except the one of the interrupted step 500
    assert int(final.policy.critic_topology.step) == final._n_updates == 599
    with np.load(run_dir / "evaluations.npz") as evaluations:
        assert list(evaluations["timesteps"]) == [400, 800]


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "sparse_rl.train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--env", "NoSuchEnv-v0"], "unknown env 'NoSuchEnv-v0'"),
    (["--env", "CartPole-v1"], "Discrete action space"),
    (["--env", "Pendulum-v1", "--density", "1.5"], r"\(0, 1\]"),
    (["--env", "Pendulum-v1", "--method", "lottery"], "allowed: rigl, set"),
    (["--env", "Pendulum-v1", "--set", "algo_kwargs.batchsize=3"], "unknown config key algo_kwargs.batchsize; valid:.*batch_size"),
    (["--env", "Pendulum-v1", "--set", "colour=red"], "unknown config key 'colour'; valid: algo, env"),
    (["--env", "Pendulum-v1", "--config", "missing.yaml"], "cannot read config file missing.yaml"),
    (["--resume", "."], "is not a run directory"),
    (["--env", "Pendulum-v1", "--param-matched", "0.1", "--density", "0.5"], "needs density 1.0"),
    (["--env", "Pendulum-v1", "--param-matched", "1.0"], r"param_matched must be a density in \(0, 1\)"),
])
def test_bad_input_exits_with_one_line_and_leaves_no_run_dir(args, message, tmp_path):
    result = run_cli(*args, "--logdir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert __import__("re").search(message, result.stderr.strip().splitlines()[-1]), result.stderr
    assert not (tmp_path / "runs").exists()


def test_help_explains_every_flag():
    out = run_cli("--help", cwd=None).stdout
    for flag in ("--algo", "--env", "--density", "--actor-density", "--critic-density", "--method", "--total-steps",
                 "--seed", "--n-envs", "--config", "--set", "--logdir", "--eval-freq", "--eval-episodes",
                 "--threads", "--device", "--resume", "--param-matched"):
        assert flag in out


def test_param_matched_run_is_a_narrow_dense_network_reported_as_matched(tmp_path):
    from sparse_rl import report

    train.main(["--env", "Pendulum-v1", "--param-matched", "0.2", "--logdir", str(tmp_path), *FAST])
    run_dir = tmp_path / "Pendulum-v1" / "sac-matched-d0.2-s0"
    model = SAC.load(run_dir / "model.zip")
    assert model.policy.sparsity.is_dense
    assert all(bool(layer.mask.all()) for layer in sparse_layers(model.policy.critic).values())
    assert model.policy.net_arch["qf"][0] < 64 and model.policy.net_arch["pi"][0] < 64
    results = report.write_report([tmp_path], tmp_path / "report", reps=50).read_text()
    assert "| Pendulum-v1 | sac | matched-dense | 0.2 | 1 |" in results


def test_criterion_ablations_get_their_own_run_directories(tmp_path):
    base = ["--env", "Pendulum-v1", "--method", "dst-ee", "--density", "0.1", "--logdir", str(tmp_path)]
    _, plain = train.plan_run(train.parse_args(base))
    _, ablated = train.plan_run(train.parse_args([*base, "--set", 'sparsity.grow_kwargs={"c": 0.01}']))
    _, overridden = train.plan_run(train.parse_args([*base, "--set", "sparsity.prune=snip"]))
    assert plain.name == "sac-dst-ee-d0.1-s0"
    assert ablated.name == "sac-dst-ee+c0.01-d0.1-s0"
    assert overridden.name == "sac-dst-ee+prune-snip-d0.1-s0"
