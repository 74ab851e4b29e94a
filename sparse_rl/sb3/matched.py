"""Parameter-matched dense baselines: a narrower dense network with as many weights as a sparse one.

Graesser et al. (2022) ask whether a sparse agent beats simply training a smaller dense one;
answering it needs, for each density, a dense network whose weight count equals the sparse
network's active weights. :func:`matched_net_arch` scales every hidden width of the actor and of
the critic by one factor each (so ``[400, 300]`` stays 4:3) and picks the factor whose weight
count is closest to the sparse network's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import get_actor_critic_arch
from torch import nn

from sparse_rl.flops import active_weights
from sparse_rl.sb3.networks import actor_outputs
from sparse_rl.width import mlp_weights


def scaled_widths(net_arch: Sequence[int], first_width: int) -> list[int]:
    """``net_arch`` scaled so that its first hidden layer is ``first_width`` wide (each ≥ 1)."""
    return [max(1, round(first_width * width / net_arch[0])) for width in net_arch]


def closest_widths(net_arch: Sequence[int], weights_of: Callable[[list[int]], int], target: int) -> list[int]:
    """The scaling of ``net_arch`` (first width 1 .. its own) whose weight count is nearest ``target``."""
    candidates = (scaled_widths(net_arch, first) for first in range(1, net_arch[0] + 1))
    return min(candidates, key=lambda widths: abs(weights_of(widths) - target))


def network_weights(network: nn.Module) -> int:
    """Active weights of every linear layer of ``network``."""
    return sum(active_weights(m) for m in network.modules() if isinstance(m, nn.Linear))


def matched_net_arch(policy_class: Any, observation_space: spaces.Space, action_space: spaces.Box,
                     net_arch: Sequence[int] | dict[str, list[int]], sparsity: dict[str, Any],
                     use_sde: bool = False) -> dict[str, list[int]]:
    """``dict(pi=..., qf=...)`` widths of a dense policy with the active weights of a sparse one.

    :param policy_class: a sparse policy class (``SparseSACPolicy``, ``SparseTD3Policy``,
        ``SparseTQCPolicy``, ``SparseCrossQPolicy``).
    :param net_arch: the sparse policy's hidden widths (one list shared by actor and critic, or ``dict(pi=, qf=)``).
    :param sparsity: the sparse policy's ``policy_kwargs`` (``density`` and the rest; TQC's ``n_quantiles``).
    :param use_sde: gSDE, whose log-std is a parameter and not a layer.

    Only linear weights are matched: CrossQ's BatchRenorm parameters (2 per feature) are not counted.
    """
    sde = {"use_sde": True} if use_sde else {}
    arch = dict(net_arch) if isinstance(net_arch, dict) else list(net_arch)
    sparse = policy_class(observation_space, action_space, lambda _: 0.0, net_arch=arch, **sde, **sparsity)
    pi, qf = get_actor_critic_arch(arch)
    n_obs, n_act = get_flattened_obs_dim(observation_space), int(action_space.shape[0])
    actor_out = actor_outputs(n_act, policy_class._gaussian_actor, use_sde)
    critic_out = policy_class.critic_outputs(sparsity)
    n_critics = len(sparse.critic.q_networks)
    return {
        "pi": closest_widths(pi, lambda w: mlp_weights(n_obs, w, actor_out), network_weights(sparse.actor)),
        "qf": closest_widths(qf, lambda w: mlp_weights(n_obs + n_act, w, critic_out, n_critics),
                             network_weights(sparse.critic)),
    }
