import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparse_rl.distributions import layer_counts, layer_densities

SHAPES = {"l0": (256, 17), "l1": (256, 256), "l2": (6, 256)}

shape_dicts = st.lists(st.tuples(st.integers(1, 64), st.integers(1, 64)), min_size=1, max_size=5).map(
    lambda shapes: {f"layer{i}": shape for i, shape in enumerate(shapes)})
densities = st.floats(0.01, 1.0)


@given(shapes=shape_dicts, density=densities, distribution=st.sampled_from(["uniform", "er", "erk"]))
def test_totals_match_the_global_density(shapes, density, distribution):
    per_layer = layer_densities(shapes, density, distribution)
    assert all(0.0 < d <= 1.0 + 1e-9 for d in per_layer.values())
    counts = layer_counts(shapes, per_layer)
    total = sum(o * i for o, i in shapes.values())
    assert abs(sum(counts.values()) - round(density * total)) <= len(shapes)
    assert all(1 <= counts[name] <= o * i for name, (o, i) in shapes.items())


@given(density=st.floats(0.05, 1.0))
def test_dense_keep_layers_are_paid_from_the_budget(density):
    total = sum(o * i for o, i in SHAPES.values())
    if density * total < SHAPES["l2"][0] * SHAPES["l2"][1]:
        return
    per_layer = layer_densities(SHAPES, density, "uniform", dense_layers=["l2"])
    assert per_layer["l2"] == 1.0
    counts = layer_counts(SHAPES, per_layer)
    assert abs(sum(counts.values()) - round(density * total)) <= len(SHAPES)


def test_erk_densities_follow_the_formula_and_saturate():
    per_layer = layer_densities(SHAPES, 0.1, "erk")
    assert per_layer["l2"] == 1.0, "the 6x256 output layer would exceed density 1 and becomes dense"
    ratio = per_layer["l0"] / per_layer["l1"]
    assert ratio == pytest.approx(((17 + 256) / (17 * 256)) / ((256 + 256) / (256 * 256)))
    kept = sum(per_layer[n] * o * i for n, (o, i) in SHAPES.items())
    assert kept == pytest.approx(0.1 * sum(o * i for o, i in SHAPES.values()))


def test_uniform_is_uniform_and_density_one_is_dense():
    assert all(d == pytest.approx(0.3) for d in layer_densities(SHAPES, 0.3, "uniform").values())
    assert all(math.isclose(d, 1.0) for d in layer_densities(SHAPES, 1.0, "erk").values())


@pytest.mark.parametrize("density", [0.0, -0.1, 1.01, float("nan"), "0.5", True])
def test_bad_density_is_a_value_error(density):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        layer_densities(SHAPES, density)


def test_unknown_distribution_names_the_allowed_ones():
    with pytest.raises(ValueError, match="uniform, er, erk"):
        layer_densities(SHAPES, 0.5, "gaussian")


def test_dense_name_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match="matches no layer.*l0, l1, l2"):
        layer_densities(SHAPES, 0.5, dense_layers=["head"])


def test_budget_too_small_for_dense_layers_is_an_error():
    with pytest.raises(ValueError, match="too low"):
        layer_densities(SHAPES, 0.01, dense_layers=["l1"])
