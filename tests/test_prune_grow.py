import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparse_rl.criteria import GROW_CRITERIA, PRUNE_CRITERIA, resolve_criterion
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import init_masks, sparse_layers, update_mask
from sparse_rl.methods.prune_grow import PruneGrowController
from sparse_rl.schedules import UpdateSchedule


def make_net(widths: list[int]) -> nn.Sequential:
    modules: list[nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        modules += [SparseLinear(n_in, n_out), nn.Tanh()]
    return nn.Sequential(*modules[:-1])


def state_at(optimizer, param, positions):
    return [value[positions] for value in optimizer.state.get(param, {}).values()
            if torch.is_tensor(value) and value.shape == param.shape]


def check_invariants(layers, counts, optimizer=None):
    for name, layer in layers.items():
        assert int(layer.mask.sum()) == counts[name]
        assert (layer.weight[~layer.mask] == 0).all()
        if optimizer is not None:
            for masked_state in state_at(optimizer, layer.weight, ~layer.mask):
                assert (masked_state == 0).all()


ops = st.lists(st.one_of(st.just("step"), st.floats(0.0, 0.95)), min_size=1, max_size=8)


@settings(max_examples=1500)
@given(
    widths=st.lists(st.integers(1, 12), min_size=2, max_size=4),
    density=st.floats(0.05, 1.0),
    distribution=st.sampled_from(["uniform", "erk"]),
    prune=st.sampled_from(sorted(PRUNE_CRITERIA)),
    grow=st.sampled_from(sorted(GROW_CRITERIA)),
    optimizer_name=st.sampled_from(["adam", "sgd"]),
    sequence=ops,
    seed=st.integers(0, 2**16),
)
def test_counts_zeros_optimizer_state_and_target_masks_hold_through_any_sequence(
        widths, density, distribution, prune, grow, optimizer_name, sequence, seed):
    torch.manual_seed(seed)
    net = make_net(widths)
    target = copy.deepcopy(net)
    layers = sparse_layers(net)
    counts = init_masks(layers, density, distribution)
    target.load_state_dict(net.state_dict())
    if optimizer_name == "adam":
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    else:
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)
    controller = PruneGrowController(layers, resolve_criterion("prune", prune), resolve_criterion("grow", grow),
                                    UpdateSchedule(interval=10**9, end=None), sparse_layers(target))
    controller.attach(optimizer)
    check_invariants(layers, counts)
    for op in sequence:
        optimizer.zero_grad()
        net(torch.randn(5, widths[0])).pow(2).sum().backward()
        if op == "step":
            optimizer.step()
        else:
            before = {name: layer.mask.clone() for name, layer in layers.items()}
            stats = controller.update(op, optimizer)
            for name, layer in layers.items():
                grown = layer.mask & ~before[name]
                assert (layer.weight[grown] == 0).all()
                for grown_state in state_at(optimizer, layer.weight, grown):
                    assert (grown_state == 0).all()
                assert stats[name].density == pytest.approx(counts[name] / layer.mask.numel())
        check_invariants(layers, counts, optimizer)
        for name, target_layer in sparse_layers(target).items():
            assert torch.equal(target_layer.mask, layers[name].mask)
            assert (target_layer.weight[~target_layer.mask] == 0).all()


@settings(max_examples=1500)
@given(numel=st.integers(1, 60), data=st.data())
def test_update_mask_swaps_exactly_count_positions(numel, data):
    active = data.draw(st.integers(1, numel))
    count = data.draw(st.integers(0, active))
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[torch.randperm(numel)[:active]] = True
    prune_scores, grow_scores = torch.randn(numel), torch.randn(numel)
    new_mask, dropped, grown = update_mask(mask, prune_scores, grow_scores, count)
    assert int(new_mask.sum()) == active and len(dropped) == len(grown) == count
    assert mask[dropped].all()
    kept = prune_scores[mask & ~_indicator(dropped, numel)]
    if count and kept.numel():
        assert prune_scores[dropped].max() <= kept.min()
    not_grown = grow_scores[(~mask | _indicator(dropped, numel)) & ~_indicator(grown, numel)]
    if count and not_grown.numel():
        assert grow_scores[grown].min() >= not_grown.max()


def _indicator(indices, numel):
    out = torch.zeros(numel, dtype=torch.bool)
    out[indices] = True
    return out


