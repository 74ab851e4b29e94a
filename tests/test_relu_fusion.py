"""A ReLU fused into the sparse layer before it computes exactly what the unfused pair computes."""

import copy

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3 import SAC
from torch import nn

from sparse_rl import SparseSACPolicy
from sparse_rl.backends import kernels
from sparse_rl.backends.auto import is_narrow_output_layer
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import random_mask
from sparse_rl.network_layout import set_backend
from sparse_rl.neurons import hidden_layers
from sparse_rl.relu_fusion import RECTIFIED, FusedReLUSequential, RectifiedReLU, fuse_relus, rectifies_now


def unfused_and_fused(in_features: int, hidden: int, count: int, seed: int, backend: str):
    """``Sequential(sparse, ReLU, sparse, ReLU)`` as built, and a copy with both ReLUs fused."""
    torch.manual_seed(seed)
    first, second = SparseLinear(in_features, hidden), SparseLinear(hidden, 5)
    generator = torch.Generator().manual_seed(seed)
    first.set_mask(random_mask((hidden, in_features), count, generator))
    second.set_mask(random_mask((5, hidden), (5 * hidden) // 3, generator))
    unfused = nn.Sequential(first, nn.ReLU(), second, nn.ReLU())
    fused = copy.deepcopy(unfused)
    assert fuse_relus(fused) == 2
    set_backend(unfused, backend)
    set_backend(fused, backend)
    return unfused, fused


def run(network: nn.Sequential, x: torch.Tensor, upstream: torch.Tensor, input_grad: bool = True):
    """Output, hidden activations as a forward hook on the first ReLU sees them, input (``None`` without
    ``input_grad``) and parameter gradients."""
    seen = []
    handle = network[1].register_forward_hook(lambda module, inputs, output: seen.append(output.detach().clone()))
    x = x.detach().clone().requires_grad_(input_grad)
    y = network(x)
    y.backward(upstream)
    handle.remove()
    return [y.detach(), seen[0], x.grad, *(p.grad for p in network.parameters())]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(in_features=st.integers(1, 40), hidden=st.integers(1, 70), batch=st.integers(1, 300),
       fraction=st.floats(0, 1), seed=st.integers(0, 2**16), feature_major=st.booleans(),
       backend=st.sampled_from(["compact", "masked", "sparse"]))
def test_a_fused_relu_gives_the_unfused_outputs_hooks_and_gradients_exactly(simd, in_features, hidden, batch,
                                                                              fraction, seed, feature_major, backend):
    """Same floats, not just close: the kernel's rectification and the backward's mask are ReLU's own tests."""
    unfused, fused = unfused_and_fused(in_features, hidden, round(fraction * in_features * hidden), seed, backend)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_features, generator=generator) - 0.3
    if feature_major:
        x = x.t().contiguous().t()
    upstream = torch.randn(batch, 5, generator=generator)
    for expected, actual in zip(run(unfused, x, upstream), run(fused, x, upstream), strict=True):
        assert torch.equal(actual, expected)
    with torch.no_grad():  # the no-graph path (target networks, predict)
        assert torch.equal(fused(x), unfused(x))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 300), seed=st.integers(0, 2**16), input_grad=st.booleans())
