"""Everything that knows about Stable-Baselines3 (and sb3-contrib's TQC and CrossQ)."""

from sparse_rl.sb3.callbacks import SparseMetricsCallback
from sparse_rl.sb3.contrib_policies import SparseCrossQPolicy, SparseTQCPolicy
from sparse_rl.sb3.networks import SparseContinuousCritic, SparseSACActor, SparseTD3Actor
from sparse_rl.sb3.policies import SparseSACPolicy, SparseTD3Policy

__all__ = ["SparseContinuousCritic", "SparseCrossQPolicy", "SparseMetricsCallback", "SparseSACActor",
           "SparseSACPolicy", "SparseTD3Actor", "SparseTD3Policy", "SparseTQCPolicy"]
