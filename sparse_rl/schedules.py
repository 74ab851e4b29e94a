"""When the topology changes and by how much.

Updates happen every ``interval`` optimizer steps of the network. The drop fraction is either
constant or decays with a cosine, α_t = α/2 · (1 + cos(π t / T_end)) (RigL), and no update
happens at or after T_end. The end can be given as an absolute step count or as a fraction of
training; a fraction needs the training progress, which the SB3 callback or CLI supplies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DECAYS = ("cosine", "constant")


def check_drop_fraction(value: float) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` unless it lies in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"drop_fraction must be a number in [0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class UpdateSchedule:
    """Prune-and-regrow schedule.

    :param interval: ΔT, optimizer steps between topology updates (> 0).
    :param drop_fraction: α, the fraction of active weights replaced at the first update, in [0, 1).
    :param end: T_end: an ``int`` optimizer step, or a ``float`` fraction of training in (0, 1];
        ``None`` for no end (the drop fraction then stays constant).
    :param decay: ``"cosine"`` (RigL) or ``"constant"``.
    """

    interval: int = 1000
    drop_fraction: float = 0.5
    end: int | float | None = 0.8
    decay: str = "cosine"

    def __post_init__(self) -> None:
        if isinstance(self.interval, bool) or not isinstance(self.interval, int) or self.interval <= 0:
            raise ValueError(f"update_interval must be a positive integer, got {self.interval!r}")
        check_drop_fraction(self.drop_fraction)
        if self.decay not in DECAYS:
            raise ValueError(f"unknown decay {self.decay!r}; allowed: {', '.join(DECAYS)}")
        if self.end is not None:
            if isinstance(self.end, bool) or not isinstance(self.end, (int, float)):
                raise ValueError("update_end must be an int step, a float fraction in (0, 1] or None, "
                                 f"got {self.end!r}")
            if isinstance(self.end, float) and not 0.0 < self.end <= 1.0:
                raise ValueError(f"update_end as a fraction must lie in (0, 1], got {self.end!r}")
            if isinstance(self.end, int) and self.end <= 0:
                raise ValueError(f"update_end as a step must be positive, got {self.end!r}")

    def _position(self, step: int, progress: float | None) -> float | None:
        """How far through the update phase we are, in [0, ∞), or ``None`` when unknown."""
        if self.end is None:
            return None
        if isinstance(self.end, int):
            return step / self.end
        return None if progress is None else progress / self.end

    def is_update_step(self, step: int, progress: float | None = None) -> bool:
        """Whether optimizer step ``step`` (1-based) updates the topology."""
        if step <= 0 or step % self.interval != 0:
            return False
        position = self._position(step, progress)
        return position is None or position < 1.0

    def drop_fraction_at(self, step: int, progress: float | None = None) -> float:
        """α_t at optimizer step ``step`` given training ``progress`` in [0, 1] (if known)."""
        position = self._position(step, progress)
        if position is None or self.decay == "constant":
            return self.drop_fraction
        if position >= 1.0:
            return 0.0
        return self.drop_fraction / 2.0 * (1.0 + math.cos(math.pi * position))