def test_a_masked_layer_before_a_compact_one_rectifies_in_place_with_the_unfused_floats(simd, batch, seed,
                                                                                       input_grad):
    """``auto`` in a sparse network: the dense first layer returns feature-major activations, rectified in place (the
    dense head runs compact)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    first, second, last = SparseLinear(80, 256), SparseLinear(256, 256), SparseLinear(256, 5)
    first.set_mask(random_mask((256, 80), 16384, generator))  # density 0.80, 80 inputs: not an input layer
    second.set_mask(random_mask((256, 256), 6554, generator))
    unfused = nn.Sequential(first, nn.ReLU(), second, nn.ReLU(), last)
    fused = copy.deepcopy(unfused)
    assert fuse_relus(fused) == 2
    for network in (unfused, fused):
        set_backend(network, "auto")
        assert [layer.resolved_backend for layer in network[::2]] == ["masked", "compact", "compact"]
    x = torch.randn(batch, 80, generator=generator) - 0.3
    upstream = torch.randn(batch, 5, generator=generator)
    for expected, actual in zip(run(unfused, x, upstream, input_grad), run(fused, x, upstream, input_grad),
                                 strict=True):
        assert (actual is None and expected is None) or torch.equal(actual, expected)
    with torch.no_grad():
        assert torch.equal(fused(x), unfused(x))
    tagged = []
    fused[0].register_forward_hook(lambda module, inputs, output: tagged.append(getattr(output, RECTIFIED, False)))
    fused(x)
    assert tagged == [True], "the masked layer rectified its own output"


def test_a_backward_hook_that_drops_the_tag_changes_no_value():
    unfused, fused = unfused_and_fused(12, 30, 120, 4, "compact")
    seen = []
    fused[0].register_full_backward_hook(lambda module, grad_input, grad_output: seen.append(grad_output[0]))
    x, upstream = torch.randn(16, 12) - 0.3, torch.randn(16, 5)
    for expected, actual in zip(run(unfused, x, upstream), run(fused, x, upstream), strict=True):
        assert torch.equal(actual, expected)
    assert len(seen) == 1


def test_only_a_plain_relu_right_after_a_sparse_layer_is_fused():
    network = nn.Sequential(SparseLinear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), SparseLinear(6, 6), nn.Tanh(),
                            SparseLinear(6, 6), nn.ReLU(inplace=True), SparseLinear(6, 6), nn.ReLU())
    assert fuse_relus(network) == 2
    assert [type(m) for m in network][1::2] == [RectifiedReLU, nn.ReLU, nn.Tanh, nn.ReLU, RectifiedReLU]
    assert fuse_relus(network) == 0, "fusing twice changes nothing"


def test_a_rectified_relu_rectifies_whatever_no_fused_layer_returned():
    x = torch.randn(8, 3)
    assert torch.equal(RectifiedReLU()(x), torch.relu(x))
    layer = SparseLinear(3, 4)
    layer.set_backend("masked")
    assert torch.equal(FusedReLUSequential(layer, RectifiedReLU())(x), torch.relu(layer(x)))
    assert (layer(x) < 0).any(), "called alone, the layer computes the plain product"
    assert torch.equal(RectifiedReLU()(layer(x)), torch.relu(layer(x)))


def test_sparse_policies_fuse_every_relu_after_a_sparse_layer_and_dormant_hooks_see_them():
    model = SAC(SparseSACPolicy, "Pendulum-v1", policy_kwargs=dict(density=0.1, net_arch=[256, 256]), seed=0,
                device="cpu")
    for network in (model.actor, model.critic, model.critic_target):
        activations = [hidden.activation for hidden in hidden_layers(network).values()]
        assert activations and all(type(a) is RectifiedReLU for a in activations)
        assert not any(type(m) is nn.ReLU for m in network.modules())
    compact = [m for m in model.policy.modules() if isinstance(m, SparseLinear) and m.layout == "compact"
               and not is_narrow_output_layer(m.in_features, m.out_features)]  # heads: no ReLU after them
    fused = [layer for sequence in model.policy.modules() if isinstance(sequence, nn.Sequential)
             for layer, after in zip(sequence, list(sequence)[1:]) if isinstance(after, RectifiedReLU)]
    assert compact and all(any(layer is f for f in fused) for layer in compact)
    assert all(type(s) is FusedReLUSequential for s in model.policy.modules() if isinstance(s, nn.Sequential)
               and any(isinstance(m, RectifiedReLU) for m in s))


def test_without_the_extension_a_fused_layer_still_rectifies(monkeypatch):
    unfused, fused = unfused_and_fused(30, 40, 300, 1, "compact")
    monkeypatch.setattr(kernels, "_EXTENSION", None)
    monkeypatch.setattr(kernels, "_warned", True)
    x, upstream = torch.randn(32, 30), torch.randn(32, 5)
    for expected, actual in zip(run(unfused, x, upstream), run(fused, x, upstream), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_a_fused_layer_called_alone_is_a_plain_linear_layer_and_fuses_only_in_its_sequence():
    unfused, fused = unfused_and_fused(10, 20, 100, 2, "compact")
    assert type(fused) is FusedReLUSequential and type(unfused) is nn.Sequential
    x = torch.randn(8, 10)
    alone = fused[0](x)
    assert torch.equal(alone, unfused[0](x)) and (alone < 0).any() and not getattr(alone, RECTIFIED, False)
    seen = []
    fused[1].register_forward_hook(lambda module, inputs, output: seen.append(getattr(inputs[0], RECTIFIED, False)))
    assert torch.equal(fused(x), unfused(x)) and seen == [True]
    assert not rectifies_now(fused[0])
