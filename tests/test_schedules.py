import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparse_rl.schedules import UpdateSchedule


def test_updates_every_interval_until_the_end_step():
    schedule = UpdateSchedule(interval=10, drop_fraction=0.3, end=50)
    assert [s for s in range(1, 80) if schedule.is_update_step(s)] == [10, 20, 30, 40]


def test_end_as_fraction_uses_progress_and_is_open_ended_without_it():
    schedule = UpdateSchedule(interval=10, end=0.8)
    assert schedule.is_update_step(10, progress=0.79)
    assert not schedule.is_update_step(10, progress=0.8)
    assert schedule.is_update_step(10_000, progress=None)
    assert schedule.drop_fraction_at(10_000, progress=None) == schedule.drop_fraction


@given(alpha=st.floats(0.0, 0.99), step=st.integers(0, 1000))
def test_cosine_decay_formula(alpha, step):
    schedule = UpdateSchedule(interval=1, drop_fraction=alpha, end=1000)
    assert schedule.drop_fraction_at(step) == pytest.approx(alpha / 2 * (1 + math.cos(math.pi * step / 1000)))


def test_constant_decay_and_decay_with_progress():
    assert UpdateSchedule(drop_fraction=0.3, end=100, decay="constant").drop_fraction_at(99) == 0.3
    schedule = UpdateSchedule(drop_fraction=0.5, end=0.5)
    assert schedule.drop_fraction_at(1, progress=0.25) == pytest.approx(0.25)


@pytest.mark.parametrize("kwargs, message", [
    ({"interval": 0}, "positive integer"),
    ({"drop_fraction": 1.0}, r"\[0, 1\)"),
    ({"drop_fraction": -0.1}, r"\[0, 1\)"),
    ({"end": 1.5}, r"\(0, 1\]"),
    ({"end": -3}, "positive"),
    ({"decay": "linear"}, "cosine, constant"),
])
def test_bad_settings_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UpdateSchedule(**kwargs)
