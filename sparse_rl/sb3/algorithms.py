"""The classes of :data:`sparse_rl.algorithms.ALGORITHMS`: each algorithm, its SB3 policy and its sparse policy."""

from __future__ import annotations

import importlib
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from sparse_rl.algorithms import ALGORITHMS, Algorithm, get_algorithm


def load_class(path: str) -> Any:
    """The class at ``module:Class``."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def algo_class(name: str) -> type[BaseAlgorithm]:
    """The algorithm class of ``--algo name``."""
    return load_class(get_algorithm(name).algo_class)


def policy_base(name: str) -> type:
    """The SB3 / sb3-contrib policy class that algorithm ``name``'s sparse policy subclasses."""
    return load_class(get_algorithm(name).policy_base)


def sparse_policy(name: str) -> Any:
    """``SparseSACPolicy`` and its siblings, by algorithm name."""
    import sparse_rl.sb3

    return getattr(sparse_rl.sb3, get_algorithm(name).sparse_policy)


def algorithm_of(model: BaseAlgorithm) -> Algorithm:
    """The table's entry of ``model``'s algorithm; ``ValueError`` for an algorithm outside the table."""
    for algorithm in ALGORITHMS.values():
        if isinstance(model, load_class(algorithm.algo_class)):
            return algorithm
    raise ValueError(f"sparse_rl covers {', '.join(a.algo_class.split(':')[1] for a in ALGORITHMS.values())}, "
                     f"not {type(model).__name__}")
