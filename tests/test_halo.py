"""HALO (Seto et al. 2020): the penalty, its optimum, and the scheduled global magnitude prune."""

import math

import pytest
import torch

from sparse_rl.layers import SparseLinear
from sparse_rl.methods.halo import HaloController, HaloLinear, PruneSchedule, halo_penalty


def halo_layer(weight):
    layer = HaloLinear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def test_penalty_value_on_hand_made_tensors():
    weight = torch.tensor([[1.0, -2.0], [0.0, 0.5]])
    scale = torch.tensor([[1.0, 2.0], [1.0, -0.5]])
    expected = 0.1 * (1 + 2 / 4 + 0 + 0.5 / 0.25) + 0.01 * (1 + 2 + 1 + 0.5)
    assert halo_penalty(weight, scale, xi=0.1, psi=0.01).item() == pytest.approx(expected)


def test_hook_gradients_equal_the_penalty_gradients():
    layer = halo_layer(torch.tensor([[0.3, -0.7, 0.0]]))
    with torch.no_grad():
        layer.scale.copy_(torch.tensor([[0.8, 1.5, 1.2]]))
    controller = HaloController({"l": layer}, xi=0.2, psi=0.05, schedule=PruneSchedule(0.5, 10**6, 10**6))
    weight_grad, scale_grad = torch.autograd.grad(controller.penalty(), [layer.weight, layer.scale])
    controller.add_penalty_gradient()
    assert torch.allclose(layer.weight.grad, weight_grad) and torch.allclose(layer.scale.grad, scale_grad)


@pytest.mark.parametrize("theta, xi, psi", [(0.5, 0.1, 0.2), (-2.0, 0.05, 0.01), (0.01, 1.0, 1.0)])
def test_gradient_descent_on_a_scale_reaches_the_closed_form_optimum(theta, xi, psi):
    layer = halo_layer(torch.tensor([[theta]]))
    controller = HaloController({"l": layer}, xi=xi, psi=psi, schedule=PruneSchedule(0.5, 10**6, 10**6))
    optimizer = torch.optim.Adam([layer.scale], lr=0.01)
    for _ in range(3000):
        optimizer.zero_grad()
        controller.add_penalty_gradient()
        optimizer.step()
    optimum = (2 * xi * abs(theta) / psi) ** (1 / 3)
    assert layer.scale.item() == pytest.approx(optimum, rel=1e-3)


def test_cubic_schedule_from_start_to_end():
    schedule = PruneSchedule(0.1, start=1000, end=5000, interval=1000)
    assert schedule.density_at(500, None) is None and schedule.density_at(1500, None) is None
    assert schedule.density_at(1000, None) == pytest.approx(1.0)
    assert schedule.density_at(3000, None) == pytest.approx(0.1 + 0.9 * 0.5 ** 3)
    assert schedule.density_at(5000, None) == pytest.approx(0.1) == schedule.density_at(9000, None)
    fractional = PruneSchedule(0.1, start=0.2, end=0.8, interval=10)
    assert fractional.density_at(10, 0.8) == pytest.approx(0.1)
    with pytest.raises(RuntimeError, match="progress is unknown"):
        fractional.density_at(10, None)


@pytest.mark.parametrize("kwargs, message", [(dict(start=0.2, end=100), "both"), (dict(start=0.9, end=0.1), "<="),
                                             (dict(interval=0), "interval")])
def test_bad_schedules_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruneSchedule(0.1, **kwargs)


def test_global_magnitude_prune_is_exact_mirrors_targets_and_resets_optimizer_state():
    torch.manual_seed(0)
    layers = {"a": halo_layer(torch.randn(8, 5)), "b": halo_layer(torch.randn(3, 8))}
    targets = {name: SparseLinear(layer.in_features, layer.out_features) for name, layer in layers.items()}
    optimizer = torch.optim.Adam([p for layer in layers.values() for p in layer.parameters()])
    for layer in layers.values():
        layer.weight.grad = torch.ones_like(layer.weight)
    optimizer.step()
    controller = HaloController(layers, xi=0.0, psi=1.0, schedule=PruneSchedule(0.25, 1, 1, 1), targets=targets)
    magnitudes = torch.cat([layer.weight.detach().abs().flatten() for layer in layers.values()])
    keep = math.floor(0.25 * 64 + 0.5)
    cutoff = magnitudes.topk(keep).values.min()
    controller.prune(0.25, optimizer)
    assert sum(layer.nnz for layer in layers.values()) == keep
    for name, layer in layers.items():
        assert torch.equal(layer.mask, layer.weight.detach().abs() >= cutoff)
        assert torch.equal(targets[name].mask, layer.mask)
        assert (layer.weight[~layer.mask] == 0).all()
        assert (optimizer.state[layer.weight]["exp_avg"][~layer.mask] == 0).all()


def test_controller_prunes_on_schedule_inside_optimizer_steps_and_keeps_zeros():
    torch.manual_seed(0)
    layer = halo_layer(torch.randn(10, 10))
    controller = HaloController({"l": layer}, xi=1e-3, psi=1e-3, schedule=PruneSchedule(0.2, 2, 4, 2))
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.01)
    controller.attach(optimizer)
    densities = []
    for _ in range(6):
        optimizer.zero_grad()
        layer(torch.randn(4, 10)).pow(2).sum().backward()
        optimizer.step()
        densities.append(layer.density)
        assert (layer.weight[~layer.mask] == 0).all()
    assert densities[0] == 1.0 and densities[-1] == pytest.approx(0.2)
    assert densities == sorted(densities, reverse=True)
