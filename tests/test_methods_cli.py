"""Every method trains SAC on Pendulum-v1 through the CLI and keeps the core's invariants."""

import math

import pytest
import torch
from stable_baselines3 import SAC

from sparse_rl import train
from sparse_rl.methods import METHODS
from tests.test_train_cli import FAST

DENSITY = 0.2
EXTRA = {
    "thresholds": ["--set", "sparsity.threshold_alpha=0.05"],
    "halo": ["--set", "sparsity.prune_start=100", "--set", "sparsity.prune_end=300"],
    "rlx2": ["--set", "rlx2.check_interval=200", "--set", "rlx2.min_size=100", "--set", "rlx2.n_step_delay=100"],
}


@pytest.mark.parametrize("method", [name for name in METHODS if name != "dense"])
def test_every_method_trains_sac_through_the_cli_keeps_invariants_and_round_trips(method, tmp_path):
    learns_density = METHODS[method].learns_density
    density_args = [] if learns_density else ["--density", str(DENSITY)]
    train.main(["--env", "Pendulum-v1", "--method", method, *density_args, "--logdir", str(tmp_path), *FAST,
                *EXTRA.get(method, [])])
    run_dir = tmp_path / "Pendulum-v1" / f"sac-{method}-d{1 if learns_density else DENSITY:g}-s0"
    model = SAC.load(run_dir / "model.zip")
    for net in ("actor", "critic"):
        layers = getattr(model.policy, f"{net}_topology").layers
        total = sum(layer.weight.numel() for layer in layers.values())
        active = sum(layer.nnz for layer in layers.values())
        if learns_density:
            assert 0 < active < total
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
