"""FusedBatchRenorm1d computes sb3-contrib's BatchRenorm1d: outputs, gradients, running statistics, state dict."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sb3_contrib import CrossQ
from sb3_contrib.common.torch_layers import BatchRenorm, BatchRenorm1d

from sparse_rl.backends import kernels
from sparse_rl.sb3 import SparseCrossQPolicy
from sparse_rl.sb3.batch_renorm import FusedBatchRenorm1d, fuse_batch_renorm


def _pair(features: int, post_warmup: bool, affine: bool, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    generator = torch.Generator().manual_seed(seed)
    reference = torch.nn.Sequential(BatchRenorm1d(features, affine=affine, warmup_steps=3)).double()
    layer = reference[0]
    with torch.no_grad():
        layer.scale.copy_(torch.rand(features, generator=generator, dtype=torch.float64) * 2 - 0.5)
        layer.bias.copy_(torch.randn(features, generator=generator, dtype=torch.float64))
        layer.ra_mean.copy_(torch.randn(features, generator=generator, dtype=torch.float64) * 2)
        layer.ra_var.copy_(torch.rand(features, generator=generator, dtype=torch.float64) * 4 + 0.01)
        layer.steps += 10 if post_warmup else 0
    fused = copy.deepcopy(reference)
    fuse_batch_renorm(fused)
    assert isinstance(fused[0], FusedBatchRenorm1d)
    return reference, fused


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(2, 40), features=st.integers(1, 12), post_warmup=st.booleans(), affine=st.booleans(),
       training=st.booleans(), constant=st.lists(st.integers(0, 11), max_size=3), spread=st.floats(0.01, 20.0),
       seed=st.integers(0, 2**16))
def test_fused_batch_renorm_equals_sb3_contribs(batch, features, post_warmup, affine, training, constant, spread,
                                                  seed):
    reference, fused = _pair(features, post_warmup, affine, seed)
    reference.train(training)
    fused.train(training)
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, features, generator=generator, dtype=torch.float64) * spread + 0.3
    for column in constant:
        if column < features:
            x[:, column] = 0.1 * column + 0.7  # a unit whose incoming weights are all masked: a constant output
    upstream = torch.randn(batch, features, generator=generator, dtype=torch.float64)
    results = []
    for network in (reference, fused):
        inputs = x.clone().requires_grad_()
        output = network(inputs)
        (output * upstream).sum().backward()
        layer = network[0]
        grads = [p.grad.clone() for p in (layer.scale, layer.bias)] if affine else []
        results.append((output.detach(), inputs.grad.clone(), grads,
                        [layer.ra_mean.clone(), layer.ra_var.clone(), layer.steps.clone()]))
    (out_ref, dx_ref, grads_ref, stats_ref), (out, dx, grads, stats) = results
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-9)
    varying = torch.tensor([column not in constant for column in range(features)])
    if post_warmup and training:
        # sb3-contrib's gradient for a constant feature is ∞ · 0, or garbage where torch's variance rounds to a
        # tiny number instead of 0; the fused layer's is the exact 0.
        assert bool((dx[:, ~varying] == 0).all())
        dx, dx_ref = dx[:, varying], dx_ref[:, varying]
    largest = float(dx_ref.abs().amax()) if dx_ref.numel() else 1.0
    torch.testing.assert_close(dx, dx_ref, rtol=1e-7, atol=1e-7 * max(1.0, largest))
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-9)
    for stat, stat_ref in zip(stats, stats_ref, strict=True):
        torch.testing.assert_close(stat, stat_ref, rtol=0, atol=1e-12)


def _float32_pass(layer: torch.nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> list[torch.Tensor]:
    inputs = x.clone().requires_grad_()  # clone keeps the layout
    output = layer(inputs)
    output.backward(upstream)
    return [output.detach(), inputs.grad, layer.scale.grad.clone(), layer.bias.grad.clone(), layer.ra_mean.clone(),
            layer.ra_var.clone()]


@pytest.mark.skipif(not kernels.compiled(), reason="the compiled kernels are not built")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(2, 300), features=st.integers(1, 70), post_warmup=st.booleans(),
       constant=st.lists(st.integers(0, 69), max_size=3), feature_major=st.booleans(),
       grad_feature_major=st.booleans(), seed=st.integers(0, 2**16))
def test_the_compiled_statistics_and_gradients_equal_torchs(simd, monkeypatch, batch, features, post_warmup, constant,
                                                           feature_major, grad_feature_major, seed):
    """At every SIMD level, for batch and feature counts across the vector widths, input row-major or feature-major
    (as a compact layer hands it on) and its gradient in either layout, the layer on the compiled kernels equals the
    layer on torch ops (float32)."""
    generator = torch.Generator().manual_seed(seed)
    layers = [FusedBatchRenorm1d(features, warmup_steps=3) for _ in range(2)]
    with torch.no_grad():
        layers[0].scale.uniform_(0.5, 1.5, generator=generator)
        layers[0].bias.normal_(generator=generator)
        layers[0].ra_var.uniform_(0.5, 2.0, generator=generator)
        layers[0].steps += 10 if post_warmup else 0
    layers[1].load_state_dict(layers[0].state_dict())
    x = torch.randn(batch, features, generator=generator).relu_() * 3 + 0.5
    for column in constant:
        if column < features:
            x[:, column] = 0.7
    upstream = torch.randn(batch, features, generator=generator)
    if feature_major:
        x = x.t().contiguous().t()
    if grad_feature_major:
        upstream = upstream.t().contiguous().t()
    assert kernels.renorm_runs_on(x)
    compiled = _float32_pass(layers[0], x, upstream)
    assert compiled[1].stride() == x.stride(), "the input gradient is stored as the input"
    with monkeypatch.context() as patch:  # the torch-op path
        patch.setattr(kernels, "renorm_runs_on", lambda _: False)
        plain = _float32_pass(layers[1], x, upstream)
    for got, expected in zip(compiled, plain, strict=True):
        torch.testing.assert_close(got, expected, rtol=2e-5, atol=2e-5 * max(1.0, float(expected.abs().amax())))
    if post_warmup:
        assert bool((compiled[1][:, [c for c in constant if c < features]] == 0).all())


def test_a_constant_feature_gets_a_zero_input_gradient_after_warmup_only():
    reference, fused = _pair(4, post_warmup=True, affine=True, seed=0)
    x = torch.randn(64, 4, dtype=torch.float64)
    x[:, 2] = 0.7  # a float sum of 64 copies that does not round to 64 × 0.7: centring must not rely on it
    inputs = x.requires_grad_()
    fused(inputs).backward(torch.randn(64, 4, dtype=torch.float64))
    assert torch.isfinite(inputs.grad).all()
    assert bool((inputs.grad[:, 2] == 0).all()) and bool((inputs.grad[:, [0, 1, 3]] != 0).all())


def test_a_3d_input_takes_sb3_contribs_computation():
    """sb3-contrib's layer accepts a (batch, features, length) input by its check, then fails on it in training
    (its running statistics cannot take the per-position ones); the fused layer does the same, not something else."""
    reference, fused = _pair(5, post_warmup=False, affine=True, seed=1)
    x = torch.randn(8, 5, 5, dtype=torch.float64)
    for network in (reference, fused):
        with pytest.raises(RuntimeError, match="broadcast"):
            network(x)
    reference.eval()
    fused.eval()
    torch.testing.assert_close(fused(x), reference(x), rtol=0, atol=0)


def test_fusing_keeps_the_tensors_settings_and_state_dict():
    model = CrossQ("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[16]), device="cpu")
    before = dict(model.policy.state_dict(keep_vars=True))
    originals = {name: m for name, m in model.policy.named_modules() if isinstance(m, BatchRenorm)}
    fuse_batch_renorm(model.policy)
    after = dict(model.policy.state_dict(keep_vars=True))
    assert after.keys() == before.keys() and all(after[key] is before[key] for key in before)
    for name, module in model.policy.named_modules():
        if name in originals:
            assert type(module) is FusedBatchRenorm1d
            for setting in ("eps", "momentum", "affine", "warmup_steps", "rmax", "dmax", "training"):
                assert getattr(module, setting) == getattr(originals[name], setting)


@pytest.mark.parametrize("density", [1.0, 0.3])
def test_the_sparse_crossq_policy_runs_every_batch_renorm_fused_and_matches_sb3_contribs_step(density):
    """CrossQ's gradient steps (critic and actor, joint batch) on the fused layers equal the steps on sb3-contrib's
    own layers, to float32 rounding. (With SGD: Adam's first steps move a parameter by ±lr whatever the size of its
    gradient, and the gradient of a bias right before a BatchRenorm is 0 up to rounding.)"""
    def build():
        return CrossQ(SparseCrossQPolicy, "Pendulum-v1", learning_starts=0, batch_size=32, policy_delay=1, seed=0,
                      device="cpu", policy_kwargs=dict(net_arch=[32, 32], density=density, backend="masked",
                                         optimizer_class=torch.optim.SGD, optimizer_kwargs={}))
    fused_model, plain_model = build(), build()
    norms = [m for m in fused_model.policy.modules() if isinstance(m, BatchRenorm)]
    assert norms and all(type(m) is FusedBatchRenorm1d for m in norms)
    for parent in plain_model.policy.modules():  # back to sb3-contrib's own layers, same tensors
        for name, child in list(parent.named_children()):
            if isinstance(child, FusedBatchRenorm1d):
                plain = BatchRenorm1d(child.num_features, eps=child.eps, momentum=child.momentum,
                                      warmup_steps=child.warmup_steps)
                plain.scale, plain.bias = child.scale, child.bias  # the optimizer's parameters
                plain.ra_mean, plain.ra_var, plain.steps = child.ra_mean, child.ra_var, child.steps
                setattr(parent, name, plain)
    for model in (fused_model, plain_model):
        model.set_random_seed(0)  # the same sampling noise for both
        model.learn(16)
    fused_state, plain_state = fused_model.policy.state_dict(), plain_model.policy.state_dict()
    assert fused_state.keys() == plain_state.keys()
    for key in fused_state:
        torch.testing.assert_close(fused_state[key], plain_state[key], rtol=1e-4, atol=1e-5, msg=key)
