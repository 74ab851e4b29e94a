import pytest
import torch

from sparse_rl.criteria import GROW_CRITERIA, PRUNE_CRITERIA, ScoreInputs, resolve_criterion

W = torch.tensor([[0.5, -0.1, 0.2], [-0.7, 0.05, -0.3]])
G = torch.tensor([[0.1, 0.4, -0.2], [0.0, -0.3, 0.6]])
MASK = torch.ones_like(W, dtype=torch.bool)


def inputs(weight=W, grad=G, mask=MASK, active_count=None, update_index=1):
    return ScoreInputs(weight, grad, mask, torch.zeros_like(weight) if active_count is None else active_count,
                       update_index)


def lowest(scores, k, mask=MASK):
    return set(scores.flatten().masked_fill(~mask.flatten(), float("inf")).topk(k, largest=False).indices.tolist())


@pytest.mark.parametrize("name, expected", [
    ("magnitude", W.abs()),
    ("mest", W.abs() + G.abs()),
    ("snip", (W * G).abs()),
    ("sensitivity", G.abs() / (W.abs() + 1e-8)),
    ("reciprocal_sensitivity", W.abs() / (G.abs() + 1e-8)),
])
def test_prune_scores_follow_their_formula(name, expected):
    torch.testing.assert_close(PRUNE_CRITERIA[name](inputs()), expected)


def test_magnitude_removes_the_smallest_weights():
    assert lowest(PRUNE_CRITERIA["magnitude"](inputs()), 2) == {4, 1}


def test_mest_gamma_weights_the_gradient():
    mest = resolve_criterion("prune", "mest", {"gamma": 0.5})
    torch.testing.assert_close(mest(inputs()), W.abs() + 0.5 * G.abs())


def test_set_removes_half_from_each_sign():
    weight = torch.tensor([0.01, 0.02, 0.03, 0.5, -0.9, -0.8, -0.7, -0.6])
    mask = torch.ones_like(weight, dtype=torch.bool)
    scores = PRUNE_CRITERIA["set"](inputs(weight, None, mask))
    assert lowest(scores, 4, mask) == {0, 1, 7, 6}, "two smallest positives and the two negatives closest to 0"
    assert lowest(scores, 2, mask) == {0, 7}


def test_set_takes_the_rest_from_one_sign_when_the_other_runs_out():
    weight = torch.tensor([0.1, 0.2, 0.3, -0.5])
    mask = torch.ones_like(weight, dtype=torch.bool)
    assert lowest(PRUNE_CRITERIA["set"](inputs(weight, None, mask)), 3, mask) == {0, 1, 3}


def test_set_ranks_only_active_weights():
    weight = torch.tensor([0.0, 0.01, 0.5, -0.3, 0.0])
    mask = torch.tensor([False, True, True, True, False])
    assert lowest(PRUNE_CRITERIA["set"](inputs(weight, None, mask)), 2, mask) == {1, 3}


def test_gradient_grows_the_largest_gradients():
    scores = GROW_CRITERIA["gradient"](inputs())
    torch.testing.assert_close(scores, G.abs())
    assert set(scores.flatten().topk(2).indices.tolist()) == {5, 1}


def test_ucb_adds_an_exploration_bonus_for_rarely_active_weights():
    count = torch.tensor([[0.0, 3.0, 1.0], [8.0, 0.0, 2.0]])
    scores = resolve_criterion("grow", "ucb", {"c": 0.2, "eps": 1.0})(inputs(active_count=count, update_index=5))
    expected = G.abs() + 0.2 * torch.sqrt(torch.log(torch.tensor(5.0)) / (count + 1.0))
    torch.testing.assert_close(scores, expected)
    tied = inputs(grad=torch.ones_like(W), active_count=count, update_index=5)
    assert GROW_CRITERIA["ucb"](tied).argmax() in (0, 4), "with equal gradients the never-active weights win"


def test_random_scores_vary_and_follow_the_global_seed():
    torch.manual_seed(3)
    first = GROW_CRITERIA["random"](inputs())
    torch.manual_seed(3)
    assert torch.equal(first, PRUNE_CRITERIA["random"](inputs()))
    assert first.unique().numel() == first.numel()


def test_gradient_criteria_demand_a_gradient():
    for name in ("mest", "snip", "sensitivity", "reciprocal_sensitivity"):
        with pytest.raises(ValueError, match="dense gradient"):
            PRUNE_CRITERIA[name](inputs(grad=None))
    with pytest.raises(ValueError, match="dense gradient"):
        GROW_CRITERIA["gradient"](inputs(grad=None))


def test_unknown_names_and_parameters_list_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: .*magnitude.*set"):
        resolve_criterion("prune", "largest")
    with pytest.raises(ValueError, match="allowed: gradient, random, ucb"):
        resolve_criterion("grow", "magnitude")
    with pytest.raises(ValueError, match="allowed: c, eps"):
        resolve_criterion("grow", "ucb", {"beta": 1})
