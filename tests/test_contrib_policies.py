"""SparseTQCPolicy and SparseCrossQPolicy inside sb3-contrib's own TQC and CrossQ."""

import math

import numpy as np
import pytest
import torch
from sb3_contrib import TQC, CrossQ
from sb3_contrib.common.torch_layers import BatchRenorm

from sparse_rl import SparseCrossQPolicy, SparseTQCPolicy
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import sparse_layers
from sparse_rl.methods import KINDS, METHODS
from sparse_rl.network_layout import set_backend

ALGOS = {"tqc": (TQC, SparseTQCPolicy), "crossq": (CrossQ, SparseCrossQPolicy)}
EXTRA = {"thresholds": {"threshold_alpha": 0.05}, "halo": {"prune_start": 50, "prune_end": 150},
         "ds-td3": {"n_quantiles": 5}}  # ds-td3 keeps the output layers dense: 25 quantiles of 32 inputs need more


def make(algo, seed=0, **policy_kwargs):
    cls, policy = ALGOS[algo]
    kwargs = {"net_arch": [32, 32], "update_interval": 20, **policy_kwargs}
    return cls(policy, "Pendulum-v1", policy_kwargs=kwargs, learning_starts=50, batch_size=32, seed=seed,
               device="cpu")


def batch_renorms(model):
    return {name: module for name, module in model.policy.named_modules() if isinstance(module, BatchRenorm)}


class StepChecks:
    """After every optimizer step: exact counts, zeros at masked positions, targets with the online masks."""

    def __init__(self, model):
        self.policy, self.steps = model.policy, 0
        self.counts = self.check()
        for net in ("actor", "critic"):
            getattr(self.policy, net).optimizer.register_step_post_hook(lambda *_: self.after_step())

    def check(self):
        counts = {}
        for net, controller in self.policy.controllers().items():
            for name, layer in controller.layers.items():
                assert (layer.weight[~layer.mask] == 0).all(), f"{net}.{name}: a masked weight is not 0"
                target = controller.targets.get(name)
                if target is not None:
                    assert torch.equal(target.mask, layer.mask), f"{net}.{name}: target mask differs"
                    assert (target.weight[~target.mask] == 0).all()
                counts[f"{net}.{name}"] = layer.nnz
        return counts

    def after_step(self):
        assert self.check() == self.counts
        self.steps += 1


@pytest.mark.parametrize("algo, method", [("tqc", "rigl"), ("tqc", "set"), ("tqc", "mest"), ("crossq", "rigl"),
                                          ("crossq", "set"), ("crossq", "ds-td3")])
def test_every_optimizer_step_keeps_exact_counts_zeros_and_target_masks(algo, method):
    model = make(algo, density=0.2, method=method, update_end=None,
                 **({"target_rule": "shared"} if algo == "crossq" and method == "ds-td3" else {}))
    before = {name: layer.mask.clone() for name, layer in sparse_layers(model.policy).items()}
    checks = StepChecks(model)
    model.learn(400)
    assert checks.steps > 350
    for net, controller in model.policy.controllers().items():
        assert int(controller.num_updates) > 0, f"{net} never rewired"
        total = sum(layer.weight.numel() for layer in controller.layers.values())
        assert sum(checks.counts[f"{net}.{name}"] for name in controller.layers) == math.floor(0.2 * total + 0.5)
    after = sparse_layers(model.policy)
    assert any(not torch.equal(after[name].mask, mask) for name, mask in before.items())
    if algo == "tqc":
        assert set(model.policy.critic_controller.targets) == set(model.policy.critic_controller.layers)
    else:
        assert not hasattr(model.policy, "critic_target") and not model.policy.critic_controller.targets


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("method", [name for name in METHODS if name != "rlx2"])
def test_every_method_learns_round_trips_and_keeps_float_state_dicts(algo, method, tmp_path):
    if algo == "crossq" and method == "ds-td3":
        pytest.skip("refused: see test_crossq_refuses_target_rules_that_need_targets")
    density = {} if KINDS[METHODS[method].kind].learns_density or method == "dense" else {"density": 0.3}
    model = make(algo, method=method, **density, **EXTRA.get(method, {}))
    model.learn(200)
    state = model.policy.state_dict()
    assert all(value.is_floating_point() for value in state.values())
    model.save(tmp_path / "model")
    loaded = ALGOS[algo][0].load(tmp_path / "model", env=model.get_env(), device="cpu")
    # ds-td3's targets hold Polyak-averaged weights outside their masks until their next forward pass
    # prunes them; loading zeroes those instead (the kind's behaviour under SAC/TD3 too)
    pending = ("critic_target.",) if method == "ds-td3" else ()
    assert all(torch.equal(value, loaded.policy.state_dict()[key]) for key, value in state.items()
               if not key.startswith(pending or ("\0",)))
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    assert np.array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.learn(100, reset_num_timesteps=False)


