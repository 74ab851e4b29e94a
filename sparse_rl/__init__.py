"""sparse_rl: dynamic sparse training for SAC and TD3 agents in Stable-Baselines3.

The core (layers, distributions, criteria, schedules, controllers, methods, settings) needs torch
only; the Stable-Baselines3 names below load on first use, so ``import sparse_rl.topology`` serves
any PyTorch RL code without importing SB3.
"""

from __future__ import annotations

import importlib
from typing import Any

from sparse_rl.controller import MaskController
from sparse_rl.criteria import GROW_CRITERIA, PRUNE_CRITERIA, ScoreInputs, grow_criterion, prune_criterion
from sparse_rl.distributions import DISTRIBUTIONS, layer_counts, layer_densities
from sparse_rl.layers import SparseLinear
from sparse_rl.methods import KINDS, METHODS, get_method
from sparse_rl.schedules import UpdateSchedule
from sparse_rl.sparsity import SparsityConfig
from sparse_rl.topology import LayerUpdateStats, TopologyController, init_masks, sparse_layers, update_mask

_SB3_NAMES = {"SparseMetricsCallback", "SparseSACPolicy", "SparseTD3Policy"}


def __getattr__(name: str) -> Any:
    """The Stable-Baselines3-facing names, imported on first use."""
    if name in _SB3_NAMES:
        return getattr(importlib.import_module("sparse_rl.sb3"), name)
    raise AttributeError(f"module 'sparse_rl' has no attribute {name!r}")


__all__ = [
    "DISTRIBUTIONS", "GROW_CRITERIA", "KINDS", "METHODS", "PRUNE_CRITERIA", "LayerUpdateStats", "MaskController",
    "ScoreInputs", "SparseLinear", "SparseMetricsCallback", "SparseSACPolicy", "SparseTD3Policy", "SparsityConfig",
    "TopologyController", "UpdateSchedule", "get_method", "grow_criterion", "init_masks", "layer_counts",
    "layer_densities", "prune_criterion", "sparse_layers", "update_mask",
]
