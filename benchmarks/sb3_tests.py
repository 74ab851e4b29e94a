"""Stable-Baselines3's own SAC and TD3 tests with compact sparse policies standing in for ``"MlpPolicy"``.

::

    python benchmarks/sb3_tests.py [--version 2.9.2] [--workdir DIR] [-- extra pytest args]

Fetches stable-baselines3's sdist with pip and runs the tests of its ``tests/`` directory whose names mention SAC
or TD3 against the *installed* SB3, with this file as a pytest plugin: ``"MlpPolicy"`` and ``"MultiInputPolicy"``
of ``SAC`` and ``TD3`` become :class:`CompactSACPolicy` / :class:`CompactTD3Policy` (density 0.1 on the compact
layout, every layer compact, a topology update every 10 optimizer steps, so the tests' short ``learn()`` calls
re-lay the layers). ``CnnPolicy`` stays SB3's. The exit code is pytest's.

Run on December 3, 2026 (SB3 2.9.2, 2-core Intel Xeon) as
``python benchmarks/sb3_tests.py -- --continue-on-collection-errors``: 138 passed, 10 skipped by SB3's own marks
(CUDA, gSDE/squash combinations, ...), none failed; ``test_utils.py`` was not collected because it imports
``ale_py`` (SB3's Atari extra, not a dependency here). ``test_save_load`` loads random state dicts into the policies:
the compact layers' positions are repaired to valid patterns with a warning, and the originals load back exactly.
"""

from __future__ import annotations

import sys
from typing import Any

from stable_baselines3 import SAC, TD3

from sparse_rl import SparseSACPolicy, SparseTD3Policy

STAND_IN = {"density": 0.1, "backend": "compact", "update_interval": 10}
"""The sparsity settings the stand-in policies add unless a test's ``policy_kwargs`` set them."""
SELECT = "SAC or TD3 or sac or td3"


class CompactSACPolicy(SparseSACPolicy):
    """``SparseSACPolicy`` with :data:`STAND_IN` as defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**STAND_IN, **kwargs})


class CompactTD3Policy(SparseTD3Policy):
    """``SparseTD3Policy`` with :data:`STAND_IN` as defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**STAND_IN, **kwargs})


SAC.policy_aliases = {**SAC.policy_aliases, "MlpPolicy": CompactSACPolicy, "MultiInputPolicy": CompactSACPolicy}
TD3.policy_aliases = {**TD3.policy_aliases, "MlpPolicy": CompactTD3Policy, "MultiInputPolicy": CompactTD3Policy}


if __name__ == "__main__":
    from sb3_contrib_tests import run_upstream_tests

    sys.exit(run_upstream_tests("stable-baselines3", "sb3_tests", SELECT))
