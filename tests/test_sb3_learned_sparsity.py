"""``thresholds`` and ``halo`` in SB3 through the CLI: density learned or scheduled, invariants, save/load."""

import math

import pytest
import torch
from run_dirs import only_run
from stable_baselines3 import SAC, TD3

from sparse_rl import train
from sparse_rl.methods.halo import halo_layers
from sparse_rl.methods.thresholds import ThresholdLinear, threshold_layers
from sparse_rl.sb3 import SparseSACPolicy
from tests.test_train_cli import FAST, run_cli, scalars


def test_thresholds_learn_density_that_is_logged_and_priced(tmp_path):
    train.main(["--env", "Pendulum-v1", "--method", "thresholds", "--logdir", str(tmp_path), *FAST,
                "--set", "sparsity.threshold_alpha=0.05"])
    run_dir = only_run(tmp_path / "Pendulum-v1", "sac-thresholds+threshold_alpha0.05-d1-s0")
    model = SAC.load(run_dir / "model.zip")
    layers = {**threshold_layers(model.policy.actor), **threshold_layers(model.policy.critic)}
    assert len(layers) == 4 + 6 and all(isinstance(layer, ThresholdLinear) for layer in layers.values())
    nnz = sum(layer.nnz for layer in layers.values())
    dense = sum(layer.weight.numel() for layer in layers.values())
    assert 0 < nnz < dense
    summary = __import__("json").loads((run_dir / "summary.json").read_text())
    assert summary["params"] == nnz and summary["dense_params"] == dense
    densities = scalars(run_dir, "sparsity/density/critic/qf0.2")
    assert len(densities) >= 2 and densities[-1][1] < 1.0
    assert summary["train_flops"] < summary["dense_train_flops"]
    resets = scalars(run_dir, "sparsity/threshold_resets/critic")
    assert resets and resets[-1][1] == float(model.policy.critic_controller.resets)


def test_thresholds_refuse_a_density_target(tmp_path):
    result = run_cli("--env", "Pendulum-v1", "--method", "thresholds", "--density", "0.5",
                     "--logdir", str(tmp_path), cwd=tmp_path)
    assert result.returncode != 0 and "learns its density" in result.stderr.splitlines()[-1]


def test_thresholds_save_load_round_trip_is_exact(tmp_path):
    model = SAC(SparseSACPolicy, "Pendulum-v1", learning_starts=100, batch_size=64, seed=0,
                policy_kwargs=dict(method="thresholds", net_arch=[32, 32], threshold_alpha=0.05))
    model.learn(400)
    model.save(tmp_path / "model.zip")
    loaded = SAC.load(tmp_path / "model.zip")
    for name, layer in threshold_layers(model.policy).items():
        other = threshold_layers(loaded.policy)[name]
        assert torch.equal(layer.threshold, other.threshold) and torch.equal(layer.mask, other.mask)
    observation = model.get_env().reset()
    assert (model.predict(observation, deterministic=True)[0]
            == loaded.predict(observation, deterministic=True)[0]).all()


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_halo_prunes_to_the_exact_global_density_and_keeps_zeros(tmp_path, algo):
    train.main(["--algo", algo, "--env", "Pendulum-v1", "--method", "halo", "--density", "0.2",
                "--logdir", str(tmp_path), *FAST, "--set", "sparsity.prune_start=100",
                "--set", "sparsity.prune_end=300", "--set", "sparsity.update_interval=100"])
    run_dir = only_run(tmp_path / "Pendulum-v1", f"{algo}-halo+prune_end300+prune_start100-d0.2-s0")
    model = (SAC if algo == "sac" else TD3).load(run_dir / "model.zip")
    policy = model.policy
    targets = {"critic": policy.critic_target, "actor": getattr(policy, "actor_target", None)}
    for net in ("actor", "critic"):
        layers = halo_layers(getattr(policy, net))
        total = sum(layer.weight.numel() for layer in layers.values())
        assert sum(layer.nnz for layer in layers.values()) == math.floor(0.2 * total + 0.5)
        for name, layer in layers.items():
            assert (layer.weight[~layer.mask] == 0).all()
            if targets[net] is not None:
                target = halo_layers(targets[net])[name]
                assert torch.equal(target.mask, layer.mask) and (target.weight[~target.mask] == 0).all()
    flops = scalars(run_dir, "flops/train_per_step")
    assert flops[0][1] > flops[-1][1]  # dense until pruned, then sparse
    model.save(tmp_path / "again.zip")
    reloaded = type(model).load(tmp_path / "again.zip")
    for name, layer in halo_layers(policy).items():
        other = halo_layers(reloaded.policy)[name]
        assert torch.equal(layer.mask, other.mask) and torch.equal(layer.scale, other.scale)
    assert int(reloaded.policy.critic_controller.num_updates) == int(policy.critic_controller.num_updates) > 0


def test_halo_refuses_density_one(tmp_path):
    result = run_cli("--env", "Pendulum-v1", "--method", "halo", "--logdir", str(tmp_path), cwd=tmp_path)
    assert result.returncode != 0 and "density below 1" in result.stderr.splitlines()[-1]
