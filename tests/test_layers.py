import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparse_rl.controller import remask
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import random_mask


def test_starts_dense_and_forward_matches_linear():
    torch.manual_seed(0)
    dense = nn.Linear(5, 3)
    layer = SparseLinear.from_dense(dense)
    x = torch.randn(4, 5)
    assert layer.mask.all() and layer.mask.dtype == torch.bool
    torch.testing.assert_close(layer(x), dense(x), rtol=0, atol=0)


def test_set_mask_zeroes_removed_weights_and_keeps_bias_dense():
    layer = SparseLinear(4, 3)
    mask = random_mask((3, 4), 5, torch.Generator().manual_seed(1))
    layer.set_mask(mask)
    assert layer.nnz == 5 and layer.density == pytest.approx(5 / 12)
    assert (layer.weight[~mask] == 0).all() and (layer.weight[mask] != 0).all()
    assert (layer.bias != 0).all()


def test_gradient_is_dense_until_masked():
    torch.manual_seed(0)
    layer = SparseLinear(6, 4)
    layer.set_mask(random_mask((4, 6), 6))
    layer(torch.randn(8, 6)).sum().backward()
    assert (layer.weight.grad[~layer.mask] != 0).any(), "masked positions must still get the dense gradient"
    layer.mask_grad()
    assert (layer.weight.grad[~layer.mask] == 0).all()


@settings(max_examples=25, deadline=None)
@given(layouts=st.lists(st.sampled_from(["masked", "compact", "linear", "no grad"]), min_size=0, max_size=5),
       seed=st.integers(0, 2**16), grads=st.booleans())
def test_remask_equals_masking_layer_by_layer(layouts, seed, grads):
    """The controllers' one-call re-masking zeroes exactly what each layer's own apply_mask / mask_grad does (bit for
    bit), skips compact layers, plain linear layers and layers without a gradient."""
    layers, expected = _layers_to_remask(layouts, seed), _layers_to_remask(layouts, seed)
    for layer in expected:
        if isinstance(layer, SparseLinear):
            layer.mask_grad() if grads else layer.apply_mask()
    remask(layers, grads=grads)
    for got, want in zip(layers, expected):
        for (name, parameter), wanted in zip(got.named_parameters(), want.parameters()):
            assert torch.equal(parameter, wanted), name
            assert (parameter.grad is None) == (wanted.grad is None), name
            if parameter.grad is not None:
                assert torch.equal(parameter.grad, wanted.grad), name
    for layer, layout in zip(layers, layouts):  # and it zeroed something that was not zero
        if layout == "masked":
            assert ((layer.weight.grad if grads else layer.weight)[~layer.mask] == 0).all()
            assert ((layer.weight.grad if grads else layer.weight)[layer.mask] != 0).all()


def _layers_to_remask(layouts: list[str], seed: int) -> list[nn.Module]:
    """Layers of each kind, with non-zero weights and gradients at absent positions too (the same for a seed)."""
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, layout in enumerate(layouts):
        layer = nn.Linear(5, 4) if layout == "linear" else SparseLinear(5, 4)
        if isinstance(layer, SparseLinear):
            layer.set_mask(random_mask((4, 5), 1 + i, generator))
            if layout == "compact":
                layer.set_backend("compact")
        for parameter in layer.parameters():
            with torch.no_grad():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
            if layout != "no grad":
                parameter.grad = torch.randn(parameter.shape, generator=generator)
        layers.append(layer)
    return layers


def test_mask_and_state_survive_state_dict_round_trip():
    layer = SparseLinear(6, 4)
    layer.set_mask(random_mask((4, 6), 7))
    clone = SparseLinear(6, 4)
    clone.load_state_dict(layer.state_dict())
    assert torch.equal(clone.mask, layer.mask) and torch.equal(clone.weight, layer.weight)


def test_bad_mask_shape_and_count_are_errors():
    with pytest.raises(ValueError, match="shape"):
        SparseLinear(3, 2).set_mask(torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="count"):
        random_mask((2, 2), 5)


def test_random_mask_has_exact_count():
    for count in range(0, 13):
        assert int(random_mask((3, 4), count).sum()) == count


def test_loading_a_state_dict_refreshes_the_masking_used_by_optimizer_hooks():
    source = SparseLinear(6, 4)
    source.set_mask(random_mask((4, 6), 3))
    loaded = SparseLinear(6, 4)
    loaded.load_state_dict(source.state_dict())
    with torch.no_grad():
        loaded.weight.fill_(1.0)
    loaded.apply_mask()
    assert torch.equal(loaded.weight != 0, source.mask)
    assert "mask_values" not in loaded.state_dict()
