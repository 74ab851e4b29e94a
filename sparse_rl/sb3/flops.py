"""FLOPs of SB3 SAC/TD3 and sb3-contrib TQC/CrossQ models: which layers each network has and which
of them read its input."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import get_action_dim
from torch import nn

from sparse_rl.flops import NetworkFlops, TrainStepFlops, actor_critic_step_flops
from sparse_rl.masks import MaskedLayer, is_masked_layer
from sparse_rl.sb3.actor_loss import ActorLossCritic
from sparse_rl.sb3.algorithms import algorithm_of


def network_flops(network: nn.Module, input_dim: int, extra_forward: int = 0) -> NetworkFlops:
    """The linear layers of an SB3 actor or critic outside its features extractor; the input
    layers are the first linear layer of each top-level block that takes ``input_dim`` features
    directly (not through a layer with parameters, such as CrossQ's BatchRenorm, whose learned
    scale needs that layer's input gradient)."""
    layers: dict[str, nn.Linear] = {}
    input_layers = set()
    for block_name, block in network.named_children():
        if block_name == "features_extractor":
            continue
        linears = [(f"{block_name}.{n}" if n else block_name, m) for n, m in block.named_modules()
                   if isinstance(m, nn.Linear)]
        if linears and linears[0][1].in_features == input_dim and reads_block_input(block, linears[0][1]):
            input_layers.add(linears[0][0])
        layers.update(linears)
    return NetworkFlops(layers, frozenset(input_layers), extra_forward)


def reads_block_input(block: nn.Module, layer: nn.Module) -> bool:
    """Whether no module with parameters of its own comes before ``layer`` in ``block``."""
    for module in block.modules():
        if module is layer:
            return True
        if next(module.parameters(recurse=False), None) is not None:
            return False
    return True


def sde_flops(actor: Any) -> int:
    """gSDE's per-sample FLOPs of a sampled SAC action: the noise ``latent @ exploration_matrix``
    and the variance ``latent² @ std²`` (0 without gSDE)."""
    if not getattr(actor, "use_sde", False):
        return 0
    latent_dim, action_dim = actor.action_dist.latent_sde_dim, actor.action_dist.action_dim
    return 2 * (2 * latent_dim * action_dim)


def model_networks(model: BaseAlgorithm, sampled: bool = True) -> tuple[NetworkFlops, NetworkFlops]:
    """(actor, critic) FLOP views of a SAC, TD3, TQC or CrossQ model; ``sampled``: the actor samples its
    action (training), so gSDE's noise products count."""
    policy: Any = model.policy
    features_dim = policy.actor.features_extractor.features_dim
    actor = network_flops(policy.actor, features_dim, sde_flops(policy.actor) if sampled else 0)
    critic = network_flops(policy.critic, policy.critic.features_extractor.features_dim
                           + get_action_dim(policy.action_space))
    return actor, critic


def model_step_flops(model: BaseAlgorithm, dense: bool = False) -> TrainStepFlops:
    """FLOPs of one gradient step of ``model.train()`` at its current masks (or dense)."""
    actor, critic = model_networks(model)
    algo = algorithm_of(model)
    forwards_per_sample = getattr(getattr(model, "replay_buffer", None), "actor_forwards_per_sample", None)
    bonus_forwards = forwards_per_sample(algo.max_entropy) if forwards_per_sample is not None else 0  # RLx2's
    batch_size: int = getattr(model, "batch_size")  # SAC and TD3 have one; BaseAlgorithm does not say so
    weight_grads = not isinstance(getattr(model.policy, "critic", None), ActorLossCritic)
    return actor_critic_step_flops(algo.name, actor, critic, batch_size, dense, bonus_forwards, weight_grads)


def inference_flops(model: BaseAlgorithm, dense: bool = False) -> int:
    """FLOPs of choosing one deterministic action (actor forward, batch 1)."""
    return model_networks(model, sampled=False)[0].forward(dense)



def counted_layers(model: BaseAlgorithm) -> list[MaskedLayer]:
    """The masked layers whose counts :func:`model_step_flops` and :func:`inference_flops` read: the actor's and
    the critic's (target networks mirror them)."""
    policy: Any = model.policy
    return [module for net in (policy.actor, policy.critic) for module in net.modules() if is_masked_layer(module)]


def flops_key(model: BaseAlgorithm, layers: list[MaskedLayer]) -> tuple:
    """What :func:`model_step_flops` and :func:`inference_flops` of ``model`` depend on that can change while it
    trains, given its :func:`counted_layers`: the policy object, each layer's shape, active count and
    dense-weight-gradient flag, and the replay buffer's extra actor forwards (RLx2's). Two equal keys mean equal
    counts, so a caller recounts only when the key changes."""
    forwards_per_sample = getattr(getattr(model, "replay_buffer", None), "actor_forwards_per_sample", None)
    bonus = forwards_per_sample(algorithm_of(model).max_entropy) if forwards_per_sample is not None else 0
    shapes = tuple((layer.in_features, layer.out_features, layer.nnz, layer.dense_weight_grad) for layer in layers)
    return model.policy, getattr(model, "batch_size", None), bonus, shapes
