"""The ``sparse`` execution backend computes what ``masked`` computes, with the active weights only."""

import copy
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_rl.backends.auto import AUTO_RULE, auto_backend
from sparse_rl.backends.csr import CsrStructure
from sparse_rl.backends.masked import SMALL_BATCH, is_feature_major
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import random_mask
from sparse_rl.methods import METHODS
from sparse_rl.network_layout import set_backend
from sparse_rl.relu_fusion import fuse_relus

TOL = dict(rtol=1e-4, atol=1e-5)


def layer_pair(in_features: int, out_features: int, count: int, seed: int, bias: bool = True,
               dtype: torch.dtype = torch.float32) -> tuple[SparseLinear, SparseLinear]:
    """Two layers with the same weights and mask, on ``masked`` and on ``sparse``."""
    torch.manual_seed(seed)
    masked = SparseLinear(in_features, out_features, bias=bias, dtype=dtype)
    masked.set_mask(random_mask((out_features, in_features), count, torch.Generator().manual_seed(seed)))
    masked.set_backend("masked")
    sparse = copy.deepcopy(masked)
    sparse.set_backend("sparse")
    return masked, sparse


def run(layer: SparseLinear, x: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and input gradient of ``layer`` on ``x`` for the upstream gradient ``upstream``."""
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    y.backward(upstream)
    return y.detach(), x.grad


shapes = dict(in_features=st.integers(1, 70), out_features=st.integers(1, 70), batch=st.integers(1, 40),
              fraction=st.floats(0, 1), seed=st.integers(0, 2**16), feature_major=st.booleans(),
              bias=st.booleans())


@settings(max_examples=60, deadline=None)
@given(**shapes)
def test_sparse_equals_masked_at_active_positions(in_features, out_features, batch, fraction, seed, feature_major,
                                                  bias):
    count = round(fraction * in_features * out_features)
    masked, sparse = layer_pair(in_features, out_features, count, seed, bias)
    sparse.dense_grad_needed = False
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, in_features, generator=generator)
    upstream = torch.randn(batch, out_features, generator=generator)
    if feature_major:  # the layout the sparse backend's own outputs have
        x, upstream = x.t().contiguous().t(), upstream.t().contiguous().t()
    y_masked, dx_masked = run(masked, x, upstream)
    y_sparse, dx_sparse = run(sparse, x, upstream)
    torch.testing.assert_close(y_sparse, y_masked, **TOL)
    torch.testing.assert_close(dx_sparse, dx_masked, **TOL)
    mask = masked.mask
    torch.testing.assert_close(sparse.weight.grad[mask], masked.weight.grad[mask], **TOL)
    if batch >= SMALL_BATCH:
        assert (sparse.weight.grad[~mask] == 0).all(), "the sparse weight gradient is zero at masked positions"
    if bias:
        torch.testing.assert_close(sparse.bias.grad, masked.bias.grad, **TOL)


@settings(max_examples=30, deadline=None)
@given(**shapes)
def test_dense_grad_needed_gives_the_masked_backends_dense_gradient(in_features, out_features, batch, fraction, seed,
                                                                    feature_major, bias):
    masked, sparse = layer_pair(in_features, out_features, round(fraction * in_features * out_features), seed, bias)
    assert sparse.dense_grad_needed, "a layer outside a controller behaves like nn.Linear"
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, in_features, generator=generator)
    upstream = torch.randn(batch, out_features, generator=generator)
    if feature_major:
        x, upstream = x.t().contiguous().t(), upstream.t().contiguous().t()
    run(masked, x, upstream)
    run(sparse, x, upstream)
    torch.testing.assert_close(sparse.weight.grad, masked.weight.grad, **TOL)


def test_inputs_with_more_dimensions_and_without_gradients():
    masked, sparse = layer_pair(12, 9, 30, seed=3)
    x = torch.randn(2, 5, 7, 12)
    torch.testing.assert_close(sparse(x), masked(x), **TOL)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x[0]), masked(x[0]), **TOL)
        torch.testing.assert_close(sparse(x[0, 0, 0]), masked(x[0, 0, 0]), **TOL)  # one sample, no batch dim


def test_float64_and_no_bias():
    masked, sparse = layer_pair(16, 8, 40, seed=4, bias=False, dtype=torch.float64)
    sparse.dense_grad_needed = False
    x, upstream = torch.randn(10, 16, dtype=torch.float64), torch.randn(10, 8, dtype=torch.float64)
    y_masked, dx_masked = run(masked, x, upstream)
    y_sparse, dx_sparse = run(sparse, x, upstream)
    torch.testing.assert_close(y_sparse, y_masked)
    torch.testing.assert_close(dx_sparse, dx_masked)
    torch.testing.assert_close(sparse.weight.grad, masked.weight.grad * masked.mask)


def test_structure_is_cached_and_rebuilt_after_set_mask():
    masked, sparse = layer_pair(20, 10, 50, seed=5)
    x = torch.randn(8, 20)
    sparse(x)
    structure = sparse.csr_structure()
    sparse(x)
    assert sparse.csr_structure() is structure, "the structure is kept while the mask stays"
    new_mask = random_mask((10, 20), 50, torch.Generator().manual_seed(99))
    for layer in (masked, sparse):
        layer.set_mask(new_mask)
    assert sparse.csr_structure() is not structure
    assert sparse.csr_structure().index.numel() == 50
    torch.testing.assert_close(sparse(x), masked(x), **TOL)


def test_structure_is_rebuilt_after_load_state_dict():
    masked, sparse = layer_pair(20, 10, 50, seed=6)
    x = torch.randn(8, 20)
    sparse(x)
    structure = sparse.csr_structure()
    other, _ = layer_pair(20, 10, 120, seed=7)
    sparse.load_state_dict(other.state_dict())
    assert sparse.csr_structure() is not structure
    torch.testing.assert_close(sparse(x), other(x), **TOL)


def test_structure_matches_the_mask():
    mask = random_mask((7, 5), 13, torch.Generator().manual_seed(8))
    weight = torch.randn(7, 5) * mask
    structure = CsrStructure.from_mask(mask)
    torch.testing.assert_close(structure.weight_csr(weight).to_dense(), weight)
    torch.testing.assert_close(structure.weight_t_csr(weight).to_dense(), weight.t())


def test_copies_compute_the_same_and_drop_the_cache():
    masked, sparse = layer_pair(30, 20, 60, seed=9)
    x = torch.randn(6, 30)
    expected = sparse(x)
    for clone in (copy.deepcopy(sparse), pickle.loads(pickle.dumps(sparse))):
        assert clone._structure is None and clone.backend == "sparse"
        torch.testing.assert_close(clone(x), expected)


def test_auto_rule_without_compact_layout():
    """Layers that cannot be compact (and machines without the compiled kernels) follow the MKL table."""
    cpu = torch.device("cpu")

    def pick(in_features, out_features, density, device=cpu):
        return auto_backend(in_features, out_features, density, device, compact_capable=False)

    assert pick(256, 256, 0.03) == "sparse"
    assert pick(256, 256, 0.1) == "masked"
    assert pick(1024, 1024, 0.1) == "sparse"
    assert pick(1024, 1024, 1.0) == "masked"
    assert pick(17, 256, 0.01) == "masked", "small layers stay on dense kernels"
    for min_weights, max_density in AUTO_RULE:
        assert pick(min_weights, 1, max_density) == "sparse"
    assert pick(AUTO_RULE[-1][0] - 1, 1, 0.001) == "masked"
    assert pick(1024, 1024, 0.05, torch.device("meta")) == "masked", "non-CPU devices stay masked"


def test_auto_stays_masked_without_mkl(monkeypatch):
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: False)
    assert auto_backend(1024, 1024, 0.05, torch.device("cpu"), compact_capable=False) == "masked"


def test_auto_follows_the_mask_and_set_backend_sets_every_layer():
    layer = SparseLinear(256, 256)
    layer.compact_capable = False
    assert layer.backend == "auto" and layer.resolved_backend == "masked"
    layer.set_mask(random_mask((256, 256), 1500))
    assert layer.resolved_backend == "sparse"
    module = torch.nn.Sequential(layer, torch.nn.ReLU(), SparseLinear(256, 4))
    assert set_backend(module, "masked") == 2
    assert layer.resolved_backend == "masked"
    with pytest.raises(ValueError, match="unknown backend"):
        set_backend(module, "csr")


def test_the_old_import_path_of_set_backend_still_works():
    """``sparse_rl.layers.set_backend`` was documented before ``network_layout`` held it; pickles name its class."""
    import sparse_rl.layers as layers
    import sparse_rl.network_layout as network_layout

    assert layers.set_backend is network_layout.set_backend
    assert layers.LayoutGroup is network_layout.LayoutGroup
    with pytest.raises(AttributeError, match="no attribute 'set_backends'"):
        layers.set_backends  # noqa: B018


def policy_layers(model) -> dict[str, SparseLinear]:
    return {name: m for name, m in model.policy.named_modules() if isinstance(m, SparseLinear)}


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_policies_keep_every_invariant_on_the_sparse_backend(algo, tmp_path):
    """Steps and topology updates on ``sparse``: exact counts, zeros at masked positions (online and
    target), shared masks, zeroed optimizer state, dense gradients exactly on update steps; a saved
    model loads on ``masked`` and predicts the same."""
    from stable_baselines3 import SAC, TD3

    from sparse_rl import SparseSACPolicy, SparseTD3Policy

    algo_class, policy_class = {"sac": (SAC, SparseSACPolicy), "td3": (TD3, SparseTD3Policy)}[algo]
    model = algo_class(policy_class, "Pendulum-v1", learning_starts=64, batch_size=32, seed=0, device="cpu",
                       policy_kwargs=dict(density=0.2, backend="sparse", update_interval=10, update_end=None,
                                          net_arch=[64, 64]))
    layers = policy_layers(model)
    assert {layer.resolved_backend for layer in layers.values()} == {"sparse"}
    counts = {name: layer.nnz for name, layer in layers.items()}
    update_grads = []
    for controller in model.policy.controllers().values():
        update = controller.update

        def checked_update(*args, _update=update, _controller=controller, **kwargs):
            update_grads.append(all(layer.dense_grad_needed for layer in _controller.layers.values()))
            update_grads.append(any(bool((layer.weight.grad[~layer.mask] != 0).any())
                                    for layer in _controller.layers.values()))
            return _update(*args, **kwargs)

        controller.update = checked_update
    model.learn(200)
    assert update_grads and all(update_grads), "updates score with the dense gradient"
    assert sum(int(c.num_updates) for c in model.policy.controllers().values()) >= 2
    for name, layer in layers.items():
        assert layer.nnz == counts[name], name
        assert (layer.weight[~layer.mask] == 0).all(), name
    for online, target in (("critic", "critic_target"), ("actor", "actor_target")):
        if not hasattr(model.policy, target):
            continue
        for name, layer in policy_layers(model).items():
            if name.startswith(target + "."):
                source = layers[online + name[len(target):]]
                assert torch.equal(layer.mask, source.mask) and (layer.weight[~layer.mask] == 0).all(), name
    for network in (model.actor, model.critic):
        for layer in (m for m in network.modules() if isinstance(m, SparseLinear)):
            for value in network.optimizer.state[layer.weight].values():
                if torch.is_tensor(value) and value.shape == layer.weight.shape:
                    assert (value[~layer.mask] == 0).all()
    obs = torch.randn(16, 3).numpy()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model")
    kwargs = dict(model.policy_kwargs, backend="masked")
    loaded = algo_class.load(tmp_path / "model", device="cpu", custom_objects=dict(policy_kwargs=kwargs))
    assert {layer.resolved_backend for layer in policy_layers(loaded).values()} == {"masked"}
    loaded_actions, _ = loaded.predict(obs, deterministic=True)
    torch.testing.assert_close(torch.as_tensor(loaded_actions), torch.as_tensor(actions), rtol=1e-4, atol=1e-5)


def mlp(count: int) -> torch.nn.Sequential:
    torch.manual_seed(11)
    net = torch.nn.Sequential(SparseLinear(23, 256), torch.nn.ReLU(), SparseLinear(256, 256), torch.nn.ReLU(),
                              SparseLinear(256, 1))
    net[2].set_mask(random_mask((256, 256), count, torch.Generator().manual_seed(12)))
    return net


def test_a_network_with_a_sparse_layer_runs_feature_major_and_matches_masked():
    """Outputs, weight and bias gradients of the feature-major network (its dense 23 → 256 input layer adds the bias
    inside its GEMM, its dense 256 → 1 head runs compact) equal the all-masked network's."""
    net = mlp(1000)
    straight = copy.deepcopy(net)
    fuse_relus(straight)  # as sparsify does: its layers then run in runs
    set_backend(straight, "auto")
    assert [layer.resolved_backend for layer in straight if isinstance(layer, SparseLinear)] == ["compact"] * 3, \
        "a dense input layer that feeds a compact layer straight is compact too (the two: one autograd node)"
    net[1] = torch.nn.ReLU(inplace=True)  # not straight: as where a BatchRenorm comes between (CrossQ)
    reference = copy.deepcopy(net)
    set_backend(reference, "masked")
    set_backend(net, "auto")
    assert [layer.resolved_backend for layer in net if isinstance(layer, SparseLinear)] == ["masked", "compact",
                                                                                            "compact"]
    seen = []
    net[2].register_forward_hook(lambda module, args, output: seen.append((is_feature_major(args[0]),
                                                                          is_feature_major(output))))
    x = torch.randn(64, 23)
    for model in (net, reference):
        model(x).square().sum().backward()
    assert seen == [(True, True)], "the sparse layer reads and writes feature-major activations: no copies"
    torch.testing.assert_close(net(x), reference(x), **TOL)
    for layer, ref in zip(net, reference):
        if isinstance(layer, SparseLinear):
            torch.testing.assert_close(layer.score_grad(), ref.weight.grad, **TOL)
            torch.testing.assert_close(layer.bias.grad, ref.bias.grad, **TOL)


def test_a_network_without_sparse_layers_runs_exactly_like_masked():
    net = mlp(60000)
    reference = copy.deepcopy(net)
    set_backend(reference, "masked")
    set_backend(net, "auto")
    x = torch.randn(64, 23)
    assert net(x).is_contiguous()
    torch.testing.assert_close(net(x), reference(x), rtol=0, atol=0)
    net[2].set_mask(random_mask((256, 256), 1000))  # the group notices that a layer turned sparse
    assert net[2].layout == "masked", "auto changes a layout only when the backend is set"
    assert net[2].resolved_backend == "sparse" and is_feature_major(net[0](x))


@pytest.mark.parametrize("algo", ["sac", "td3"])
@pytest.mark.parametrize("method", [name for name in METHODS if name not in ("dense", "thresholds")])
def test_every_method_trains_on_the_sparse_backend_with_its_masks_exact(method, algo):
    """Each method's controller drives layers on ``sparse`` (as ``auto`` does once a machine's calibration
    puts its layers there): the run trains, updates its topology, and keeps masked weights at exactly zero,
    online and target, with each fixed-density layer's count unchanged."""
    from stable_baselines3 import SAC, TD3

    from sparse_rl import SparseSACPolicy, SparseTD3Policy

    algo_class, policy_class = {"sac": (SAC, SparseSACPolicy), "td3": (TD3, SparseTD3Policy)}[algo]
    own = dict(prune_start=100, prune_end=200) if method == "halo" else {}
    model = algo_class(policy_class, "Pendulum-v1", learning_starts=64, batch_size=32, seed=0, device="cpu",
                policy_kwargs=dict(density=0.2, method=method, backend="sparse", update_interval=20,
                                   net_arch=[64, 64], **own))
    layers = policy_layers(model)
    counts = {name: layer.nnz for name, layer in layers.items()}
    model.learn(300)
    assert all(layer.backend == "sparse" for layer in layers.values())
    with torch.no_grad():  # ds-td3 prunes a Polyak-updated target back to its count before the target's next forward
        obs = torch.randn(8, 3)
        model.critic_target(obs, model.actor_target(obs) if algo == "td3" else model.actor(obs))
    if METHODS[method].updates_topology:
        assert sum(int(c.num_updates) for c in model.policy.controllers().values()) >= 1
    for name, layer in layers.items():
        assert torch.isfinite(layer.weight).all(), name
        assert (layer.weight[~layer.mask] == 0).all(), name
        if method == "srigl":  # k = round(budget / live neurons), capped by the inputs not ablated
            fan_in = layer.mask.sum(dim=1)
            assert fan_in[fan_in > 0].unique().numel() == 1, name
            assert layer.nnz <= counts[name] + layer.out_features / 2, name
        elif method not in ("halo", "gmp"):
            assert layer.nnz == counts[name], name


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(0, 5), cols=st.integers(0, 5), layout=st.sampled_from(["row", "feature", "strided", "3d"]))
def test_feature_major_is_read_from_the_strides_as_the_transposed_views_contiguity(rows, cols, layout):
    """``is_feature_major`` reads the strides; its meaning is the transposed view's contiguity (and not row-major)."""
    if layout == "row":
        x = torch.zeros(rows, cols)
    elif layout == "feature":
        x = torch.zeros(cols, rows).t()
    elif layout == "strided":
        x = torch.zeros(rows, 2 * cols)[:, ::2]
    else:
        x = torch.zeros(rows, cols, 2)
    expected = x.dim() == 2 and not x.is_contiguous() and x.t().is_contiguous()
    assert is_feature_major(x) == expected
