"""The method-kind registry, the core's independence from SB3, and DS-TD3, the worked example."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from sparse_rl.controller import MaskController
from sparse_rl.masks import sparse_layers
from sparse_rl.methods import KINDS, METHODS, get_method
from sparse_rl.methods.ds_td3 import prune_to_count
from sparse_rl.sparsity import SPARSITY_KEYS, SparsityConfig
from sparse_rl.width import iso_param_density, mlp_weights, widen


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))


def build(kind_name: str, net: nn.Module) -> nn.Module:
    """Swap the Linear layers of ``net`` for the kind's layer class, as the SB3 networks do."""
    layer_class = KINDS[kind_name].layer_class
    for index, child in enumerate(net):
        if type(child) is nn.Linear:
            net[index] = layer_class.from_dense(child)
    return net


@pytest.mark.parametrize("kind_name", list(KINDS))
def test_every_kind_builds_and_trains_through_the_registry_alone(kind_name):
    kind = KINDS[kind_name]
    preset = kind.presets[0]
    density = 1.0 if kind.learns_density else 0.3
    config = SparsityConfig.from_kwargs(method=preset.name, density=density, update_interval=2, update_end=None,
                                        **({"prune_start": 2, "prune_end": 6} if kind_name == "halo" else {}))
    torch.manual_seed(0)
    online, target = build(kind_name, mlp()), build(kind_name, mlp())
    from sparse_rl.masks import init_masks
    if not (kind.learns_density or kind.starts_dense):
        init_masks(sparse_layers(online), density)
        target.load_state_dict(online.state_dict())
    controller = kind.make_controller(config, "actor", online, target)
    assert isinstance(controller, MaskController)
    optimizer = torch.optim.Adam(online.parameters(), lr=1e-2)
    controller.set_progress(0.5)
    controller.attach(optimizer)
    for _ in range(8):
        target(torch.randn(16, 6))
        online(torch.randn(16, 6)).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert controller.current_step == 8
    for layer in sparse_layers(online).values():
        assert (layer.weight[~layer.mask] == 0).all()
    if not kind.learns_density:
        assert int(controller.num_updates) > 0


def test_every_method_belongs_to_a_registered_kind_and_every_setting_key_is_known():
    assert {preset.kind for preset in METHODS.values()} == set(KINDS)
    for kind in KINDS.values():
        assert set(kind.setting_keys) <= set(SPARSITY_KEYS)


def test_a_setting_of_another_kind_is_refused_with_the_owner_named():
    with pytest.raises(ValueError, match="'halo_xi' is a setting of method halo, not of 'thresholds'"):
        SparsityConfig.from_kwargs(method="thresholds", halo_xi=1e-3)
    assert SparsityConfig.from_kwargs(method="halo", density=0.1, halo_xi=1e-3).settings.halo_xi == 1e-3


def test_settings_round_trip_through_flat_policy_kwargs():
    config = SparsityConfig.from_kwargs(method="thresholds", threshold_alpha=1e-3, critic_threshold_alpha=0.0)
    assert SparsityConfig.from_kwargs(**config.as_kwargs()) == config
    assert config.settings.alpha_of("actor") == 1e-3 and config.settings.alpha_of("critic") == 0.0


def test_importing_the_core_leaves_stable_baselines3_out():
    script = ("import sys, sparse_rl.masks, sparse_rl.sparsity, sparse_rl.methods, sparse_rl; "
              "print('stable_baselines3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_ds_td3_preset_follows_the_paper():
    config = SparsityConfig.from_kwargs(method="ds-td3", density=0.5)
    assert (config.distribution, config.dense_output, config.update_interval) == ("er", True, 1000)
    assert (config.drop_fraction, config.decay, config.update_end) == (0.05, "constant", 0.95)
    assert (get_method("ds-td3").prune, get_method("ds-td3").grow) == ("signed_fraction", "random")
    assert config.settings.target_rule == "magnitude"
    assert SparsityConfig.from_kwargs(method="ds-td3", density=0.5, drop_fraction=0.1).drop_fraction == 0.1
    with pytest.raises(ValueError, match="allowed: magnitude, shared"):
        SparsityConfig.from_kwargs(method="ds-td3", density=0.5, target_rule="copy")


def test_signed_fraction_drops_the_same_share_of_each_sign():
    from sparse_rl.criteria import ScoreInputs, resolve_criterion
    weight = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, -0.1, -0.2]])
    mask = torch.ones_like(weight, dtype=torch.bool)
    scores = resolve_criterion("prune", "signed_fraction")(ScoreInputs(weight, None, mask, weight * 0, 1))
    lowest = scores.flatten().argsort()[:5].tolist()  # half of each sign: 4 of 8 positive, 1 of 2 negative
    assert sorted(lowest) == [0, 1, 2, 3, 8]


def test_magnitude_target_rule_prunes_targets_back_to_the_online_count():
    layer = build("ds-td3", nn.Sequential(nn.Linear(4, 4)))[0]
    with torch.no_grad():
        layer.weight.copy_(torch.arange(16.0).view(4, 4) - 7.5)
    prune_to_count(layer, 5)
    assert layer.nnz == 5 and sorted(layer.weight[layer.mask].abs().tolist()) == [5.5, 6.5, 6.5, 7.5, 7.5]


def test_magnitude_target_rule_sees_sb3s_polyak_update():
    """SB3's ``polyak_update`` writes through ``.data``, which a version counter does not see: the next target
    forward must still prune the target back to the online count."""
    from stable_baselines3 import TD3
    from stable_baselines3.common.utils import polyak_update

    from sparse_rl import SparseTD3Policy

    model = TD3(SparseTD3Policy, "Pendulum-v1", device="cpu", seed=0,
                policy_kwargs=dict(method="ds-td3", density=0.3, net_arch=[16, 16]))
    controller = model.policy.actor_controller
    name, online = next((n, layer) for n, layer in controller.layers.items() if layer.density < 1)
    target = controller.targets[name]
    model.actor_target(torch.zeros(1, 3))  # a first target forward, as in training, before the update
    with torch.no_grad():
        online.set_mask(online.mask.flatten().roll(1).view_as(online.mask))  # active where the target is not
        online.weight.copy_(online.mask.float())
    polyak_update(model.actor.parameters(), model.actor_target.parameters(), 0.5)
    assert target.weight.masked_fill(target.mask, 0).any(), "the update spread the target outside its mask"
    model.actor_target(torch.zeros(1, 3))
    assert target.nnz == online.nnz and not target.weight.masked_fill(target.mask, 0).any()


def test_iso_param_density_keeps_the_weight_count():
    assert widen([256, 256], 4) == [1024, 1024]
    density = iso_param_density(17, [256, 256], 12, 4)
    assert density * mlp_weights(17, [1024, 1024], 12) == pytest.approx(mlp_weights(17, [256, 256], 12))


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="thresholds", threshold_alpha="1e-3"), "threshold_alpha must be a number >= 0, got '1e-3'"),
    (dict(method="thresholds", critic_threshold_alpha=-1.0), "critic_threshold_alpha must be a number >= 0"),
    (dict(method="halo", density=0.1, halo_psi=0), "halo_psi must be a number > 0"),
    (dict(method="halo", density=0.1, halo_xi="a"), "halo_xi must be a number >= 0"),
    (dict(method="halo", density=0.1, prune_start="soon"), "prune_start must be an int optimizer step"),
])
def test_a_kinds_own_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparsityConfig.from_kwargs(**kwargs)
