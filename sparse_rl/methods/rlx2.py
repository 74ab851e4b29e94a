"""RLx2 (Tan et al., ICLR 2023, "RLx2: Training a Sparse Deep Reinforcement Learning Model from Scratch").

Its topology is RigL's (the ``prune-grow`` controller with magnitude prune and gradient growth); what it
adds is a replay buffer (:class:`~sparse_rl.sb3.rlx2.RLx2ReplayBuffer`): n-step targets after a delay and
a capacity that follows how far the policy moved. That buffer's settings are this kind's own
``policy_kwargs`` (:class:`RLx2Settings`), so no other method's config carries them; the algorithm side
builds the buffer from them (:func:`sparse_rl.sb3.rlx2.rlx2_replay_buffer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparse_rl.checks import in_range, is_int
from sparse_rl.layers import SparseLinear
from sparse_rl.methods.kind import MethodKind, MethodPreset
from sparse_rl.methods.prune_grow import prune_grow_controller

if TYPE_CHECKING:
    from sparse_rl.sparsity import SparsityConfig


@dataclass(frozen=True)
class RLx2Settings:
    """RLx2's replay buffer (the paper's values; ``n_step_delay`` scaled to a fraction of training).

    :param n_steps: n of the n-step targets.
    :param n_step_delay: 1-step targets first: an int number of gradient steps, or a float fraction of
        training in [0, 1) (the paper: 300k of 3M steps, 0.1).
    :param check_interval: added environment steps between policy-distance checks.
    :param check_size: oldest stored states the distance is measured on.
    :param distance_threshold: policy distance above which the oldest data is dropped.
    :param min_size: stored steps below which the buffer never shrinks.
    :param shrink_fraction: share of the stored steps one shrink drops, in (0, 1).
    """

    n_steps: int = 3
    n_step_delay: int | float = 0.1
    check_interval: int = 10_000
    check_size: int = 2048
    distance_threshold: float = 0.2
    min_size: int = 50_000
    shrink_fraction: float = 0.1

    def check(self, config: SparsityConfig) -> None:
        """``ValueError`` naming the first setting out of its range."""
        rules = (
            ("n_steps", is_int(self.n_steps, 1), "a positive integer"),
            ("n_step_delay", is_int(self.n_step_delay, 0) or (isinstance(self.n_step_delay, float)
                                                              and in_range(self.n_step_delay, 0, 1, high_open=True)),
             "an integer >= 0 (gradient steps) or a fraction of training in [0, 1)"),
            ("check_interval", is_int(self.check_interval, 1), "a positive integer"),
            ("check_size", is_int(self.check_size, 1), "a positive integer"),
            ("distance_threshold", in_range(self.distance_threshold, 0, math.inf), "a number >= 0"),
            ("min_size", is_int(self.min_size, 0), "an integer >= 0"),
            ("shrink_fraction", in_range(self.shrink_fraction, 0, 1, True, True), "a number in (0, 1)"),
        )
        for name, valid, expected in rules:
            if not valid:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

    def delay_steps(self, total_steps: int) -> int:
        """``n_step_delay`` in gradient steps (a fraction is of ``total_steps``)."""
        delay = self.n_step_delay
        return int(delay * total_steps) if isinstance(delay, float) else delay


KIND = MethodKind(
    name="rlx2",
    layer_class=SparseLinear,
    make_controller=prune_grow_controller,
    presets=(MethodPreset("rlx2", "rlx2", "magnitude", "gradient", "Tan et al. 2023, RLx2 (RigL + multi-step "
                          "targets + policy-aware replay buffer)"),),
    settings_class=RLx2Settings,
)
