"""The compact layout: only active values stored, this package's kernels, and re-layout at topology updates."""

import copy
import itertools
import pickle
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import sparse_rl
from sparse_rl.backends import kernels
from sparse_rl.backends.compact import CompactStructure
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import random_mask
from sparse_rl.network_layout import set_backend

FIXTURES = Path(__file__).parent / "fixtures"
TOL = dict(rtol=1e-4, atol=1e-5)
SUM_TOL = dict(rtol=1e-4, atol=1e-4)
"""For sums over a batch of up to 300 rows, whose float32 rounding differs with the summation order."""
STEP_TOL = dict(rtol=1e-6, atol=1e-9)
"""For an optimizer step on tensors of different lengths: vectorised loops round their tails differently (FMA)."""


def mask_of_counts(in_features: int, counts: list[int], generator: torch.Generator) -> torch.Tensor:
    """A boolean ``(len(counts), in_features)`` mask whose row ``r`` holds ``counts[r]`` active weights (capped at
    the row's width) at random columns."""
    mask = torch.zeros(len(counts), in_features, dtype=torch.bool)
    for row, count in enumerate(counts):
        mask[row, torch.randperm(in_features, generator=generator)[:min(count, in_features)]] = True
    return mask


def backward_inputs(in_features: int, counts: list[int], batch: int, seed: int):
    """A compact layer's backward inputs: ``(generator, structure, values, x_t, dy_t, rectified_t)``, the structure's
    row ``r`` holding ``counts[r]`` weights, the rectified output with zeros, -0.0 and NaN among its entries; the
    generator goes on from where they were drawn."""
    generator = torch.Generator().manual_seed(seed)
    out_features = len(counts)
    structure = CompactStructure.from_mask(mask_of_counts(in_features, counts, generator))
    values = torch.randn(structure.nnz, generator=generator)
    x_t, dy_t = (torch.randn(n, batch, generator=generator) for n in (in_features, out_features))
    rectified_t = torch.randn(out_features, batch, generator=generator).relu()
    specials = torch.randint(0, 4, rectified_t.shape, generator=generator)
    rectified_t[specials == 1] = -0.0
    rectified_t[specials == 2] = float("nan")
    return generator, structure, values, x_t, dy_t, rectified_t


def layer_pair(in_features: int, out_features: int, count: int, seed: int, bias: bool = True):
    """The same layer on ``masked`` and on ``compact``."""
    torch.manual_seed(seed)
    masked = SparseLinear(in_features, out_features, bias=bias)
    masked.set_mask(random_mask((out_features, in_features), count, torch.Generator().manual_seed(seed)))
    masked.set_backend("masked")
    compact = copy.deepcopy(masked)
    compact.set_backend("compact")
    return masked, compact


def run(layer: SparseLinear, x: torch.Tensor, upstream: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    y.backward(upstream)
    return y.detach(), x.grad


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(in_features=st.integers(1, 90), out_features=st.integers(1, 90), batch=st.integers(1, 300),
       fraction=st.floats(0, 1), seed=st.integers(0, 2**16), feature_major=st.booleans(), bias=st.booleans(),
       dense_grad=st.booleans())
def test_compact_equals_masked(simd, in_features, out_features, batch, fraction, seed, feature_major, bias,
                               dense_grad):
    """Outputs, input gradients, value gradients and (on update steps) the dense gradient agree to float32
    tolerance, at every SIMD level, for every batch from 1 row up."""
    count = round(fraction * in_features * out_features)
    masked, compact = layer_pair(in_features, out_features, count, seed, bias)
    compact.dense_grad_needed = dense_grad
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_features, generator=generator)
    if feature_major:
        x = x.t().contiguous().t()
    upstream = torch.randn(batch, out_features, generator=generator)
    y_masked, dx_masked = run(masked, x, upstream)
    y_compact, dx_compact = run(compact, x, upstream)
    torch.testing.assert_close(y_compact, y_masked, **TOL)
    torch.testing.assert_close(dx_compact, dx_masked, **TOL)
    assert compact.values.grad.shape == (count,)
    torch.testing.assert_close(compact.values.grad, masked.weight.grad[masked.mask], **SUM_TOL)
    if bias:
        torch.testing.assert_close(compact.bias.grad, masked.bias.grad, **SUM_TOL)
    if dense_grad:
        torch.testing.assert_close(compact.score_grad(), masked.weight.grad, **SUM_TOL)
    else:
        assert compact.score_grad() is not None and (compact.score_grad()[~compact.mask] == 0).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(in_features=st.integers(1, 40), counts=st.lists(st.integers(0, 40), min_size=1, max_size=12),
       batch=st.one_of(st.integers(1, 40), st.integers(1, 1024)), seed=st.integers(0, 2**16))
