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
