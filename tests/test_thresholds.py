"""Learned-threshold layers (Liu et al. 2020) on hand-made tensors."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_rl.methods.thresholds import LongTailedStep, ThresholdController, ThresholdLinear, long_tailed_derivative


@pytest.mark.parametrize("x, expected", [(0.0, 2.0), (0.1, 1.6), (-0.2, 1.2), (0.4, 0.4), (-0.4, 0.4),
                                         (0.7, 0.4), (1.0, 0.4), (-1.0, 0.4), (1.01, 0.0), (-3.0, 0.0)])
def test_long_tailed_estimator_values(x, expected):
    assert long_tailed_derivative(torch.tensor(x)).item() == pytest.approx(expected)


def test_long_tailed_estimator_is_continuous_at_0_4():
    below, above = long_tailed_derivative(torch.tensor([0.4 - 1e-6, 0.4 + 1e-6], dtype=torch.float64))
    assert below.item() == pytest.approx(0.4, abs=1e-5) and above.item() == pytest.approx(0.4)


@given(st.lists(st.floats(-2, 2, allow_nan=False), min_size=1, max_size=20))
def test_step_forward_is_a_step_and_backward_is_the_estimator(values):
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    y = LongTailedStep.apply(x)
    assert torch.equal(y, (x > 0).double())
    y.sum().backward()
    assert torch.allclose(x.grad, long_tailed_derivative(x.detach()))


def layer_with(weight, threshold):
    layer = ThresholdLinear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.threshold.copy_(threshold)
    return layer


def test_mask_is_magnitude_above_the_row_threshold_and_masked_weights_do_not_compute():
    layer = layer_with(torch.tensor([[0.5, -0.1, 0.3], [0.2, -0.9, 0.05]]), torch.tensor([0.25, 0.1]))
    assert layer.mask.tolist() == [[True, False, True], [True, True, False]]
    assert layer.nnz == 4 and layer.density == pytest.approx(4 / 6)
    x = torch.tensor([[1.0, 1.0, 1.0]])
    assert torch.allclose(layer(x), torch.tensor([[0.8, -0.7]]))


def test_a_masked_weight_near_its_threshold_gets_gradient_and_can_return():
    layer = layer_with(torch.tensor([[0.1, 0.5]]), torch.tensor([0.2]))
    assert not layer.mask[0, 0]
    layer(torch.ones(1, 2)).sum().backward()
    assert layer.weight.grad[0, 0] != 0  # through the estimator: |w| - t = -0.1 is inside its support
    assert layer.threshold.grad.item() < 0  # raising the output pulls the threshold down


def test_regulariser_gradient_is_added_by_the_optimizer_hook():
    layer = layer_with(torch.randn(3, 4), torch.tensor([0.0, 0.5, -0.3]))
    controller = ThresholdController({"l": layer}, alpha=0.01)
    expected = torch.autograd.grad(controller.regulariser(), layer.threshold)[0]
    assert torch.allclose(expected, -0.01 * torch.exp(-layer.threshold.detach()))
    layer.threshold.grad = torch.full((3,), 0.5)
    controller.before_optimizer_step()
    assert torch.allclose(layer.threshold.grad, 0.5 + expected)


def test_regulariser_raises_thresholds_through_an_optimizer():
    layer = layer_with(torch.full((4, 4), 0.5), torch.zeros(4))
    controller = ThresholdController({"l": layer}, alpha=1.0)
    optimizer = torch.optim.SGD([layer.threshold], lr=0.1)
    controller.attach(optimizer)
    expected = 0.0
    for _ in range(3):
        optimizer.zero_grad()
        optimizer.step()
        expected += 0.1 * math.exp(-expected)
    assert torch.allclose(layer.threshold.detach(), torch.full((4,), expected))
    assert layer.nnz == 16 and int(controller.resets) == 0


def test_dead_layer_resets_its_thresholds_and_a_live_one_does_not():
    dead = layer_with(torch.full((10, 10), 0.1), torch.full((10,), 0.2))
    live = layer_with(torch.full((10, 10), 0.1), torch.full((10,), 0.2))
    with torch.no_grad():
        live.weight[0, :2] = 0.5  # 2 % kept: above the 1 % line
    controller = ThresholdController({"dead": dead, "live": live}, alpha=0.0)
    controller.after_optimizer_step()
    assert torch.equal(dead.threshold.detach(), torch.zeros(10)) and dead.density == 1.0
    assert live.density == pytest.approx(0.02) and int(controller.resets) == 1


def test_negative_alpha_is_refused():
    with pytest.raises(ValueError, match="alpha"):
        ThresholdController({}, alpha=-1.0)