def test_kernels_at_the_edges_of_their_blocks(simd, in_features, counts, batch, seed):
    """The three kernels against dense products, for rows holding 0, 1-7, 8+ and all of their weights (each row's
    count drawn, capped at the row's width: density 1.0 included) and batches that are no multiple of a vector; the
    weight gradient, whose last group of a row overruns into the next row's slots, writes nothing past the last."""
    if simd == "torch":
        pytest.skip("the compiled kernels are not built here")
    generator = torch.Generator().manual_seed(seed)
    out_features = len(counts)
    mask = mask_of_counts(in_features, counts, generator)
    structure = CompactStructure.from_mask(mask)
    weight = torch.randn(out_features, in_features, generator=generator) * mask
    values = weight.flatten()[structure.positions].contiguous()
    x_t, dy_t = (torch.randn(n, batch, generator=generator) for n in (in_features, out_features))
    bias = torch.randn(out_features, generator=generator)
    torch.testing.assert_close(kernels.layer_forward(values, structure, x_t, bias),
                               weight @ x_t + bias.unsqueeze(1), **SUM_TOL)
    torch.testing.assert_close(kernels.input_grad(values, structure.perm_t, structure.crow_t, structure.col_t, dy_t,
                                                  out_features), weight.t() @ dy_t, **SUM_TOL)
    guarded, guarded_bias = torch.full((structure.nnz + 16,), 7.0), torch.full((out_features + 16,), 7.0)
    kernels._EXTENSION.backward(structure.crow.data_ptr(), structure.col.data_ptr(), dy_t.data_ptr(), 0,
                                x_t.data_ptr(), guarded.data_ptr(), guarded_bias.data_ptr(), 0, 0, 0, 0, 0,
                                out_features, in_features, structure.nnz, batch, 1, 0, 0, 0, 0, 0)
    torch.testing.assert_close(guarded[:structure.nnz], (dy_t @ x_t.t()).flatten()[structure.positions],
                               rtol=1e-4, atol=1e-4 * max(1.0, batch ** 0.5))
    torch.testing.assert_close(guarded_bias[:out_features], dy_t.sum(1), rtol=1e-4, atol=1e-4 * max(1.0, batch ** 0.5))
    assert (guarded[structure.nnz:] == 7.0).all() and (guarded_bias[out_features:] == 7.0).all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(in_features=st.integers(1, 40), counts=st.lists(st.integers(0, 40), min_size=1, max_size=12),
       batch=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_the_input_gradient_is_the_same_with_the_values_gathered_first_or_in_the_loop(simd, in_features, counts,
                                                                                      batch, seed):
    """Narrow batches read ``Wᵀ``'s values through ``perm_t`` inside the loop, wide ones gather them first: the same
    products in the same order, so the same floats bit for bit, at every SIMD level and batch."""
    if simd == "torch":
        pytest.skip("the compiled kernels are not built here")
    generator = torch.Generator().manual_seed(seed)
    structure = CompactStructure.from_mask(mask_of_counts(in_features, counts, generator))
    values = torch.randn(structure.nnz, generator=generator)
    dy_t = torch.randn(len(counts), batch, generator=generator)
    results = []
    for widest in (0, 10**6):
        with kernels.setting("fused_gather_max_batch", widest):
            results.append(kernels.input_grad(values, structure.perm_t, structure.crow_t, structure.col_t, dy_t,
                                              len(counts)))
    assert torch.equal(*results)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(in_features=st.integers(1, 40), counts=st.lists(st.integers(0, 40), min_size=1, max_size=12),
       batch=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_a_layers_backward_in_one_call_is_the_three_kernels_on_relus_masked_gradient(simd, in_features, counts, batch,
                                                                                     seed):
    """``layer_backward`` (one call: the fused ReLU's mask held in a reused buffer, the values', bias' and input
    gradients) equals the separate kernels on ``threshold_backward``'s masked gradient, zeros, -0.0 and NaN outputs
    included, bit for bit for the values' and the input's (the bias' to float32 tolerance), for every subset of the
    three gradients; two layers of different sizes in turn share the buffer."""
    generator, structure, values, x_t, dy_t, rectified_t = backward_inputs(in_features, counts, batch, seed)
    out_features = len(counts)
    other = CompactStructure.from_mask(torch.ones(3, 2, dtype=torch.bool))  # a small layer in between
    kernels.layer_backward(torch.ones(6), other, torch.randn(3, 5), torch.randn(2, 5), torch.ones(3, 5),
                           (True, True, True))
    for rectified in (rectified_t, None):
        masked = dy_t if rectified is None else torch.ops.aten.threshold_backward(dy_t, rectified, 0)
        expected = (kernels.input_grad(values, structure.perm_t, structure.crow_t, structure.col_t, masked,
                                       out_features),
                    kernels.values_grad(structure.crow, structure.col, masked, x_t), masked.sum(1))
        for wants in itertools.product((False, True), repeat=3):
            grads = kernels.layer_backward(values, structure, dy_t, x_t, rectified, wants)
            for want, grad, reference in zip(wants, grads, expected):
                if not want:
                    assert grad is None
                elif reference is expected[2]:
                    torch.testing.assert_close(grad, reference, equal_nan=True, rtol=1e-4, atol=1e-4 * batch ** 0.5)
                else:
                    assert torch.equal(grad, reference), wants


def test_the_compact_layout_holds_no_dense_tensor():
    _, compact = layer_pair(512, 512, 5000, 0)
    assert [name for name, _ in compact.named_parameters()] == ["values", "bias"]
    assert not list(compact.buffers())
    state = compact.state_dict()
    assert list(state) == ["values", "bias", "positions"] and all(v.is_floating_point() for v in state.values())
    assert sum(v.numel() for v in state.values()) == 2 * 5000 + 512
    assert compact.nnz == 5000 and compact.layout == "compact"


def test_a_copied_or_unpickled_layer_computes_on_its_own_index_tensors():
    """The kernels take the index tensors' addresses, read once per structure: a deep copy or a pickled and loaded
    layer must read its own, or it would compute from (or crash on) the original's memory once that is freed."""
    masked, compact = layer_pair(40, 30, 300, seed=3)
    x, upstream = torch.randn(16, 40), torch.randn(16, 30)
    expected = run(compact, x, upstream)
    for copied in (copy.deepcopy(compact), pickle.loads(pickle.dumps(compact))):
        structure = copied.compact_structure()
        assert structure.pointers == tuple(tensor.data_ptr() for tensor in (
            structure.crow, structure.col, structure.perm_t, structure.crow_t, structure.col_t))
        assert not set(structure.pointers) & set(compact.compact_structure().pointers)
        for got, want in zip(run(copied, x, upstream), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_layouts_convert_both_ways_and_state_dicts_load_across_layouts():
    masked, compact = layer_pair(40, 30, 333, 1)
    assert torch.equal(compact.weight, masked.weight) and torch.equal(compact.mask, masked.mask)
    other = SparseLinear(40, 30)
    other.set_mask(random_mask((30, 40), 100))  # another count: loading takes the saved one
    other.set_backend("compact")
    other.load_state_dict(masked.state_dict())
    assert other.nnz == 333 and torch.equal(other.weight, masked.weight)
    back = SparseLinear(40, 30)
    back.set_backend("masked")
    back.load_state_dict(compact.state_dict())
    assert torch.equal(back.weight, masked.weight) and torch.equal(back.mask, masked.mask)
    compact.set_backend("masked")
    assert compact.layout == "masked" and torch.equal(compact.weight, masked.weight)


def test_a_perturbed_state_dict_is_repaired_to_a_valid_pattern_with_a_warning():
    _, compact = layer_pair(20, 10, 50, 2)
    state = {key: torch.rand_like(value) for key, value in compact.state_dict().items()}
    with pytest.warns(UserWarning, match="not a valid sparsity pattern"):
        compact.load_state_dict(state)
    assert compact.nnz == 50 and int(compact.mask.sum()) == 50
    compact(torch.randn(8, 20)).sum().backward()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), drop=st.floats(0.05, 0.9), extra=st.integers(-40, 40))
def test_relayout_keeps_survivors_and_their_moments_exactly(seed, drop, extra):
    """A re-layout moves every surviving value and Adam moment to its new place unchanged; grown and changed
    positions start at 0 with zeroed moments. The count may change (``extra`` more grown than dropped, as SRigL's
    ablation does), and the pending gradient follows the weights: the next optimizer step and the one after give
    what the masked layout gives."""
    masked, compact = layer_pair(30, 20, 150, seed)
    optimizers = {}

    def backward(layer):
        layer(torch.randn(16, 30, generator=torch.Generator().manual_seed(seed))).square().sum().backward()

    def step(layer, optimizer):
        layer.mask_grad()
        optimizer.step()
        layer.apply_mask()
        optimizer.zero_grad()

    for name, layer in (("masked", masked), ("compact", compact)):
        optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
        for _ in range(3):
            backward(layer)
            step(layer, optimizer)
        backward(layer)  # the update runs between this backward pass and its optimizer step
        optimizers[name] = optimizer
    torch.testing.assert_close(compact.weight, masked.weight, **TOL)
    generator = torch.Generator().manual_seed(seed + 1)
    old = masked.mask.clone()
    active = old.flatten().nonzero().squeeze(1)
    dropped = active[torch.randperm(active.numel(), generator=generator)[: round(drop * active.numel())]]
    inactive = (~old).flatten().nonzero().squeeze(1)
    grown = inactive[torch.randperm(inactive.numel(), generator=generator)[: max(dropped.numel() + extra, 0)]]
    new = old.flatten().clone()
    new[dropped], new[grown] = False, True
    new = new.view_as(old)
    changed = torch.zeros_like(new)
    changed.view(-1)[dropped], changed.view(-1)[grown] = True, True
    structure = compact.compact_structure()
    before = {key: structure.dense(slot) for key, slot in optimizers["compact"].state[compact.values].items()
              if torch.is_tensor(slot) and slot.dim() == 1}
    weight_before = compact.weight
    values = compact.values
    masked.relayout(new, changed, optimizers["masked"])
    compact.relayout(new, changed, optimizers["compact"])
    count = int(new.sum())
    assert compact.nnz == count and (compact.values is values) == (count == 150) and torch.equal(compact.mask, new)
    assert compact.values.grad.shape == (count,)
    survivors = old & new
    assert torch.equal(compact.weight[survivors], weight_before[survivors])
    assert (compact.weight[new & ~old] == 0).all()
    for key, dense_before in before.items():
        after = compact.compact_structure().dense(optimizers["compact"].state[compact.values][key])
        assert torch.equal(after[survivors], dense_before[survivors]) and (after[new & ~old] == 0).all()
        torch.testing.assert_close(after, optimizers["masked"].state[masked.weight][key], **TOL)
    torch.testing.assert_close(compact.weight, masked.weight, **TOL)
    for name, layer in (("masked", masked), ("compact", compact)):
        step(layer, optimizers[name])
        backward(layer)
        step(layer, optimizers[name])
    torch.testing.assert_close(compact.weight, masked.weight, **TOL)
    assert compact.nnz == count and (masked.weight[~new] == 0).all()


def test_layers_whose_density_changes_refuse_the_compact_layout():
    from sparse_rl.methods.halo import HaloLinear

    with pytest.raises(ValueError, match="backend 'compact' needs a method with a fixed count"):
        HaloLinear(8, 8).set_backend("compact")


def compact_policies(algo: str, **policy_kwargs):
    from stable_baselines3 import SAC, TD3

    from sparse_rl import SparseSACPolicy, SparseTD3Policy

    algo_class, policy_class = {"sac": (SAC, SparseSACPolicy), "td3": (TD3, SparseTD3Policy)}[algo]
    kwargs = dict(density=0.2, backend="compact", update_interval=10, update_end=None, net_arch=[64, 64])
    return algo_class, algo_class(policy_class, "Pendulum-v1", learning_starts=64, batch_size=32, seed=0,
                                  device="cpu", policy_kwargs={**kwargs, **policy_kwargs})


def sparse_layers_of(model):
    return {name: m for name, m in model.policy.named_modules() if isinstance(m, SparseLinear)}


@pytest.mark.parametrize("algo", ["sac", "td3"])
@pytest.mark.parametrize("method", ["rigl", "set", "dst-ee"])
def test_policies_keep_counts_targets_and_state_after_every_step_and_update(algo, method):
    """On the compact layout: exact counts after every optimizer step and update, targets laid out like their
    online layers, and optimizer state O(nnz)."""
    _, model = compact_policies(algo, method=method)
    layers = sparse_layers_of(model)
    compact = {name for name, layer in layers.items() if layer.layout == "compact"}
    assert {name.split(".")[0] for name in compact} >= {"actor", "critic", "critic_target"}
    counts = {name: layer.nnz for name, layer in layers.items()}
    checks = []

    def check(*_):
        checks.append(all(layer.nnz == counts[name] for name, layer in layers.items()))

    for network in (model.actor, model.critic):
        network.optimizer.register_step_post_hook(check)
    model.learn(300)
    assert checks and all(checks)
    assert all(int(c.num_updates) >= 2 for c in model.policy.controllers().values())
    for name, layer in layers.items():
        for online, target in (("critic", "critic_target"), ("actor", "actor_target")):
            if name.startswith(target + "."):
                source = layers[online + name[len(target):]]
                assert torch.equal(layer.compact_structure().positions, source.compact_structure().positions), name
    for network in (model.actor, model.critic):
        for layer in (m for m in network.modules() if isinstance(m, SparseLinear) and m.layout == "compact"):
            assert all(slot.shape == (layer.nnz,) for slot in network.optimizer.state[layer.values].values()
                       if torch.is_tensor(slot) and slot.dim() > 0)


@pytest.mark.parametrize("algo", ["sac", "td3"])
@pytest.mark.parametrize("method", ["rigl", "srigl"])
def test_an_update_on_compact_equals_the_masked_update(algo, method):
    """The same scores give the same new masks, weights, targets and Adam moments in both layouts, also after the
    optimizer step that follows the update (the pending gradient is re-laid with the weights). SRigL's ablation
    (a high γ_sal here) changes layers' counts."""
    extra = {"srigl_gamma": 0.3} if method == "srigl" else {}
    _, masked_model = compact_policies(algo, backend="masked", method=method, **extra)
    masked_model.learn(120)
    compact_policy = copy.deepcopy(masked_model.policy)
    compact_policy.set_backend("compact")
    policies = {"masked": masked_model.policy, "compact": compact_policy}
    counts_before = {name: layer.nnz for name, layer in sparse_layers_of(masked_model).items()}
    generator = torch.Generator().manual_seed(0)
    grads = {name: torch.randn(layer.out_features, layer.in_features, generator=generator)
             for name, layer in sparse_layers_of(masked_model).items()}
    for policy in policies.values():
        for name, layer in ((n, m) for n, m in policy.named_modules() if isinstance(m, SparseLinear)):
            if layer.layout == "masked":
                layer.weight.grad = grads[name].clone()
            else:
                layer.values.grad = grads[name].flatten()[layer.compact_structure().positions].clone()
                layer._dense_grad = grads[name].clone()
        for network, controller in (("actor", policy.actor_controller), ("critic", policy.critic_controller)):
            optimizer = getattr(policy, network).optimizer
            controller.update(0.3, optimizer)
            controller.mask_grads()  # then the optimizer step the update ran before
            optimizer.step()
            controller.after_optimizer_step()
    layers = {key: {n: m for n, m in policy.named_modules() if isinstance(m, SparseLinear)}
              for key, policy in policies.items()}
    if method == "srigl":
        assert any(layer.nnz != counts_before[name] for name, layer in layers["compact"].items()
                   if layer.layout == "compact")
    for name, masked in layers["masked"].items():
        compact = layers["compact"][name]
        assert torch.equal(compact.mask, masked.mask), name
        torch.testing.assert_close(compact.weight, masked.weight, **STEP_TOL)
    for network in ("actor", "critic"):
        masked_opt, compact_opt = (getattr(policies[k], network).optimizer for k in ("masked", "compact"))
        for name, masked in ((n, m) for n, m in layers["masked"].items() if n.startswith(network + ".")):
            compact = layers["compact"][name]
            if compact.layout != "compact":
                continue
            for key, slot in compact_opt.state[compact.values].items():
                if torch.is_tensor(slot) and slot.dim() == 1:
                    torch.testing.assert_close(compact.compact_structure().dense(slot),
                                               masked_opt.state[masked.weight][key], **STEP_TOL)


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_save_load_predict_round_trip_across_layouts(algo, tmp_path):
    algo_class, model = compact_policies(algo)
    model.learn(150)
    obs = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    actions = model.predict(obs, deterministic=True)[0]
    assert all(value.is_floating_point() for value in model.policy.state_dict().values())
    model.save(tmp_path / "model")
    loaded = algo_class.load(tmp_path / "model", device="cpu")
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    as_masked = algo_class.load(tmp_path / "model", device="cpu",
                                custom_objects=dict(policy_kwargs=dict(model.policy_kwargs, backend="masked")))
    assert {layer.layout for layer in sparse_layers_of(as_masked).values()} == {"masked"}
    np.testing.assert_allclose(as_masked.predict(obs, deterministic=True)[0], actions, rtol=1e-5, atol=1e-6)
    loaded.set_env(model.get_env())
    loaded.learn(100, reset_num_timesteps=False)


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_models_saved_by_the_masked_release_load_compact_and_predict_the_same(algo):
    """``tests/fixtures``: models written by sparse_rl 0.1.0 (dense weight + float mask per layer)."""
    from stable_baselines3 import SAC, TD3

    algo_class = {"sac": SAC, "td3": TD3}[algo]
    expected = np.load(FIXTURES / "predictions_v0_1_0.npz")
    path = FIXTURES / f"{algo}_pendulum_v0_1_0.zip"
    as_saved = algo_class.load(path, device="cpu")
    model = algo_class.load(path, device="cpu",
                            custom_objects=dict(policy_kwargs=dict(as_saved.policy_kwargs, backend="compact")))
    for loaded in (as_saved, model):
        np.testing.assert_allclose(loaded.predict(expected["obs"], deterministic=True)[0], expected[f"{algo}_actions"],
                                   rtol=1e-5, atol=1e-6)
    assert {layer.layout for layer in sparse_layers_of(model).values()} == {"compact"}
    for network in (model.actor, model.critic):
        for layer in (m for m in network.modules() if isinstance(m, SparseLinear) and m.layout == "compact"):
            assert network.optimizer.state[layer.values]["exp_avg"].shape == (layer.nnz,)
    import gymnasium as gym

    model.set_env(gym.make("Pendulum-v1"))
    model.learning_starts = 0
    model.learn(64)


def test_without_the_extension_compact_runs_on_torch_kernels_with_one_warning(monkeypatch):
    masked, compact = layer_pair(50, 40, 400, 3)
    monkeypatch.setattr(kernels, "_EXTENSION", None)
    monkeypatch.setattr(kernels, "_warned", False)
    x, upstream = torch.randn(32, 50), torch.randn(32, 40)
    compact.dense_grad_needed = False
    with pytest.warns(UserWarning, match="compiled kernels are not built"):
        y, dx = run(compact, x, upstream)
    y_masked, dx_masked = run(masked, x, upstream)
    torch.testing.assert_close(y, y_masked, **TOL)
    torch.testing.assert_close(dx, dx_masked, **TOL)
    torch.testing.assert_close(compact.values.grad, masked.weight.grad[masked.mask], **TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(compact, x, upstream)  # once per process
    from sparse_rl.backends.auto import auto_backend

    assert auto_backend(256, 256, 0.05, torch.device("cpu")) != "compact", "auto never picks the fallback"


@pytest.mark.skipif(not kernels.compiled(), reason="the compiled kernels are not built here")
def test_float64_runs_on_torch_kernels_with_one_warning_that_names_the_dtype(monkeypatch):
    """The kernels are float32; a float64 layer falls back, and the warning says why (not "not built")."""
    masked, compact = layer_pair(50, 40, 400, 3)
    masked, compact = masked.double(), compact.double()
    monkeypatch.setattr(kernels, "_warned", False)
    x, upstream = torch.randn(32, 50, dtype=torch.float64), torch.randn(32, 40, dtype=torch.float64)
    compact.dense_grad_needed = False
    with pytest.warns(UserWarning, match=r"take contiguous CPU float32 tensors, not torch\.float64 on cpu;") as caught:
        y, dx = run(compact, x, upstream)
    assert len(caught) == 1 and "not built" not in str(caught[0].message)
    y_masked, dx_masked = run(masked, x, upstream)
    torch.testing.assert_close(y, y_masked)
    torch.testing.assert_close(dx, dx_masked)
    torch.testing.assert_close(compact.values.grad, masked.weight.grad[masked.mask])


def test_a_process_without_the_extension_imports_and_trains():
    code = ("import torch, sparse_rl.backends.kernels as k; from sparse_rl.layers import SparseLinear; "
            "from sparse_rl.masks import random_mask;"
            "l = SparseLinear(300, 300); l.set_mask(random_mask((300, 300), 900)); assert not k.compiled();"
            "assert l.resolved_backend in ('masked', 'sparse'); l(torch.randn(8, 300)).sum().backward(); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"SPARSE_RL_NO_KERNELS": "1", "PATH": ""}, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.skipif(not kernels.parallel(), reason="the compiled kernels are not built with OpenMP here")
@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(0, 120), min_size=16, max_size=40), batch=st.integers(130, 300),
       threads=st.integers(2, 5), relu=st.booleans(), gather_first=st.booleans(), seed=st.integers(0, 2**16))
def test_the_kernels_compute_the_same_bits_on_any_number_of_threads(counts, batch, threads, relu, gather_first,
                                                                     seed):
    """Rows split between threads compute what one thread computes, bit for bit: the forward (rectified or not), the
    masked output gradient, the values', bias' and input gradients (W's values gathered first or read through
    ``perm``). Each thread's range ends where the next one's begins, so the weight gradient's padded last group of a
    range must not store into the next range, which another thread owns."""
    assume(sum(counts) >= 1024)  # work enough to be split (kernels.c, PARALLEL_MIN_WORK)
    generator = torch.Generator().manual_seed(seed)
    in_features = 120
    structure = CompactStructure.from_mask(mask_of_counts(in_features, counts, generator))
    values = torch.randn(structure.nnz, generator=generator)
    bias = torch.randn(len(counts), generator=generator)
    x_t, dy_t = (torch.randn(n, batch, generator=generator) for n in (in_features, len(counts)))

    head_structure = CompactStructure.from_mask(torch.rand(1, len(counts), generator=generator) < 0.7)
    head_values, head_bias = torch.randn(head_structure.nnz, generator=generator), torch.randn(1, generator=generator)
    head_dy = torch.randn(1, batch, generator=generator)

    def run(num_threads: int) -> list[torch.Tensor]:
        """Also with a one-output head fused in (forward and the output gradient made from the head's), which must
        give what the head's own kernels give."""
        before = torch.get_num_threads()
        torch.set_num_threads(num_threads)
        try:
            y_t = kernels.layer_forward(values, structure, x_t, bias, relu)
            grads = kernels.layer_backward(values, structure, dy_t, x_t, y_t if relu else None, (True, True, True))
            fused_y, head_out = kernels.layer_forward_into_head(values, structure, x_t, bias, relu, head_values,
                                                                head_structure, head_bias)
            assert torch.equal(fused_y, y_t)
            assert torch.equal(head_out, kernels.layer_forward(head_values, head_structure, y_t, head_bias))
            head_dx = kernels.input_grad(head_values, head_structure.perm_t, head_structure.crow_t,
                                         head_structure.col_t, head_dy, 1)
            from_head = kernels.layer_backward(values, structure, None, x_t, y_t if relu else None,
                                               (True, True, True), head=(head_values, head_structure, head_dy))
            for want, got in zip(kernels.layer_backward(values, structure, head_dx, x_t, y_t if relu else None,
                                                        (True, True, True)), from_head):
                assert torch.equal(got, want)
        finally:
            torch.set_num_threads(before)
        return [y_t, *grads, head_out, *from_head]  # type: ignore[list-item]

    with kernels.setting("fused_gather_max_batch", 0 if gather_first else batch):
        one, many = run(1), run(threads)
    for single, split in zip(one, many):
        assert torch.equal(single, split)


def test_an_extension_built_from_another_checkout_is_not_used(monkeypatch):
    """An extension whose ``API_VERSION`` is not the package's (a build left from before an update) falls back to
    torch's kernels with one warning naming the fix, instead of failing inside a training step."""
    stale = types.ModuleType("sparse_rl._kernels")  # an older build: no API_VERSION, no backward entry point
    monkeypatch.setitem(sys.modules, "sparse_rl._kernels", stale)
    monkeypatch.setattr(sparse_rl, "_kernels", stale, raising=False)
    monkeypatch.setattr(kernels, "_warned", False)
    with pytest.warns(UserWarning, match=r"built from another version .*pip install -e \."):
        assert kernels._load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernels._warn_fallback()  # the fallback's own warning does not repeat it
    stale.API_VERSION = kernels.API_VERSION
    assert kernels._load() is stale


def test_simd_levels_are_named_and_a_bad_one_is_a_clear_error():
    if not kernels.compiled():
        pytest.skip("the compiled kernels are not built here")
    assert kernels.simd_levels()[-1] == "generic" and kernels.simd_level() in kernels.simd_levels()
    with pytest.raises(ValueError, match="allowed: .*generic"):
        kernels.set_simd_level("neon9000")


def test_set_backend_on_a_module_moves_optimizer_state():
    masked, _ = layer_pair(30, 30, 200, 4)
    net = torch.nn.Sequential(masked)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(8, 30)).sum().backward()
    optimizer.step()
    exp_avg = optimizer.state[masked.weight]["exp_avg"].clone()
    set_backend(net, "compact", (optimizer,))
    assert optimizer.param_groups[0]["params"][0] is masked.values
    assert torch.equal(optimizer.state[masked.values]["exp_avg"], exp_avg[masked.mask])
    net(torch.randn(8, 30)).sum().backward()
    optimizer.step()


