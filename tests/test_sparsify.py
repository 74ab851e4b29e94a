"""Networks are built sparse layer by layer, compact layers without a dense copy, with the same random draws."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparse_rl.masks import random_mask, random_positions
from sparse_rl.sparsify import draw_like_linear_init, sparsify
from sparse_rl.sparsity import NetworkSparsity


def mlp(width: int = 96) -> nn.Module:
    return nn.Sequential(nn.Linear(17, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 6))


def built(backend: str, seed: int = 0, **kwargs) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    net = mlp()
    sparsify(net, NetworkSparsity(density=0.1, backend=backend, **kwargs), ["4"])
    return net, torch.rand(4)  # what the generator draws next


def test_compact_layers_are_built_directly_with_the_draws_and_weights_of_masked_ones():
    compact, after_compact = built("auto")
    masked, after_masked = built("masked")
    assert [compact[i].layout for i in (0, 2, 4)] == ["masked", "compact", "compact"], "the 6-output head too"
    assert torch.equal(after_compact, after_masked)
    for a, b in zip(compact.modules(), masked.modules()):
        if isinstance(a, nn.Linear):
            assert torch.equal(a.mask, b.mask) and torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_sparse_init_rescales_compact_and_masked_layers_alike():
    compact, _ = built("auto", sparse_init=True, dense_output=True)
    masked, _ = built("masked", sparse_init=True, dense_output=True)
    assert torch.equal(compact[2].weight, masked[2].weight) and compact[2].layout == "compact"
    assert bool(compact[4].mask.all())  # the output layer kept dense, from the same budget


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.data())
def test_random_masks_are_their_random_positions(rows, cols, data):
    count = data.draw(st.integers(0, rows * cols))
    mask = random_mask((rows, cols), count, torch.Generator().manual_seed(3))
    positions = random_positions((rows, cols), count, torch.Generator().manual_seed(3))
    assert int(mask.sum()) == count and torch.equal(positions, mask.flatten().nonzero().squeeze(1))
    assert bool((positions.diff() > 0).all()) and (count == 0 or int(positions[-1]) < rows * cols)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.booleans())
def test_draw_like_linear_init_advances_the_generator_as_a_linear_layer_does(fan_in, fan_out, bias):
    torch.manual_seed(1)
    nn.Linear(fan_in, fan_out, bias=bias)
    expected = torch.rand(3)
    torch.manual_seed(1)
    draw_like_linear_init(nn.Linear(fan_in, fan_out, bias=bias, device="meta"))
    assert torch.equal(torch.rand(3), expected)


def test_masked_layers_are_recognised_from_their_class_without_building_a_compact_layer_densely(monkeypatch):
    from sparse_rl.backends.compact import CompactStructure
    from sparse_rl.flops import active_weights
    from sparse_rl.layers import SparseLinear
    from sparse_rl.masks import is_masked_layer
    from sparse_rl.methods.halo import HaloLinear
    from sparse_rl.methods.thresholds import ThresholdLinear

    assert all(is_masked_layer(cls(3, 4)) for cls in (SparseLinear, HaloLinear, ThresholdLinear))
    assert not is_masked_layer(nn.Linear(3, 4))
    net, _ = built("auto")
    monkeypatch.setattr(CompactStructure, "dense", lambda *args: pytest.fail("built the dense weight"))
    monkeypatch.setattr(CompactStructure, "mask", lambda *args: pytest.fail("built the dense mask"))
    assert is_masked_layer(net[2]) and active_weights(net[2]) == net[2].nnz < 96 * 96
