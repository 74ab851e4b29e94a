"""Parameter-matched dense baselines: same weight count as the sparse network, same shape ratios."""

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_rl.sb3 import SparseSACPolicy, SparseTD3Policy
from sparse_rl.sb3.matched import closest_widths, matched_net_arch, mlp_weights, network_weights, scaled_widths


def test_mlp_weights_counts_every_matrix():
    assert mlp_weights(3, [4, 5], 2) == 3 * 4 + 4 * 5 + 5 * 2
    assert mlp_weights(3, [4], 1, copies=2) == 2 * (3 * 4 + 4)


@given(st.lists(st.integers(1, 300), min_size=1, max_size=3), st.integers(1, 300))
def test_scaled_widths_keep_the_ratios(net_arch, first):
    widths = scaled_widths(net_arch, first)
    assert widths[0] == max(1, first) and all(w >= 1 for w in widths)
    assert all(abs(w - first * n / net_arch[0]) <= 0.5 or w == 1 for w, n in zip(widths, net_arch))


@settings(max_examples=30)
@given(st.integers(1, 20), st.integers(1, 6), st.integers(50, 100_000))
def test_closest_widths_is_nearest_among_scalings(n_in, n_out, target):
    net_arch = [64, 48]
    best = closest_widths(net_arch, lambda w: mlp_weights(n_in, w, n_out), target)
    error = abs(mlp_weights(n_in, best, n_out) - target)
    assert all(error <= abs(mlp_weights(n_in, scaled_widths(net_arch, f), n_out) - target) for f in range(1, 65))


@pytest.mark.parametrize("policy_class, net_arch, sde", [(SparseSACPolicy, [256, 256], {}),
                                                       (SparseSACPolicy, [256, 256], {"use_sde": True}),
                                                       (SparseTD3Policy, [400, 300], {})])
@pytest.mark.parametrize("density", [0.5, 0.1])
def test_matched_dense_network_has_the_sparse_weight_count(policy_class, net_arch, sde, density):
    env = gym.make("HalfCheetah-v4")
    arch = matched_net_arch(policy_class, env.observation_space, env.action_space, net_arch, dict(density=density),
                            **sde)
    sparse = policy_class(env.observation_space, env.action_space, lambda _: 1e-3, net_arch=net_arch,
                          density=density, **sde)
    dense = policy_class(env.observation_space, env.action_space, lambda _: 1e-3, net_arch=arch, density=1.0, **sde)
    for network in ("actor", "critic"):
        want, got = network_weights(getattr(sparse, network)), network_weights(getattr(dense, network))
        assert abs(got - want) / want < 0.02, (network, want, got)
    assert arch["pi"][0] < net_arch[0] and arch["qf"][0] < net_arch[0]