def test_hooks_run_the_schedule_and_keep_masks_through_training():
    torch.manual_seed(0)
    net = make_net([8, 32, 32, 2])
    layers = sparse_layers(net)
    counts = init_masks(layers, 0.3)
    initial = {name: layer.mask.clone() for name, layer in layers.items()}
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
    assert not PruneGrowController(layers, resolve_criterion("prune", "magnitude"),
                                  resolve_criterion("grow", "gradient")).tracks_activity, "RigL keeps no counts"
    controller = PruneGrowController(layers, resolve_criterion("prune", "magnitude"),
                                    resolve_criterion("grow", "ucb"), UpdateSchedule(interval=5, end=23))
    assert controller.tracks_activity
    controller.attach(optimizer)
    for _ in range(30):
        optimizer.zero_grad()
        net(torch.randn(16, 8)).pow(2).mean().backward()
        optimizer.step()
        check_invariants(layers, counts, optimizer)
    assert int(controller.step) == 30 and int(controller.num_updates) == 4, "updates at 5, 10, 15, 20 only"
    assert any(not torch.equal(initial[n], layers[n].mask) for n in layers)
    assert sum(float(controller.active_count(n).sum()) for n in layers) == 4 * sum(
        counts[n] for n in layers if counts[n] < layers[n].mask.numel())


def test_growth_uses_the_gradient_of_the_step_being_taken():
    layer = SparseLinear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.1, 0.0, 0.0]]))
    layer.set_mask(torch.tensor([[True, True, False, False]]))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.0)
    controller = PruneGrowController({"w": layer}, resolve_criterion("prune", "magnitude"),
                                    resolve_criterion("grow", "gradient"),
                                    UpdateSchedule(interval=1, drop_fraction=0.5, end=None))
    controller.attach(optimizer)
    layer(torch.tensor([[1.0, 1.0, 1.0, 3.0]])).sum().backward()
    optimizer.step()
    assert layer.mask.tolist() == [[True, False, False, True]], "drop the 0.1 weight, grow the largest gradient"


def test_static_topology_refuses_updates_and_needs_both_criteria():
    layers = sparse_layers(make_net([3, 4]))
    with pytest.raises(ValueError, match="static"):
        PruneGrowController(layers).update(0.1)
    with pytest.raises(ValueError, match="both"):
        PruneGrowController(layers, prune=resolve_criterion("prune", "magnitude"))


def test_bad_drop_fraction_is_a_value_error():
    layers = sparse_layers(make_net([3, 4]))
    controller = PruneGrowController(layers, resolve_criterion("prune", "magnitude"),
                                    resolve_criterion("grow", "random"))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        controller.update(1.0)


def test_controller_counters_round_trip_through_state_dict():
    layers = sparse_layers(make_net([3, 4]))
    controller = PruneGrowController(layers, resolve_criterion("prune", "magnitude"),
                                    resolve_criterion("grow", "random"))
    controller.before_optimizer_step()
    controller.set_progress(0.25)
    restored = PruneGrowController(layers, resolve_criterion("prune", "magnitude"), resolve_criterion("grow", "random"))
    restored.load_state_dict(controller.state_dict())
    assert int(restored.step) == 1 and float(restored.progress) == 0.25


@pytest.mark.parametrize("layout", ["masked", "compact"])
def test_a_non_finite_score_where_it_is_ranked_stops_the_update(layout):
    """A NaN magnitude at an active weight or a NaN gradient at an inactive one (a growth candidate) raises; a NaN
    gradient at an active weight, which no score ranks, does not."""
    def controller_with(nan_at):
        torch.manual_seed(0)
        layer = SparseLinear(8, 8)
        layer.set_mask(torch.rand(8, 8) < 0.4)
        layer.set_backend(layout)
        grad = torch.randn(8, 8)
        mask = layer.mask
        if nan_at == "inactive grad":
            grad[~mask] = float("nan")
        elif nan_at == "active grad":
            grad[mask] = float("nan")
        if layout == "compact":
            layer.accumulate_dense_grad(grad)
        else:
            layer.weight.grad = grad
        if nan_at == "active weight":
            with torch.no_grad():
                layer.trainable_weight().fill_(float("nan"))
        return PruneGrowController({"w": layer}, resolve_criterion("prune", "magnitude"),
                                   resolve_criterion("grow", "gradient"))

    for nan_at in ("active weight", "inactive grad"):
        with pytest.raises(FloatingPointError, match="non-finite topology scores in layer w"):
            controller_with(nan_at).update(0.3)
    controller_with("active grad").update(0.3)
