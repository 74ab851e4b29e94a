"""sparse_rl: dynamic sparse training for SAC and TD3 agents in Stable-Baselines3.

Every name below loads on first use: the core (layers, criteria, controllers, methods, settings)
needs torch only and the policies need Stable-Baselines3, so ``import sparse_rl.masks`` serves any
PyTorch RL code without importing SB3, and ``import sparse_rl.deploy`` (the numpy runtime of an
exported policy) imports neither.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "MaskController": "controller",
    "GROW_CRITERIA": "criteria", "PRUNE_CRITERIA": "criteria", "ScoreInputs": "criteria",
    "grow_criterion": "criteria", "prune_criterion": "criteria",
    "DISTRIBUTIONS": "distributions", "layer_counts": "distributions", "layer_densities": "distributions",
    "SparseLinear": "layers",
    "KINDS": "methods", "METHODS": "methods", "get_method": "methods",
    "LeanAdam": "optim", "LeanAdamW": "optim",
    "UpdateSchedule": "schedules",
    "SparsityConfig": "sparsity",
    "LayerUpdateStats": "topology", "PruneGrowController": "topology", "init_masks": "topology",
    "sparse_layers": "topology", "update_mask": "topology",
    "SparseMetricsCallback": "sb3", "SparseSACPolicy": "sb3", "SparseTD3Policy": "sb3",
    "SparseTQCPolicy": "sb3", "SparseCrossQPolicy": "sb3",
}
"""Public name -> the submodule that defines it."""

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first use."""
    if name in _HOMES:
        return getattr(importlib.import_module(f"sparse_rl.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'sparse_rl' has no attribute {name!r}")