def test_the_kernels_are_built_wherever_a_c_compiler_is():
    """The README's install builds the extension; only a machine without a compiler falls back."""
    import shutil

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: the package runs on torch's kernels")
    assert kernels.compiled(), "pip install -e . should have built sparse_rl._kernels (see setup.py)"


def test_auto_lays_out_compactly_by_shape_and_density_alone():
    """The constant rule: no calibration and no load can move a layer across it."""
    from sparse_rl.backends.auto import COMPACT_MAX_DENSITY, COMPACT_MIN_WEIGHTS, auto_backend
    from sparse_rl.backends.auto import COMPACT_NARROW_MAX_DENSITY as NARROW_DENSITY
    from sparse_rl.backends.auto import NARROW_OUTPUT_MAX_OUT as HEAD_OUT
    from sparse_rl.backends.auto import NARROW_OUTPUT_MIN_IN as HEAD_IN
    from sparse_rl.backends.masked import INPUT_LAYER_MAX_IN as NARROW_IN

    if not kernels.compiled():
        pytest.skip("without the compiled kernels auto follows the MKL table")
    cpu = torch.device("cpu")
    assert auto_backend(256, 256, COMPACT_MAX_DENSITY, cpu) == "compact"
    assert auto_backend(256, 256, COMPACT_MAX_DENSITY + 0.01, cpu) == "masked"
    assert auto_backend(COMPACT_MIN_WEIGHTS // 16, 16, 0.1, cpu) == "compact"
    assert auto_backend(COMPACT_MIN_WEIGHTS // 16 - 1, 16, 0.1, cpu) == "masked", "small layers stay dense"
    assert auto_backend(256, 1, 1.0, cpu, in_sparse_network=True) == "compact", "a critic's head, dense and small"
    assert auto_backend(256, 1, 1.0, cpu) == "masked", "the head of a network without sparse layers stays dense"
    assert auto_backend(HEAD_IN, HEAD_OUT, 1.0, cpu, in_sparse_network=True) == "compact", "an actor's head"
    assert auto_backend(HEAD_IN, HEAD_OUT + 1, 1.0, cpu, in_sparse_network=True) == "masked"
    assert auto_backend(HEAD_IN - 1, HEAD_OUT, 1.0, cpu, in_sparse_network=True) == "masked", "a tiny network's"
    assert auto_backend(256, 1, 1.0, cpu, compact_capable=False, in_sparse_network=True) in ("sparse", "masked")
    assert COMPACT_MAX_DENSITY < NARROW_DENSITY
    assert auto_backend(17, 256, NARROW_DENSITY, cpu) == "compact", "an input layer at ERK's density"
    assert auto_backend(17, 256, NARROW_DENSITY + 0.01, cpu) == "masked"
    assert auto_backend(NARROW_IN, 256, NARROW_DENSITY, cpu) == "compact"
    assert auto_backend(NARROW_IN + 1, 256, COMPACT_MAX_DENSITY + 0.01, cpu) == "masked"
    assert auto_backend(64, 64, COMPACT_MAX_DENSITY + 0.01, cpu) == "masked", "a narrow hidden layer: no fan-out"
    assert auto_backend(64, 255, NARROW_DENSITY, cpu) == "masked"
    assert auto_backend(64, 256, NARROW_DENSITY, cpu) == "compact"
    assert auto_backend(17, 200, COMPACT_MAX_DENSITY, cpu) == "masked", "narrow and small: 3,400 weights"
    assert auto_backend(23, 1024, 1.0, cpu, feeds_compact=True) == "compact", "a dense input layer before a compact one"
    assert auto_backend(23, 1024, 1.0, cpu) == "masked", "one whose ReLU feeds something else (CrossQ's BatchRenorm)"
    assert auto_backend(17, 200, 1.0, cpu, feeds_compact=True) == "masked", "still not below the smallest size"
    assert auto_backend(256, 256, 0.5, cpu, feeds_compact=True) == "masked", "a hidden layer keeps its limit"
    assert auto_backend(1024, 1024, 0.05, torch.device("meta")) == "masked", "non-CPU devices stay masked"
    assert auto_backend(1024, 1024, 0.05, cpu, compact_capable=False) in ("sparse", "masked")


@pytest.mark.parametrize("density", [0.1, 1.0])
def test_auto_runs_the_heads_of_a_sparse_network_compact_and_a_dense_network_dense(density):
    """SAC's heads (the actor's mean and log-std, the critics' and targets' Q) are laid out compactly, dense as
    they are, where the rest of their network runs sparse kernels; at density 1 every layer stays masked. Built
    directly in its layout or switched back from masked, the policy lays each layer out the same way, its target
    like its critic (Polyak pairs their parameters), and it predicts the same actions. Switched back from compact,
    a dense network's heads go masked again: a head's layout follows the other layers, not its own."""
    from stable_baselines3 import SAC

    from sparse_rl import SparseSACPolicy
    from sparse_rl.backends import REGISTRY
    from sparse_rl.backends.auto import is_narrow_output_layer

    if not kernels.compiled():
        pytest.skip("without the compiled kernels auto follows the MKL table")
    model = SAC(SparseSACPolicy, "Pendulum-v1", seed=0, device="cpu", policy_kwargs=dict(
        net_arch=[256, 256], density=density))
    layers = {name: layer for name, layer in model.policy.named_modules() if isinstance(layer, SparseLinear)}
    heads = {name for name, layer in layers.items() if is_narrow_output_layer(layer.in_features, layer.out_features)}
    assert heads == {"actor.mu", "actor.log_std", *(f"{net}.qf{i}.4" for net in ("critic", "critic_target")
                                                     for i in (0, 1))}
    built = {name: layer.layout for name, layer in layers.items()}
    assert {built[name] for name in heads} == {"compact" if density < 1 else "masked"}
    assert all(built[name] == "masked" for name in layers) or density < 1
    obs = np.zeros((1, 3), dtype=np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    for other in ("masked", "compact"):  # a head's layout follows the other layers, not its own before
        model.policy.set_backend(other)
        assert {layer.layout for layer in model.policy.modules() if isinstance(layer, SparseLinear)} == {
            REGISTRY[other].layout}
        model.policy.set_backend("auto")
        relaid = {name: layer.layout for name, layer in model.policy.named_modules()
                  if isinstance(layer, SparseLinear)}
        assert relaid == built, f"auto after {other}"
    assert [p.shape for p in model.policy.critic.parameters()] == [
        p.shape for p in model.policy.critic_target.parameters()]
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], actions, rtol=1e-5, atol=1e-6)


def test_sac_training_steps_with_topology_updates_on_compact_equal_masked():
    """A whole ``train()`` (losses, Adam, Polyak, entropy, RigL updates every 3 steps) on the same replay buffer and
    random streams (torch's for the policy, numpy's for the buffer's batches) gives both layouts the same masks and,
    to float32 rounding, the same weights."""
    from stable_baselines3 import SAC

    from sparse_rl import SparseSACPolicy

    models = {backend: SAC(SparseSACPolicy, "Pendulum-v1", seed=0, device="cpu", learning_starts=200, batch_size=64,
                           policy_kwargs=dict(density=0.1, backend=backend, update_interval=3,
                                              update_end=None))
              for backend in ("compact", "masked")}
    for model in models.values():
        model.learn(200)  # random actions only: the same buffer
    initial = {name: module.mask.clone() for name, module in models["masked"].policy.named_modules()
               if isinstance(module, SparseLinear)}
    for step in range(9):
        for model in models.values():
            torch.manual_seed(step)
            np.random.seed(step)
            model.train(gradient_steps=1, batch_size=64)
    layers = {backend: {name: module for name, module in model.policy.named_modules()
                        if isinstance(module, SparseLinear)} for backend, model in models.items()}
    assert {layer.layout for layer in layers["compact"].values()} == {"compact"}
    assert models["compact"].policy.actor.optimizer.state, "Adam has stepped"
    assert any(not torch.equal(initial[name], layer.mask) for name, layer in layers["masked"].items()), "no update"
    for name, compact in layers["compact"].items():
        masked = layers["masked"][name]
        assert torch.equal(compact.mask, masked.mask), name
        torch.testing.assert_close(compact.score_weight().detach(), masked.score_weight().detach(), **TOL)


def test_a_compact_layer_with_frozen_values_still_gives_its_trainable_bias_a_gradient():
    """Even when nothing before it wants a gradient (the input is data): only the bias records the graph."""
    layer = SparseLinear(8, 5)
    layer.set_mask(random_mask((5, 8), 20, torch.Generator().manual_seed(0)))
    layer.set_backend("compact")
    layer.dense_grad_needed = False
    layer.values.requires_grad_(False)
    upstream = torch.randn(6, 5)
    layer(torch.randn(6, 8)).backward(upstream)
    torch.testing.assert_close(layer.bias.grad, upstream.sum(0))
    assert layer.values.grad is None


def test_dense_input_layers_go_compact_only_where_they_feed_a_compact_layer_straight():
    """The wide networks' dense input layers run as one node with the compact layer they feed; CrossQ's critic
    input layer, whose ReLU feeds a BatchRenorm, and every layer of a dense network stay masked; setting ``auto``
    again changes no layout."""
    from sb3_contrib import CrossQ
    from stable_baselines3 import SAC

    from sparse_rl import SparseCrossQPolicy, SparseSACPolicy

    if not kernels.compiled():
        pytest.skip("without the compiled kernels auto follows the MKL table")

    def layouts(model) -> dict[str, str]:
        return {name: layer.layout for name, layer in model.policy.named_modules() if isinstance(layer, SparseLinear)}

    wide = SAC(SparseSACPolicy, "HalfCheetah-v4", seed=0, device="cpu", buffer_size=1, policy_kwargs=dict(
        net_arch=[256, 256], width_multiplier=4, iso_params=True))  # 17 and 23 inputs: 4,096 weights and more
    inputs = [layer for layer in wide.policy.modules() if isinstance(layer, SparseLinear) and layer.in_features < 64]
    assert inputs and all(layer.density == 1.0 and layer.layout == "compact" for layer in inputs)
    before = layouts(wide)
    set_backend(wide.policy, "auto")
    assert layouts(wide) == before
    dense = SAC(SparseSACPolicy, "Pendulum-v1", seed=0, device="cpu", policy_kwargs=dict(density=1.0))
    assert set(layouts(dense).values()) == {"masked"}
    crossq = CrossQ(SparseCrossQPolicy, "HalfCheetah-v4", seed=0, device="cpu", buffer_size=1, policy_kwargs=dict(
        density=0.1, net_arch=dict(pi=[256, 256], qf=[1024, 1024])))
    critic_inputs = [layer for layer in crossq.critic.modules() if isinstance(layer, SparseLinear)
                     and layer.in_features < 64]
    assert critic_inputs and all(layer.density == 1.0 and layer.layout == "masked" for layer in critic_inputs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data_width=st.integers(1, 30), action_width=st.integers(1, 8), out_features=st.integers(1, 60),
       batch=st.integers(1, 300), fraction=st.floats(0, 1), seed=st.integers(0, 2**16), chained=st.booleans(),
       dense_grad=st.booleans())
def test_a_first_layer_told_its_data_features_need_no_gradient_computes_the_actions_gradient_alone(
        simd, data_width, action_width, out_features, batch, fraction, seed, chained, dense_grad):
    """The critic's first layer in the actor's loss: its input is ``cat([features, actions])`` and only the actions
    want a gradient. Theirs is what the whole input gradient gives, bit for bit; the features' rows are skipped
    (zero), alone or as the first layer of a run, on the kernels' path and on the dense-gradient step's."""
    from sparse_rl.backends.compact import INPUT_GRAD_FROM
    from sparse_rl.relu_fusion import fuse_relus

    in_features = data_width + action_width
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    first = SparseLinear(in_features, out_features)
    first.set_mask(random_mask((out_features, in_features), round(fraction * in_features * out_features), generator))
    first.set_backend("compact")
    first.dense_grad_needed = dense_grad
    network = torch.nn.Sequential(first, torch.nn.ReLU(), SparseLinear(out_features, 3)) if chained else first
    if chained:
        network[2].set_backend("compact")
        fuse_relus(network)
    data = torch.randn(batch, data_width, generator=generator)
    actions = torch.randn(batch, action_width, generator=generator)
    upstream = torch.randn(batch, 3 if chained else out_features, generator=generator)

    def actions_grad(told: bool, data_needs_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        first.__dict__[INPUT_GRAD_FROM] = data_width if told else 0
        x = torch.cat([data.clone().requires_grad_(data_needs_grad), actions.clone().requires_grad_(True)], dim=1)
        x.retain_grad()
        network(x).backward(upstream)
        first.__dict__.pop(INPUT_GRAD_FROM)
        return x.grad[:, data_width:], x.grad[:, :data_width]

    whole, data_rows = actions_grad(told=False)
    skipped, zero_rows = actions_grad(told=True)
    assert torch.equal(skipped, whole)
    assert not zero_rows.any(), "the data's rows were computed"
    _, computed = actions_grad(told=True, data_needs_grad=True)  # the flag is checked against the graph
    assert torch.equal(computed, data_rows)


def test_the_input_gradient_of_the_first_features_is_skipped_only_behind_a_concatenation_that_drops_it():
    from sparse_rl.backends.compact import INPUT_GRAD_FROM, input_grad_from

    layer = SparseLinear(5, 4)
    layer.set_backend("compact")
    data, actions = torch.randn(2, 3), torch.randn(2, 2, requires_grad=True)
    assert input_grad_from(layer, torch.cat([data, actions], dim=1)) == 0, "not told"
    layer.__dict__[INPUT_GRAD_FROM] = 3
    assert input_grad_from(layer, torch.cat([data, actions], dim=1)) == 3
    assert input_grad_from(layer, torch.cat([data.requires_grad_(), actions], dim=1)) == 0, "the data wants one"
    assert input_grad_from(layer, torch.randn(2, 5, requires_grad=True)) == 0, "not a concatenation"
    assert input_grad_from(layer, torch.cat([actions, actions.detach()], dim=1)) == 0, "an earlier part wants one"
    assert input_grad_from(layer, torch.cat([data.detach(), actions], dim=1).relu()) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(in_features=st.integers(1, 40), counts=st.lists(st.integers(0, 40), min_size=1, max_size=12),
       batch=st.integers(1, 300), input_from=st.integers(0, 3), head=st.booleans(), threads=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_the_input_and_weight_gradients_in_one_pass_are_the_two_loops_bits(simd, in_features, counts, batch,
                                                                          input_from, head, threads, seed):
    """Where both are wanted for every weight, the input and the weight gradient run in one pass over ``Wᵀ``
    (``grads_t`` in ``kernels.c``): the same floats bit for bit as the weight gradient's loop over ``W`` and the input
    gradient's over ``Wᵀ``, at every batch (its last columns in narrower vectors and scalars), with or without the
    fused ReLU's mask (zeros, -0.0 and NaN), a one-output head's gradient, an input gradient from a later feature on
    (which keeps the two loops) and threads."""
    if simd == "torch":
        pytest.skip("the compiled kernels are not built here")
    assume(input_from < in_features)
    generator, structure, values, x_t, dy_t, rectified_t = backward_inputs(in_features, counts, batch, seed)
    out_features = len(counts)
    head_structure = CompactStructure.from_mask(torch.rand(1, out_features, generator=generator) < 0.7)
    fused_head = (torch.randn(head_structure.nnz, generator=generator), head_structure,
                  torch.randn(1, batch, generator=generator)) if head else None
    results = []
    before_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for one_pass in (True, False):
            with kernels.setting("one_pass_grads", one_pass):
                results.append([grad for rectified in (rectified_t, None) for wants in ((True, True, True),
                                                                                       (True, True, False))
                                for grad in kernels.layer_backward(values, structure, None if head else dy_t, x_t,
                                                                   rectified, wants, input_from, head=fused_head)])
    finally:
        torch.set_num_threads(before_threads)
    for one, two in zip(*results):
        assert (one is None and two is None) or torch.equal(one, two)


@pytest.mark.skipif(not kernels.compiled(), reason="the compiled kernels are not built here")
@pytest.mark.parametrize("algo_name", ["sac", "td3"])
def test_same_seed_agents_train_to_the_same_floats_with_the_gradients_in_one_pass_or_two(algo_name):
    """Through SB3's own ``train()`` (RigL's topology updates and their dense-gradient steps included, a batch of
    40: two whole AVX-512 vectors and a tail), the one pass over ``Wᵀ`` changes no float of the trained policy."""
    from stable_baselines3 import SAC, TD3

    from sparse_rl.sb3 import SparseSACPolicy, SparseTD3Policy

    algo, policy = {"sac": (SAC, SparseSACPolicy), "td3": (TD3, SparseTD3Policy)}[algo_name]
    kwargs = dict(learning_starts=64, batch_size=40, seed=3, device="cpu", policy_kwargs=dict(
        density=0.2, net_arch=[64, 64], backend="compact", update_interval=25))
    trained = []
    for one_pass in (True, False):
        with kernels.setting("one_pass_grads", one_pass):
            model = algo(policy, "Pendulum-v1", **kwargs)  # built right before it learns: both seed torch's RNG
            model.learn(160)
            trained.append(model.policy.state_dict())
    for (name, want), got in zip(trained[1].items(), trained[0].values(), strict=True):
        assert torch.equal(got, want), name
