"""The lone-layer step's breakdown (``benchmarks/layer_step.py``): its phases and the kernels' share in them."""

import sys
from pathlib import Path

import pytest
import torch

from sparse_rl.backends import kernels

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from layer_step import PHASES, _NoWork, phase_medians  # noqa: E402


def test_the_no_work_node_hands_back_gradients_of_its_inputs_shapes():
    x = torch.randn(4, 16).t().contiguous().t().requires_grad_(True)
    values, bias = torch.zeros(10, requires_grad=True), torch.zeros(8, requires_grad=True)
    y = _NoWork.apply(x, values, bias, 8)
    assert y.shape == (4, 8)
    y.backward(torch.ones(4, 8))
    assert x.grad.shape == x.shape and values.grad.shape == values.shape and bias.grad.shape == bias.shape
    assert not values.grad.any() and not bias.grad.any()


@pytest.mark.skipif(not kernels.compiled(), reason="the compiled kernels are not built")
def test_the_kernels_time_falls_inside_the_compact_phases_only():
    medians = phase_medians(64, 32, 16, 0.2, repeats=3, warmup=1)
    assert set(medians) == {"masked", "compact", "no work"}
    for phases in medians.values():
        assert set(PHASES) | {"step", "forward kernel", "backward kernel"} <= set(phases)
        assert all(seconds >= 0 for seconds in phases.values())
    compact = medians["compact"]
    assert 0 < compact["forward kernel"] <= compact["forward"]
    assert 0 < compact["backward kernel"] <= compact["backward"]
    for name in ("masked", "no work"):
        assert medians[name]["forward kernel"] == medians[name]["backward kernel"] == 0
