"""Compact layers in a row run as one autograd node and compute exactly what they compute one node each."""

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3 import SAC, TD3
from torch import nn

from sparse_rl import SparseSACPolicy, SparseTD3Policy
from sparse_rl.backends import compact_chain, kernels
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import random_mask
from sparse_rl.relu_fusion import RECTIFIED, FusedReLUSequential, fuse_relus


def one_node_per_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compact_chain, "run_length", lambda modules, start, x: 0)


def compact_network(widths: list[int], relus: list[bool], biases: list[bool], fractions: list[float],
                    seed: int) -> nn.Sequential:
    """:class:`FusedReLUSequential` of compact layers of ``widths``, each followed by a ReLU where ``relus`` says
    (fused), between topology updates (no dense gradient kept)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    modules: list[nn.Module] = []
    for (fan_in, fan_out), relu, bias, fraction in zip(zip(widths, widths[1:]), relus, biases, fractions):
        layer = SparseLinear(fan_in, fan_out, bias=bias)
        layer.set_mask(random_mask((fan_out, fan_in), round(fraction * fan_in * fan_out), generator))
        layer.set_backend("compact")
        layer.dense_grad_needed = False
        modules += [layer, nn.ReLU()] if relu else [layer]
    network = nn.Sequential(*modules)
    fuse_relus(network)
    network.__class__ = FusedReLUSequential  # as fuse_relus makes it where any ReLU follows a sparse layer
    return network


def step(network: nn.Module, x: torch.Tensor, upstream: torch.Tensor, input_grad: bool) -> list:
    """The output, its rectified tag, the input's gradient and every parameter's gradient."""
    for parameter in network.parameters():
        parameter.grad = None
    x = x.detach().clone().requires_grad_(input_grad)
    y = network(x)
    y.backward(upstream)
    return [y.detach(), getattr(y, RECTIFIED, False), x.grad, *(p.grad for p in network.parameters())]


def assert_a_run_gives_what_one_node_per_layer_gives(data, widths: list[int], relus: list[bool], batch: int,
                                                     seed: int, feature_major: bool, input_grad: bool) -> None:
    """Outputs, rectified tags and gradients of a random run of compact layers of ``widths`` (with and without a
    graph; biases, densities and frozen parameters drawn) equal those of one node per layer, bit for bit."""
    depth = len(relus)
    biases = data.draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    fractions = data.draw(st.lists(st.floats(0, 1), min_size=depth, max_size=depth))
    chained = compact_network(widths, relus, biases, fractions, seed)
    frozen = data.draw(st.lists(st.booleans(), min_size=len(list(chained.parameters())),
                                max_size=len(list(chained.parameters()))))
    for parameter, freeze in zip(chained.parameters(), frozen):
        parameter.requires_grad_(not freeze)
    single = copy.deepcopy(chained)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, widths[0], generator=generator) - 0.3
    if feature_major:
        x = x.t().contiguous().t()
    upstream = torch.randn(batch, widths[-1], generator=generator)
    assert compact_chain.run_length(list(chained), 0, x) == len(chained)
    with pytest.MonkeyPatch.context() as patch:
        one_node_per_layer(patch)
        expected = step(single, x, upstream, input_grad) if input_grad or not all(frozen) else None
        with torch.no_grad():
            expected_no_graph = single(x)
    if expected is not None:
        actual = step(chained, x, upstream, input_grad)
        for want, got in zip(expected, actual, strict=True):
            assert torch.equal(got, want) if isinstance(want, torch.Tensor) else got == want  # None, or the tag
        if input_grad:
            assert actual[2].is_contiguous() == x.is_contiguous(), "the input gradient comes in the input's layout"
    with torch.no_grad():  # the no-graph path (target networks, predict)
        no_graph = chained(x)
    assert torch.equal(no_graph, expected_no_graph)
    assert getattr(no_graph, RECTIFIED, False) == relus[-1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), depth=st.integers(2, 4), batch=st.integers(1, 300), seed=st.integers(0, 2**16),
       feature_major=st.booleans(), input_grad=st.booleans())
def test_a_run_gives_the_outputs_tags_and_gradients_of_one_node_per_layer(simd, data, depth, batch, seed,
                                                                         feature_major, input_grad):
    """Same floats, not just close, whichever parameters are frozen and whether the input wants a gradient."""
    widths = data.draw(st.lists(st.integers(1, 70), min_size=depth + 1, max_size=depth + 1))
    relus = data.draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    assert_a_run_gives_what_one_node_per_layer_gives(data, widths, relus, batch, seed, feature_major, input_grad)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), depth=st.integers(2, 4), batch=st.integers(1, 300), seed=st.integers(0, 2**16),
       feature_major=st.booleans(), input_grad=st.booleans())
def test_a_one_output_head_runs_inside_the_layer_before_it_and_gives_the_same_floats(simd, data, depth, batch, seed,
                                                                                  feature_major, input_grad,
                                                                                  monkeypatch):
    """A critic's Q network: the run's last layer has one output and no ReLU, so its forward and input gradient run
    inside the layer before's passes (``compact_chain.fuses_head``); outputs and gradients equal those of one node
    per layer, bit for bit."""
    widths = [*data.draw(st.lists(st.integers(1, 70), min_size=depth, max_size=depth)), 1]
    relus = [*data.draw(st.lists(st.booleans(), min_size=depth - 1, max_size=depth - 1)), False]
    fused = []
    original = kernels.layer_forward_into_head
    monkeypatch.setattr(kernels, "layer_forward_into_head", lambda *args: fused.append(1) or original(*args))
    assert_a_run_gives_what_one_node_per_layer_gives(data, widths, relus, batch, seed, feature_major, input_grad)
    assert fused, "the head did not run inside the layer before it"


def chainable_network() -> FusedReLUSequential:
    network = compact_network([6, 9, 9, 3], [True, True, False], [True, True, True], [0.5, 0.5, 1.0], 0)
    assert isinstance(network, FusedReLUSequential)
    return network


def test_a_run_is_the_compact_layers_in_a_row_with_their_fused_relus():
    network = chainable_network()  # sparse, ReLU, sparse, ReLU, sparse
    x = torch.randn(4, 6)
    assert compact_chain.run_length(list(network), 0, x) == 5
    assert compact_chain.run_length(list(network), 2, x) == 3
    assert compact_chain.run_length(list(network), 4, x) == 0, "one layer alone is no run"
    network[2].set_backend("masked")
    assert compact_chain.run_length(list(network), 0, x) == 0, "a masked layer ends a run"
    assert compact_chain.run_length(list(network), 0, torch.randn(2, 4, 6)) == 0, "only 2-d input"


def test_hooks_and_dense_gradient_steps_take_one_node_per_layer():
    """Each of these must see, or compute, what one layer's own call gives."""
    network, x = chainable_network(), torch.randn(4, 6)
    handle = network[1].register_forward_hook(lambda module, inputs, output: None)
    assert compact_chain.run_length(list(network), 0, x) == 0, "a hook on a fused ReLU"
    handle.remove()
    handle = network[4].register_full_backward_hook(lambda module, grad_input, grad_output: None)
    assert compact_chain.run_length(list(network), 0, x) == 4, "a hook on the last layer: the run ends before it"
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda module, inputs, output: None)
    assert compact_chain.run_length(list(network), 0, x) == 0, "a global hook"
    handle.remove()
    network[0].dense_grad_needed = True
    assert compact_chain.run_length(list(network), 0, x) == 0, "the first layer keeps its dense gradient"
    with torch.no_grad():
        assert compact_chain.run_length(list(network), 0, x) == 5, "without a graph there is no gradient to keep"
    assert compact_chain.run_length(list(network), 2, x) == 3


