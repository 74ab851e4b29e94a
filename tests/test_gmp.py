"""GMP: density on Zhu & Gupta's cubic schedule at every prune, the target exactly from prune_end on,
nothing regrows; SAC and TD3 with save and load."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import SAC, TD3
from torch import nn

from sparse_rl import SparseSACPolicy, SparseTD3Policy
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import sparse_layers
from sparse_rl.methods.gmp import GMPController
from sparse_rl.methods.halo import PruneSchedule
from sparse_rl.sb3.callbacks import SparseMetricsCallback
from sparse_rl.sparsity import SparsityConfig


def cubic(step: int, start: int, end: int, final: float) -> float:
    x = min(1.0, (step - start) / (end - start))
    return final + (1 - final) * (1 - x) ** 3


@settings(max_examples=25, deadline=None)
@given(final=st.floats(0.05, 0.9), scope=st.sampled_from(["layer", "global"]), start=st.integers(0, 6),
       length=st.integers(1, 8), interval=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_density_follows_the_cubic_schedule_and_ends_exactly_at_the_target(final, scope, start, length,
                                                                           interval, seed):
    torch.manual_seed(seed)
    network = nn.Sequential(SparseLinear(7, 9), nn.ReLU(), SparseLinear(9, 5), nn.ReLU(), SparseLinear(5, 3))
    layers = sparse_layers(network)
    total = sum(layer.weight.numel() for layer in layers.values())
    shares = {name: final for name in layers}  # a uniform split keeps every layer's share at the network's
    end = start + length * interval
    controller = GMPController(layers, PruneSchedule(final, start, end, interval), shares, scope)
    previous = {name: layer.mask.clone() for name, layer in layers.items()}
    for step in range(1, end + 3 * interval + 1):
        for layer in layers.values():
            with torch.no_grad():
                layer.weight.add_(torch.randn_like(layer.weight) * layer.mask)
        controller.before_optimizer_step()
        nnz = sum(layer.nnz for layer in layers.values())
        if step % interval == 0 and step >= start:
            assert abs(nnz - cubic(step, start, end, final) * total) <= 0.5 + 1e-9, (step, nnz)
        if step >= end:
            assert abs(nnz - final * total) <= 0.5 + 1e-9
        for name, layer in layers.items():
            assert not bool((layer.mask & ~previous[name]).any()), "a pruned weight regrew"
            previous[name] = layer.mask.clone()


def test_an_unknown_scope_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown gmp_scope 'row'; allowed: layer, global"):
        SparsityConfig.from_kwargs(method="gmp", density=0.1, gmp_scope="row")


@pytest.mark.parametrize("algo, policy_class", [(SAC, SparseSACPolicy), (TD3, SparseTD3Policy)])
def test_gmp_reaches_the_exact_density_pays_the_dense_phase_and_survives_save_load(algo, policy_class, tmp_path):
    kwargs = dict(method="gmp", density=0.2, update_interval=10, prune_start=20, prune_end=60, net_arch=[16, 16])
    model = algo(policy_class, "Pendulum-v1", policy_kwargs=kwargs, learning_starts=30, batch_size=16, seed=0)
    callback = SparseMetricsCallback()
    model.learn(200, callback=callback)
    for net, controller in model.policy.controllers().items():
        layers = controller.layers
        total = sum(layer.weight.numel() for layer in layers.values())
        assert sum(layer.nnz for layer in layers.values()) == round(0.2 * total), net
    assert 0.2 < callback.train_flops / callback.dense_train_flops < 1.0
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model")
    for net, controller in model.policy.controllers().items():
        for name, layer in controller.layers.items():
            assert torch.equal(layer.mask, loaded.policy.controllers()[net].layers[name].mask)


def hidden_layers_of(model) -> dict[str, SparseLinear]:
    return {name: m for name, m in model.policy.named_modules()
            if isinstance(m, SparseLinear) and (m.in_features, m.out_features) == (64, 64)}


@pytest.mark.parametrize("algo, policy_class", [(SAC, SparseSACPolicy), (TD3, SparseTD3Policy)])
def test_layers_take_autos_layout_once_their_density_is_final_and_train_on(algo, policy_class, tmp_path):
    """Dense and masked while pruning; from the prune at prune_end, each layer (its target too) takes the layout
    ``auto`` gives a fixed-count layer (compact for these 64×64 layers at density ≤ 0.2 where the kernels are
    built), the optimizer follows, the counts stay exact and training goes on, also after save and load."""
    from sparse_rl.backends import kernels

    kwargs = dict(method="gmp", density=0.1, update_interval=10, prune_start=20, prune_end=60, net_arch=[64, 64])
    model = algo(policy_class, "Pendulum-v1", policy_kwargs=kwargs, learning_starts=30, batch_size=16, seed=0)
    hidden = hidden_layers_of(model)
    assert hidden and all(layer.layout == "masked" and layer.density == 1 for layer in hidden.values())
    model.learn(160)  # TD3's actor steps every other step: 65 steps, past prune_end
    expected = "compact" if kernels.compiled() else "masked"
    hidden = hidden_layers_of(model)
    assert all(layer.layout == expected for layer in hidden.values()), {n: m.layout for n, m in hidden.items()}
    assert all(layer.density <= 0.2 for layer in hidden.values())

    def check(policy) -> None:
        for net, controller in policy.controllers().items():
            total = sum(layer.in_features * layer.out_features for layer in controller.layers.values())
            assert sum(layer.nnz for layer in controller.layers.values()) == round(0.1 * total), net
            for name, layer in controller.layers.items():
                target = controller.targets.get(name)
                if target is not None:
                    assert target.layout == layer.layout and torch.equal(target.mask, layer.mask), name
        for network in (policy.actor, policy.critic):
            for layer in (m for m in network.modules() if isinstance(m, SparseLinear)):
                param = layer.trainable_weight()
                assert any(param is p for group in network.optimizer.param_groups for p in group["params"])
                assert all(slot.shape == param.shape for slot in network.optimizer.state[param].values()
                           if torch.is_tensor(slot) and slot.dim() > 0)

    check(model.policy)
    before = {name: layer.weight.clone() for name, layer in hidden.items() if name.startswith("critic.")}
    model.learn(40, reset_num_timesteps=False)
    check(model.policy)
    assert all(not torch.equal(before[name], hidden[name].weight) for name in before)
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", env=model.get_env())
    loaded.learn(20, reset_num_timesteps=False)
    assert all(layer.layout == expected for layer in hidden_layers_of(loaded).values())
    check(loaded.policy)
