"""Everything that knows about Stable-Baselines3."""

from sparse_rl.sb3.callbacks import SparseLoggingCallback
from sparse_rl.sb3.config import SparsityConfig
from sparse_rl.sb3.networks import SparseContinuousCritic, SparseSACActor, SparseTD3Actor
from sparse_rl.sb3.policies import SparseSACPolicy, SparseTD3Policy

__all__ = ["SparseContinuousCritic", "SparseLoggingCallback", "SparseSACActor", "SparseSACPolicy",
           "SparseTD3Actor", "SparseTD3Policy", "SparsityConfig"]
