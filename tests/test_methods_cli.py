"""Every method trains SAC on Pendulum-v1 through the CLI and keeps the core's invariants."""

import math

import pytest
import torch
from run_dirs import only_run
from stable_baselines3 import SAC, TD3

from sparse_rl import train
from sparse_rl.methods import KINDS, METHODS
from tests.test_train_cli import FAST

DENSITY = 0.2
EXTRA = {
    "thresholds": ["--set", "sparsity.threshold_alpha=0.05"],
    "halo": ["--set", "sparsity.prune_start=100", "--set", "sparsity.prune_end=300"],
    "rlx2": ["--set", "sparsity.check_interval=200", "--set", "sparsity.min_size=100",
             "--set", "sparsity.n_step_delay=100"],
}


@pytest.mark.parametrize("method", [name for name in METHODS if name != "dense"])
def test_every_method_trains_sac_through_the_cli_keeps_invariants_and_round_trips(method, tmp_path):
    learns_density = KINDS[METHODS[method].kind].learns_density
    density_args = [] if learns_density else ["--density", str(DENSITY)]
    train.main(["--env", "Pendulum-v1", "--method", method, *density_args, "--logdir", str(tmp_path), *FAST,
                *EXTRA.get(method, [])])
    label = {"thresholds": "thresholds+threshold_alpha0.05", "halo": "halo+prune_end300+prune_start100",
             "rlx2": "rlx2+check_interval200+min_size100+n_step_delay100"}
    density = 1 if learns_density else DENSITY
    run_dir = only_run(tmp_path / "Pendulum-v1", f"sac-{label.get(method, method)}-d{density:g}-s0")
    model = SAC.load(run_dir / "model.zip")
    for net in ("actor", "critic"):
        layers = getattr(model.policy, f"{net}_controller").layers
        total = sum(layer.weight.numel() for layer in layers.values())
        active = sum(layer.nnz for layer in layers.values())
        if learns_density:
            assert 0 < active < total
        elif method == "srigl":  # k = round(d_l * fan_in) per neuron: within half a weight per neuron
            assert abs(active - DENSITY * total) <= sum(layer.out_features for layer in layers.values()) / 2
        else:
            assert active == math.floor(DENSITY * total + 0.5)
        for layer in layers.values():
            weight = layer.masked_weight() if learns_density else layer.weight
            assert (weight[~layer.mask] == 0).all()

    model.save(tmp_path / "again.zip")
    reloaded = SAC.load(tmp_path / "again.zip")
    expected, loaded = model.policy.state_dict(), reloaded.policy.state_dict()
    assert expected.keys() == loaded.keys()
    assert all(torch.equal(expected[key], loaded[key]) for key in expected)
    observation = torch.linspace(-1, 1, 3).numpy()
    assert (model.predict(observation, deterministic=True)[0]
            == reloaded.predict(observation, deterministic=True)[0]).all()


@pytest.mark.parametrize("method", ["ds-td3", "rigl"])
def test_td3_trains_through_the_cli_with_targets_of_the_online_count(method, tmp_path):
    train.main(["--algo", "td3", "--env", "Pendulum-v1", "--method", method, "--density", str(DENSITY),
                "--logdir", str(tmp_path), *FAST])
    model = TD3.load(only_run(tmp_path / "Pendulum-v1", f"td3-{method}-d{DENSITY:g}-s0") / "model.zip")
    for net in ("actor", "critic"):
        controller = getattr(model.policy, f"{net}_controller")
        assert int(controller.num_updates) > 0
        for name, layer in controller.layers.items():
            target = controller.targets[name]
            assert target.nnz == layer.nnz and (target.weight[~target.mask] == 0).all()
            if method == "rigl":  # the shared-mask rule; ds-td3's targets choose their own by magnitude
                assert torch.equal(target.mask, layer.mask)
