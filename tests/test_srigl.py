"""SRigL: constant fan-in after every update, ablated neurons with no incoming or outgoing weights."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import SAC, TD3
from torch import nn

from sparse_rl import SparseSACPolicy, SparseTD3Policy
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import sparse_layers
from sparse_rl.methods.srigl import SRigLController, init_constant_fan_in
from sparse_rl.sparsity import SparsityConfig


def check_structure(controller: SRigLController) -> None:
    """Every live neuron of a layer has the same fan-in; an ablated hidden neuron has no outgoing weight."""
    for name, layer in controller.layers.items():
        fan_in = layer.mask.sum(dim=1)
        live = fan_in > 0
        assert fan_in[live].unique().numel() == 1, (name, fan_in.tolist())
        if name not in controller.consumers:
            assert bool(live.all()), f"output layer {name} lost a neuron"
        for consumer in controller.consumers.get(name, ()):
            assert not bool(controller.layers[consumer].mask[:, ~live].any()), (name, consumer)


def chain(widths: list[int], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    modules: list[nn.Module] = []
    for n_in, n_out in zip(widths, widths[1:]):
        modules += [SparseLinear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*modules[:-1])


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.integers(3, 12), min_size=3, max_size=4), density=st.floats(0.1, 0.9),
       drop=st.floats(0.0, 0.9), gamma=st.floats(0.0, 1.0), seed=st.integers(0, 10**6))
def test_fan_in_stays_constant_and_ablated_neurons_have_no_weights(widths, density, drop, gamma, seed):
    network = chain(widths, seed)
    layers = sparse_layers(network)
    init_constant_fan_in(layers, density, "erk")
    names = list(layers)
    consumers = {a: (b,) for a, b in zip(names, names[1:])}
    controller = SRigLController(layers, None, None, None, consumers=consumers, gamma=gamma)
    budgets = {name: layer.nnz for name, layer in layers.items()}
    check_structure(controller)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(4):
        for layer in layers.values():
            layer.weight.grad = torch.randn(layer.weight.shape, generator=generator)
            with torch.no_grad():
                layer.weight.add_(torch.randn(layer.weight.shape, generator=generator) * layer.mask)
        controller.update(drop)
        check_structure(controller)
        for name, layer in layers.items():
            assert layer.nnz <= budgets[name] + layer.out_features
            assert bool((layer.weight[~layer.mask] == 0).all())


def test_a_neuron_with_no_salient_weights_is_ablated_and_loses_its_outgoing_weights():
    network = chain([4, 4, 2], 0)
    layers = sparse_layers(network)
    init_constant_fan_in(layers, 0.5, "uniform")
    first, second = layers["0"], layers["2"]
    with torch.no_grad():
        first.weight.copy_(torch.ones(4, 4) * first.mask)
        first.weight[0] = 1e-6 * first.mask[0]  # neuron 0: smallest weights, no gradient anywhere
        first.weight.grad = torch.ones(4, 4)
        first.weight.grad[0] = 0
        second.weight.grad = torch.zeros(2, 4)
    controller = SRigLController(layers, None, None, None, consumers={"0": ("2",)}, gamma=0.3)
    controller.update(0.5)
    assert not bool(first.mask[0].any()) and not bool(second.mask[:, 0].any())
    assert first.mask[1:].sum(dim=1).tolist() == [3, 3, 3]  # the budget of 8 shared by 3 neurons
    check_structure(controller)


def assert_structure_after_every_update(policy) -> None:
    for controller in policy.controllers().values():
        update = controller.update

        def checked(*args, _update=update, _controller=controller, **kwargs):
            stats = _update(*args, **kwargs)
            check_structure(_controller)
            return stats

        controller.update = checked


@pytest.mark.parametrize("backend", ["masked", "compact"])
@pytest.mark.parametrize("algo, policy_class", [(SAC, SparseSACPolicy), (TD3, SparseTD3Policy)])
def test_constant_fan_in_holds_through_training_and_save_load(algo, policy_class, backend, tmp_path):
    """On either layout; γ_sal = 0.9 ablates neurons, so compact layers change their counts and their optimizer
    state follows (it trains on after the updates, and its moments keep one slot per active weight)."""
    model = algo(policy_class, "Pendulum-v1", policy_kwargs=dict(method="srigl", density=0.2, update_interval=20,
                                                                 net_arch=[16, 16], backend=backend, srigl_gamma=0.9),
                 learning_starts=40, batch_size=16, seed=0)
    assert_structure_after_every_update(model.policy)
    layers = [m for m in model.policy.modules() if isinstance(m, SparseLinear) and m.nnz < m.weight.numel()]
    assert layers and all(layer.layout == backend for layer in layers)
    counts = [layer.nnz for layer in layers]
    model.learn(200)
    assert int(model.policy.critic_controller.num_updates) > 0
    assert [layer.nnz for layer in layers] != counts
    for network in (model.actor, model.critic):
        for layer in (m for m in network.modules() if isinstance(m, SparseLinear)):
            param = layer.trainable_weight()
            assert all(slot.shape == param.shape for slot in network.optimizer.state[param].values()
                       if torch.is_tensor(slot) and slot.dim() > 0)
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", env=model.get_env())
    for net, controller in model.policy.controllers().items():
        other = loaded.policy.controllers()[net]
        check_structure(other)
        for name, layer in controller.layers.items():
            assert torch.equal(layer.mask, other.layers[name].mask)
            assert other.layers[name].layout == layer.layout
            assert controller.budget(name) == other.budget(name)
    loaded.learn(60, reset_num_timesteps=False)


def test_a_gamma_outside_0_1_is_refused_with_its_value():
    with pytest.raises(ValueError, match=r"srigl_gamma must be a number in \[0, 1\], got 2"):
        SparsityConfig.from_kwargs(method="srigl", density=0.1, srigl_gamma=2)
