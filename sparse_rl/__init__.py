"""sparse_rl: dynamic sparse training for SAC and TD3 agents in Stable-Baselines3."""

from sparse_rl.criteria import GROW_CRITERIA, PRUNE_CRITERIA, ScoreInputs, grow_criterion, prune_criterion
from sparse_rl.distributions import DISTRIBUTIONS, layer_counts, layer_densities
from sparse_rl.layers import SparseLinear
from sparse_rl.methods import METHODS, get_method
from sparse_rl.schedules import UpdateSchedule
from sparse_rl.sb3 import SparseLoggingCallback, SparseSACPolicy, SparseTD3Policy, SparsityConfig
from sparse_rl.topology import LayerUpdateStats, TopologyController, init_masks, sparse_layers, update_mask

__all__ = [
    "DISTRIBUTIONS", "GROW_CRITERIA", "METHODS", "PRUNE_CRITERIA", "LayerUpdateStats", "ScoreInputs",
    "SparseLinear", "SparseLoggingCallback", "SparseSACPolicy", "SparseTD3Policy", "SparsityConfig", "TopologyController", "UpdateSchedule", "get_method", "grow_criterion", "init_masks",
    "layer_counts", "layer_densities", "prune_criterion", "sparse_layers", "update_mask",
]
