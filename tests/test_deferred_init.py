"""Linear layers built on the meta device and their values drawn later: the same values, the same random stream and
the same policies as a dense build."""

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sb3_contrib import TQC, CrossQ
from stable_baselines3 import SAC, TD3
from torch import nn

import sparse_rl.sb3.contrib_networks
import sparse_rl.sb3.networks
from sparse_rl import SparseCrossQPolicy, SparseSACPolicy, SparseTD3Policy, SparseTQCPolicy
from sparse_rl.deferred_init import linears_on_meta
from sparse_rl.layers import SparseLinear


@settings(max_examples=40, deadline=None)
@given(in_features=st.integers(0, 40), out_features=st.integers(1, 40), bias=st.booleans(),
       seed=st.integers(0, 2**16), fraction=st.floats(0, 1))
def test_a_deferred_layer_draws_the_values_and_leaves_the_generator_as_a_dense_build(in_features, out_features, bias,
                                                                                   seed, fraction):
    torch.manual_seed(seed)
    dense = nn.Linear(in_features, out_features, bias=bias)
    after_dense = torch.get_rng_state()
    torch.manual_seed(seed)
    with linears_on_meta() as deferred:
        linear = nn.Linear(in_features, out_features, bias=bias)
        assert torch.equal(torch.get_rng_state(), after_dense)
        subclass = SparseLinear(3, 2)
    assert linear.weight.is_meta and linear in deferred and subclass not in deferred and not subclass.weight.is_meta
    generator = torch.Generator().manual_seed(seed + 1)
    numel = in_features * out_features
    positions = torch.randperm(numel, generator=generator)[: round(fraction * numel)].sort().values
    values, drawn_bias = deferred[linear].weight_at(linear, positions)
    assert torch.equal(values, dense.weight.detach().flatten()[positions])
    assert (drawn_bias is None) == (not bias) and (drawn_bias is None or torch.equal(drawn_bias, dense.bias.detach()))
    deferred[linear].materialize(linear)
    assert torch.equal(linear.weight, dense.weight) and (not bias or torch.equal(linear.bias, dense.bias))


def test_the_generator_after_a_deferred_build_is_where_a_dense_build_leaves_it():
    torch.manual_seed(3)
    nn.Linear(300, 200)
    expected = torch.get_rng_state()
    torch.manual_seed(3)
    with linears_on_meta():
        nn.Linear(300, 200)
    assert torch.equal(torch.get_rng_state(), expected)


def test_the_layer_class_is_restored_even_when_building_fails():
    original = nn.Linear.__init__
    with pytest.raises(RuntimeError, match="boom"), linears_on_meta():
        raise RuntimeError("boom")
    assert nn.Linear.__init__ is original
    assert not nn.Linear(2, 2).weight.is_meta


CASES = [(SAC, SparseSACPolicy, dict(use_sde=True)), (SAC, SparseSACPolicy, {}), (TD3, SparseTD3Policy, {}),
         (TQC, SparseTQCPolicy, {}), (CrossQ, SparseCrossQPolicy, {})]
KWARGS = [dict(density=0.1), dict(density=0.5), dict(density=1.0), dict(density=0.1, method="srigl"),
          dict(density=0.1, method="gmp"), dict(density=0.1, backend="masked")]


def policy_state(algo, policy_class, algo_kwargs, policy_kwargs):
    model = algo(policy_class, "Pendulum-v1", seed=0, device="cpu", **algo_kwargs,
                 policy_kwargs=dict(net_arch=[64, 64], **policy_kwargs))
    assert not any(t.is_meta for t in list(model.policy.parameters()) + list(model.policy.buffers()))
    return model.policy.state_dict()


@pytest.mark.parametrize("policy_kwargs", KWARGS, ids=str)
@pytest.mark.parametrize("algo, policy_class, algo_kwargs", CASES, ids=lambda c: getattr(c, "__name__", str(c)))
def test_policies_built_on_meta_equal_the_dense_build(algo, policy_class, algo_kwargs, policy_kwargs, monkeypatch):
    """Every parameter and buffer of every network (compact, masked, dense, targets) as when SB3's layers were
    first built dense, for SAC (with and without gSDE), TD3, TQC and CrossQ."""
    deferred = policy_state(algo, policy_class, algo_kwargs, policy_kwargs)
    for module in (sparse_rl.sb3.networks, sparse_rl.sb3.contrib_networks):
        monkeypatch.setattr(module, "linears_on_meta", lambda: contextlib.nullcontext({}))
    dense = policy_state(algo, policy_class, algo_kwargs, policy_kwargs)
    assert deferred.keys() == dense.keys()
    assert all(torch.equal(deferred[key], dense[key]) for key in dense), [
        key for key in dense if not torch.equal(deferred[key], dense[key])]
