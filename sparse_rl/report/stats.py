"""The report's statistics (rliable): IQM and probability of improvement, with stratified-bootstrap CIs."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rliable import library as rly
from rliable import metrics as rly_metrics


def iqm_with_ci(final_returns: Sequence[float], reps: int) -> tuple[float, float, float]:
    """IQM of the final returns and its 95 % stratified-bootstrap CI, with rliable."""
    scores = {"runs": np.asarray(final_returns, dtype=float).reshape(-1, 1)}
    return bootstrap(scores, lambda x: np.array([rly_metrics.aggregate_iqm(x)]), reps)


def bootstrap(scores: dict[str, Any], statistic: Callable[..., np.ndarray], reps: int) -> tuple[float, float, float]:
    """rliable's point estimate of ``statistic`` over ``scores`` (one key) and its 95 % stratified-bootstrap
    CI, the same on every call: rliable draws its resamples from numpy's global generator and ignores the
    ``random_state`` it passes on, so the global generator is seeded for the call and restored after it."""
    saved = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():  # rliable passes arch the random_state it deprecates; not ours to fix
            warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
            point, interval = rly.get_interval_estimates(scores, statistic, reps=reps)
    finally:
        np.random.set_state(saved)
    (key,) = scores
    (low,), (high,) = interval[key]
    return float(point[key][0]), float(low), float(high)


def improvement_probability(x: Sequence[float], y: Sequence[float], reps: int) -> tuple[float, float, float]:
    """P(X > Y), rliable's probability of improvement (the Mann–Whitney statistic over final returns:
    how often a run of X beats a run of Y, ties counting half), with its 95 % stratified-bootstrap CI."""
    scores = {"pair": [np.asarray(x, dtype=float).reshape(-1, 1), np.asarray(y, dtype=float).reshape(-1, 1)]}
    return bootstrap(scores, lambda a, b: np.array([rly_metrics.probability_of_improvement(a, b)]), reps)