def test_values_changed_in_place_before_the_backward_are_caught_as_for_one_layer():
    network = chainable_network()
    y = network(torch.randn(4, 6))
    with torch.no_grad():
        network[2].values.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("outputs", [3, 1])  # 1: a Q head, which runs inside the layer before where compiled
def test_without_the_extension_a_run_computes_what_its_layers_compute(monkeypatch, outputs):
    network = compact_network([6, 9, 9, outputs], [True, True, False], [True, True, True], [0.5, 0.5, 1.0], 0)
    single = copy.deepcopy(network)
    x, upstream = torch.randn(16, 6), torch.randn(16, outputs)
    monkeypatch.setattr(kernels, "_EXTENSION", None)
    monkeypatch.setattr(kernels, "_warned", True)
    actual = step(network, x, upstream, True)
    one_node_per_layer(monkeypatch)
    for want, got in zip(step(single, x, upstream, True), actual, strict=True):
        if isinstance(want, torch.Tensor):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algo, policy", [(SAC, SparseSACPolicy), (TD3, SparseTD3Policy)])
def test_same_seed_agents_train_to_the_same_floats_chained_or_not(algo, policy, monkeypatch):
    """Through SB3's own ``train()``, RigL's topology updates (with their dense-gradient steps) included."""
    kwargs = dict(learning_starts=64, batch_size=32, seed=3, device="cpu", policy_kwargs=dict(
        density=0.2, net_arch=[64, 64], backend="compact", update_interval=25))
    runs = []
    original = compact_chain.forward

    def counting(modules, x):
        runs.append(len(modules))
        return original(modules, x)

    monkeypatch.setattr(compact_chain, "forward", counting)
    chained = algo(policy, "Pendulum-v1", **kwargs)  # each built right before it learns: both seed torch's RNG
    chained.learn(160)
    assert 5 in runs, "the critics' Q networks ran as one node"
    one_node_per_layer(monkeypatch)
    single = algo(policy, "Pendulum-v1", **kwargs)
    single.learn(160)
    for (name, want), got in zip(single.policy.state_dict().items(), chained.policy.state_dict().values()):
        assert torch.equal(got, want), name


def test_successors_are_the_next_linear_layer_of_a_fused_sequence_straight_or_through_a_fused_relu():
    """What a run walks: only a sequence that runs compact layers in runs, and only a ReLU fused to its layer."""
    first, second, third, fourth = SparseLinear(3, 4), SparseLinear(4, 4), SparseLinear(4, 4), SparseLinear(4, 2)
    network = nn.Sequential(first, nn.ReLU(), second, nn.ReLU(inplace=True), third, nn.Tanh(), fourth)
    assert compact_chain.successors(network) == {}, "not fused: its layers never run as one node"
    fuse_relus(network)
    assert compact_chain.successors(nn.ModuleDict(dict(body=network))) == {first: second}
    pair = nn.Sequential(first, second, nn.ReLU())
    fuse_relus(pair)
    assert compact_chain.successors(pair) == {first: second}
