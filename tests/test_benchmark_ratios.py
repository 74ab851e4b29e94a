"""The end-to-end benchmark's ratios and their intervals (``benchmarks/sparse_speed.py``): the order-statistic
interval holds the sample median with the coverage it states, k is the largest that reaches the level, and each table
cell is the ratio of the medians with the interval of the per-round ratios."""

import math
import statistics
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    from sparse_speed import RoundRatios, interval_words, median_interval
finally:
    sys.path.pop(0)

samples = st.lists(st.floats(0.1, 100.0, allow_nan=False), min_size=1, max_size=40)


def binomial_coverage(n, k):
    """P(the k-th smallest < median < the k-th largest) for a continuous distribution, summed term by term."""
    below = sum(math.comb(n, i) for i in range(k)) / 2 ** n
    return 1 - 2 * below


@given(samples, st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_interval_holds_the_sample_median_with_the_largest_k_that_reaches_the_level(values, level):
    low, high, coverage = median_interval(values, level)
    ordered, n = sorted(values), len(values)
    assert low <= statistics.median(values) <= high
    k = ordered.index(low) + 1 if ordered.count(low) == 1 else None
    if k is not None and n > 1:
        assert ordered[n - k] == high
        assert coverage == pytest.approx(max(0.0, binomial_coverage(n, k)))
        reaches = [j for j in range(1, n // 2 + 1) if binomial_coverage(n, j) >= level and j < n - j + 1]
        assert k == (max(reaches) if reaches else 1)


def test_nine_rounds_give_the_second_smallest_and_largest_at_96_percent():
    values = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0]
    assert median_interval(values)[:2] == (2.0, 8.0)
    assert median_interval(values)[2] == pytest.approx(1 - 20 / 512)
    low, high, coverage = median_interval([1.0, 2.0, 3.0, 4.0, 5.0])  # no k reaches 95 %: the extremes, 94 %
    assert (low, high) == (1.0, 5.0) and coverage == pytest.approx(1 - 2 / 32)
    assert median_interval([3.0]) == (3.0, 3.0, 0.0)


def test_an_empty_sample_is_an_error():
    with pytest.raises(ValueError, match="at least one value"):
        median_interval([])


def test_a_cell_is_the_ratio_of_the_medians_with_the_per_round_interval():
    times = {"mlp": [10.0, 11.0, 9.0, 10.0, 12.0, 10.0, 10.5, 9.5, 10.2],
             "auto": [5.0, 5.0, 5.0, 4.0, 6.0, 5.0, 5.0, 5.0, 5.0]}
    ratio = RoundRatios(times)
    per_round = sorted(a / b for a, b in zip(times["mlp"], times["auto"]))
    point = statistics.median(times["mlp"]) / statistics.median(times["auto"])
    assert ratio("mlp", "auto") == f"{point:.2f} [{per_round[1]:.2f}, {per_round[7]:.2f}]"
    assert ratio("sbx", "auto") == "nan"
    assert ratio("mlp", "auto", digits=3).startswith(f"{point:.3f} [")
    assert "2nd smallest and 2nd largest of its 9 per-round ratios" in interval_words(9)
    assert "96% coverage" in interval_words(9)
    assert "the smallest and largest of its 5 per-round ratios" in interval_words(5)
