"""Everything that knows about Stable-Baselines3."""

from sparse_rl.sb3.callbacks import SparseMetricsCallback
from sparse_rl.sb3.networks import SparseContinuousCritic, SparseSACActor, SparseTD3Actor
from sparse_rl.sb3.policies import SparseSACPolicy, SparseTD3Policy

__all__ = ["SparseContinuousCritic", "SparseMetricsCallback", "SparseSACActor", "SparseSACPolicy",
           "SparseTD3Actor", "SparseTD3Policy"]
