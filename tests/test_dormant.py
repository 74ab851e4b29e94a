"""Dormant neurons: the fraction on a hand-made layer, ReDo's recycling of a forced-dormant neuron,
and both through SAC and TD3 with save and load."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import SAC, TD3
from torch import nn

from sparse_rl import SparseSACPolicy, SparseTD3Policy
from sparse_rl.controller import MaskController
from sparse_rl.dormant import DormantMonitor
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import sparse_layers
from sparse_rl.neurons import dormant_neurons, dormant_scores, hidden_layers
from sparse_rl.sb3.callbacks import SparseMetricsCallback
from sparse_rl.sparsity import SparsityConfig


def test_scores_of_hand_made_activations():
    activations = torch.tensor([[0.0, 2.0, -4.0], [0.0, -2.0, 8.0]])  # mean |a| per neuron: 0, 2, 6; layer mean 8/3
    scores = dormant_scores(activations)
    assert torch.allclose(scores, torch.tensor([0.0, 0.75, 2.25]))
    assert dormant_neurons(scores, 0.0).tolist() == [True, False, False]
    assert dormant_neurons(scores, 0.8).tolist() == [True, True, False]


def small_network() -> tuple[nn.Sequential, MaskController]:
    """x (2) -> 4 ReLU neurons -> 1: neuron 0 always 0 (dormant), neuron 3 dead (no incoming weight)."""
    network = nn.Sequential(SparseLinear(2, 4), nn.ReLU(), SparseLinear(4, 1))
    first = network[0]
    mask = torch.ones(4, 2, dtype=torch.bool)
    mask[3] = False
    first.set_mask(mask)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        first.bias.copy_(torch.tensor([-1.0, 0.0, 0.0, 0.0]))
    return network, MaskController(sparse_layers(network))


def test_dormant_fraction_of_a_hand_made_layer_equals_the_hand_computation():
    network, controller = small_network()
    monitor = DormantMonitor(controller, network, interval=1)
    assert list(monitor.hidden) == ["0"] and monitor.hidden["0"].consumers == ("2",)
    monitor._arm(True)
    network(torch.tensor([[1.0, 0.1], [3.0, 0.1]]))  # |a| means: 0, 2, 0.1, 0 -> layer mean 0.525
    values = monitor.measure()
    # tau 0: neuron 0 (neuron 3 is dead, counted apart); tau 0.1: score of neuron 2 is 0.1 / 0.525 > 0.1
    assert values == {"tau0": 0.25, "tau0.1": 0.25, "dead": 0.25}
    monitor._arm(True)
    network(torch.tensor([[1.0, 0.01], [3.0, 0.01]]))  # neuron 2: 0.01 / 0.5025 <= 0.1
    assert monitor.measure()["tau0.1"] == 0.5


def test_recycling_reinitialises_a_dormant_neuron_resets_its_moments_and_leaves_the_others():
    torch.manual_seed(0)
    network, controller = small_network()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network(torch.randn(8, 2)).sum().backward()
    optimizer.step()
    first, second = network[0], network[2]
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    moments = {name: optimizer.state[p]["exp_avg"].clone() for name, p in network.named_parameters()}
    with torch.no_grad():
        first.weight[1].abs_()  # neuron 1 stays active on positive inputs
    monitor = DormantMonitor(controller, network, interval=1, recycle_tau=0.0)
    monitor._arm(True)
    network(torch.rand(8, 2) + 1)
    assert monitor.recycle(optimizer) == 1
    assert bool((first.weight[0] != 0).all()) and torch.equal(first.mask[0], torch.ones(2, dtype=torch.bool))
    assert first.bias[0] == 0 and bool((second.weight[:, 0] == 0).all())
    for param, index in ((first.weight, (0,)), (first.bias, (0,)), (second.weight, (slice(None), 0))):
        for key in ("exp_avg", "exp_avg_sq"):
            assert bool((optimizer.state[param][key][index] == 0).all())
    assert torch.equal(first.weight[1:3], before["0.weight"][1:3].abs().where(torch.tensor([[True], [False]]),
                                                                              before["0.weight"][1:3]))
    assert torch.equal(optimizer.state[first.weight]["exp_avg"][1:], moments["0.weight"][1:])
    assert torch.equal(second.weight[:, 1:], before["2.weight"][:, 1:])


def test_sac_actor_and_critic_hidden_layers_and_their_readers():
    model = SAC(SparseSACPolicy, "Pendulum-v1", policy_kwargs=dict(density=0.5, net_arch=[8, 8]))
    actor = {name: hidden.consumers for name, hidden in hidden_layers(model.actor).items()}
    critic = {name: hidden.consumers for name, hidden in hidden_layers(model.critic).items()}
    assert actor == {"latent_pi.0": ("latent_pi.2",), "latent_pi.2": ("mu", "log_std")}
    assert critic == {f"qf{q}.{i}": (f"qf{q}.{i + 2}",) for q in (0, 1) for i in (0, 2)}


def test_recycling_needs_a_method_of_fixed_weight_count():
    with pytest.raises(ValueError, match="recycle_dormant needs a method of fixed weight count .*not 'gmp'"):
        SparsityConfig.from_kwargs(method="gmp", density=0.1, recycle_dormant=0.1)
    with pytest.raises(ValueError, match=r"recycle_dormant must be None or a number in \[0, 1\), got 2"):
        SparsityConfig.from_kwargs(method="rigl", density=0.1, recycle_dormant=2)


@pytest.mark.parametrize("algo, policy_class", [(SAC, SparseSACPolicy), (TD3, SparseTD3Policy)])
def test_every_run_logs_dormant_fractions_and_recycling_runs_and_survives_save_load(algo, policy_class, tmp_path):
    kwargs = dict(density=0.3, update_interval=10, recycle_dormant=0.1, recycle_interval=20, net_arch=[16, 16])
    model = algo(policy_class, "Pendulum-v1", policy_kwargs=kwargs, learning_starts=30, batch_size=16, seed=0)
    model.learn(150, callback=SparseMetricsCallback())
    logged = model.logger.name_to_value
    for net in ("actor", "critic"):
        for key in ("tau0", "tau0.1", "dead", "recycled"):
            assert f"sparsity/dormant/{net}/{key}" in logged
    assert model.policy.dormant_monitors()["critic"].recycled > 0
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model")
    assert loaded.policy.sparsity.recycle_dormant == 0.1 and loaded.policy.sparsity.recycle_interval == 20
    loaded.set_env(model.get_env())
    loaded.learn(40, reset_num_timesteps=False)


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.lists(st.floats(-10, 10), min_size=4, max_size=4), min_size=1, max_size=6),
       tau=st.floats(0, 1))
def test_dormant_neurons_match_a_plain_python_computation(rows, tau):
    means = [sum(abs(row[j]) for row in rows) / len(rows) for j in range(4)]
    layer_mean = sum(means) / 4
    expected = [layer_mean == 0 or m / layer_mean <= tau for m in means]
    scores = dormant_scores(torch.tensor(rows, dtype=torch.float64))
    close = [abs(m / layer_mean - tau) < 1e-6 if layer_mean else False for m in means]
    got = dormant_neurons(scores, tau).tolist()
    assert all(g == e for g, e, c in zip(got, expected, close) if not c)


def test_regrowth_moves_a_recycled_neurons_connections_to_its_largest_gradients():
    network, controller = small_network()
    first = network[0]
    mask = first.mask.clone()
    mask[0] = torch.tensor([True, False])
    first.set_mask(mask)
    monitor = DormantMonitor(controller, network, interval=1, recycle_tau=0.0, regrow=True)
    monitor._arm(True)
    network(torch.rand(8, 2) + 1)
    first.weight.grad = torch.tensor([[0.1, 5.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert monitor.recycle(None) == 1
    assert first.mask[0].tolist() == [False, True] and first.weight[0, 1] != 0 and first.weight[0, 0] == 0
