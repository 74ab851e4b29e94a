"""Value checks that config validation and the method kinds' settings share (``bool`` is never a number here)."""

from __future__ import annotations

import math
from typing import Any


def is_int(value: Any, low: int) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``) at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def in_range(value: Any, low: float, high: float, low_open: bool = False, high_open: bool = False) -> bool:
    """Whether ``value`` is a finite ``int`` or ``float`` (not a ``bool``) within the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