def test_crossq_refuses_target_rules_that_need_targets():
    with pytest.raises(ValueError, match="target_rule 'magnitude'.*CrossQPolicy.*allowed here: target_rule='shared'"):
        make("crossq", density=0.2, method="ds-td3")


def test_quantile_critics_share_one_density_and_targets_start_with_online_masks():
    policy = make("tqc", density=0.1, n_quantiles=7, n_critics=3, distribution="uniform").policy
    layers = policy.critic_controller.layers
    assert sorted({name.split(".")[0] for name in layers}) == ["qf0", "qf1", "qf2"]
    assert layers["qf0.4"].out_features == 7
    total = sum(layer.weight.numel() for layer in layers.values())
    assert sum(layer.nnz for layer in layers.values()) == math.floor(0.1 * total + 0.5)
    assert all(torch.equal(policy.critic_controller.targets[name].mask, layer.mask) for name, layer in layers.items())


@pytest.mark.parametrize("backend", ["masked", "sparse", "auto"])
def test_crossq_batchrenorm_stays_dense_and_the_joint_forward_runs_on_every_backend(backend):
    model = make("crossq", density=0.1, backend=backend, net_arch={"pi": [64, 64], "qf": [256, 256]})
    norms = batch_renorms(model)
    assert len(norms) == 2 * 3 + 3  # each critic head: before its 3 linear layers; the actor: 2 + 1 after
    assert not any(isinstance(module, SparseLinear) for module in norms.values())
    model.learn(120)
    critic = model.policy.critic
    obs, actions = torch.randn(64, 3), torch.rand(64, 1) * 2 - 1
    critic.set_bn_training_mode(False)
    out = torch.cat(critic(obs, actions), dim=1)
    set_backend(critic, "masked")
    assert torch.allclose(out, torch.cat(critic(obs, actions), dim=1), atol=1e-5)
    assert all(int(module.steps) > 0 for module in norms.values())


def test_batchrenorm_statistics_survive_save_and_load(tmp_path):
    model = make("crossq", density=0.2)
    model.learn(200)
    norms = batch_renorms(model)
    assert all(not torch.equal(module.ra_mean, torch.zeros_like(module.ra_mean)) for module in norms.values())
    model.save(tmp_path / "model")
    loaded = batch_renorms(CrossQ.load(tmp_path / "model", device="cpu"))
    for name, module in norms.items():
        for key in ("ra_mean", "ra_var", "steps", "scale", "bias"):
            assert torch.equal(getattr(module, key), getattr(loaded[name], key)), f"{name}.{key}"


@pytest.mark.parametrize("algo", ALGOS)
def test_learn_alone_runs_the_schedule_to_update_end(algo):
    model = make(algo, density=0.2, update_end=0.5)
    model.learn(450)
    for controller in model.policy.controllers().values():
        assert float(controller.progress) == pytest.approx(1.0, abs=0.01)
        steps = int(controller.step)
        assert 0 < int(controller.num_updates) <= math.ceil(0.55 * steps / 20)


@pytest.mark.parametrize("algo, kwargs", [
    ("tqc", dict(actor_density=0.5, critic_density=0.2, distribution="er", dense_output=True, sparse_init=True,
                 n_quantiles=5)),
    ("tqc", dict(density=1.0, width_multiplier=2, iso_params=True, n_quantiles=5)),
    ("tqc", dict(density=0.3, dense_layers=("actor.mu", "critic.qf*.0"), use_sde=True, backend="sparse")),
    ("crossq", dict(actor_density=0.5, critic_density=0.1, distribution="uniform", dense_output=True)),
    ("crossq", dict(density=1.0, width_multiplier=2, iso_params=True)),
    ("crossq", dict(density=0.3, batch_norm=False, use_sde=True, drop_fraction=0.1, decay="constant",
                    prune="snip", grow="gradient")),
])
def test_policy_kwargs_of_both_kinds_work(algo, kwargs, tmp_path):
    model = make(algo, **kwargs)
    model.learn(120)
    model.save(tmp_path / "model")
    loaded = ALGOS[algo][0].load(tmp_path / "model", device="cpu")
    obs = np.zeros((2, 3), dtype=np.float32)
    assert np.array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    if kwargs.get("iso_params"):
        for net in ("actor", "critic"):
            layers = getattr(model.policy, f"{net}_controller").layers.values()
            dense_version = make(algo, density=1.0, n_quantiles=5) if algo == "tqc" else make(algo, density=1.0)
            expected = sum(m.weight.numel() for m in getattr(dense_version.policy, net).modules()
                           if isinstance(m, torch.nn.Linear))
            assert abs(sum(layer.nnz for layer in layers) - expected) <= len(layers)


def test_crossq_keeps_its_adam_betas_and_fused_adam():
    policy = make("crossq", density=0.2).policy
    assert policy.optimizer_kwargs == {"betas": (0.5, 0.999), "fused": True}
    given = make("crossq", density=0.2, optimizer_kwargs={"betas": (0.9, 0.999)}).policy
    assert given.optimizer_kwargs["betas"] == (0.9, 0.999)


def test_crossq_after_renorm_warmup_keeps_finite_weights_when_a_unit_has_no_active_input():
    model = CrossQ(SparseCrossQPolicy, "Pendulum-v1", learning_starts=100, seed=0, device="cpu",
                   policy_kwargs=dict(net_arch=[32], renorm_warmup_steps=1, density=0.5))
    first = model.policy.actor_controller.layers["latent_pi.1"]
    assert (first.mask.sum(dim=1) == 0).any(), "the case needs a hidden unit whose incoming weights are all masked"
    model.learn(130)
    assert all(bool(torch.isfinite(value).all()) for value in model.policy.state_dict().values())


@pytest.mark.parametrize("algo", ALGOS)
def test_rlx2_adds_entropy_bonuses_and_leaves_batch_renorm_statistics_alone(algo):
    from sparse_rl import SparseMetricsCallback
    from sparse_rl.sb3.rlx2 import RLx2ReplayBuffer

    cls, policy = ALGOS[algo]
    model = cls(policy, "Pendulum-v1", policy_kwargs=dict(net_arch=[32, 32], density=0.3, method="rlx2"),
                replay_buffer_class=RLx2ReplayBuffer, replay_buffer_kwargs=dict(n_steps=3, check_interval=100),
                learning_starts=50, batch_size=32, seed=0, device="cpu")
    model.replay_buffer.attach(model)
    model.learn(150, callback=SparseMetricsCallback())
    buffer = model.replay_buffer
    samples = buffer.sample(16)
    steps = {name: float(module.steps) for name, module in batch_renorms(model).items()}
    bonus = buffer.entropy_bonus(np.arange(16), np.zeros(16, dtype=int), samples.discounts)
    assert bonus.shape == (16, 1) and bool(torch.isfinite(bonus).all()) and bool((bonus != 0).any())
    assert steps == {name: float(module.steps) for name, module in batch_renorms(model).items()}
