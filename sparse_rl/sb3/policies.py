"""``SparseSACPolicy`` and ``SparseTD3Policy``: SB3 policies whose actor, critics and target
networks are sparse and rewire themselves during ``learn()`` with no callback.

Each network's optimizer gets the hooks of a :class:`~sparse_rl.topology.TopologyController`:
before every step the controller counts it, runs a scheduled topology update scored with the
gradient of the loss that step belongs to (SB3's own replay-buffer batch), and masks the
gradient; after the step it re-masks the weights. Target networks receive every new mask, so
Polyak averaging keeps their masked weights at exactly 0.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from sparse_rl.sb3.config import SPARSITY_KEYS, SparsityConfig
from sparse_rl.sb3.networks import SparseContinuousCritic, SparseSACActor, SparseTD3Actor
from sparse_rl.methods.halo import HaloController, halo_layers
from sparse_rl.methods.thresholds import ThresholdController, threshold_layers
from sparse_rl.topology import TopologyController, sparse_layers

MaskController = TopologyController | ThresholdController | HaloController
"""What keeps one network's sparsity: each has ``layers``, ``last_stats``, ``num_updates``,
``attach(optimizer)`` and ``set_progress(progress)``."""

FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)


class SparsePolicyMixin:
    """What SAC's and TD3's sparse policies share: settings, sparse networks, controllers."""

    sparsity: SparsityConfig
    actor_topology: MaskController
    critic_topology: MaskController
    _base_policy: type
    _actor_class: type

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, lr_schedule: Any,
                 **kwargs: Any) -> None:
        sparsity = {key: kwargs.pop(key) for key in SPARSITY_KEYS if key in kwargs}
        self._setup_sparsity(action_space, sparsity, kwargs)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)  # type: ignore[call-arg]

    def _setup_sparsity(self, action_space: spaces.Space, sparsity: dict[str, Any], kwargs: dict[str, Any]) -> None:
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"sparse SAC/TD3 policies need a Box (continuous) action space, got {action_space}")
        allowed = [p for p in inspect.signature(self._base_policy.__init__).parameters
                   if p not in ("self", "observation_space", "action_space", "lr_schedule")]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ValueError(f"unknown policy kwarg(s) {unknown}; allowed: {', '.join([*SPARSITY_KEYS, *allowed])}")
        if kwargs.get("use_sde"):
            raise ValueError("gSDE (use_sde=True) is not supported by sparse policies")
        self.sparsity = SparsityConfig(**sparsity)
        optimizer_class = kwargs.get("optimizer_class", torch.optim.Adam)
        if optimizer_class in FUSED_OPTIMIZERS:
            # Adam's exp_avg_sq is exactly 0 at every masked weight, and torch's foreach sqrt is
            # many times slower on tensors holding zeros on common CPUs; the fused kernel is not.
            kwargs["optimizer_kwargs"] = {"fused": True, **(kwargs.get("optimizer_kwargs") or {})}

    def make_actor(self, features_extractor=None) -> nn.Module:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)  # type: ignore[attr-defined]
        return self._actor_class(**actor_kwargs, **self._network_kwargs("actor")).to(self.device)  # type: ignore[attr-defined]

    def make_critic(self, features_extractor=None) -> SparseContinuousCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)  # type: ignore[attr-defined]
        return SparseContinuousCritic(**critic_kwargs, **self._network_kwargs("critic")).to(self.device)  # type: ignore[attr-defined]

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]
        actor, critic = self.actor, self.critic  # type: ignore[attr-defined]
        self.actor_topology = self._make_controller("actor", actor, getattr(self, "actor_target", None),
                                                    actor.optimizer)
        self.critic_topology = self._make_controller("critic", critic, self.critic_target,  # type: ignore[attr-defined]
                                                     critic.optimizer)

    def _network_kwargs(self, network: str) -> dict[str, Any]:
        return dict(density=self.sparsity.initial_density(network), distribution=self.sparsity.distribution,
                    dense_layers=self.sparsity.network_dense_layers(network), layer_kind=self.sparsity.layer_kind)

    def _make_controller(self, network: str, online: nn.Module, target: nn.Module | None,
                         optimizer: torch.optim.Optimizer) -> MaskController:
        """The controller that keeps ``online``'s sparsity (and ``target``'s masks) around ``optimizer``."""
        if self.sparsity.layer_kind == "threshold":
            controller: MaskController = ThresholdController(threshold_layers(online),
                                                             self.sparsity.threshold_alpha_of(network))
            controller.attach(optimizer)
            return controller
        if self.sparsity.layer_kind == "halo":
            controller = HaloController(halo_layers(online), self.sparsity.halo_xi, self.sparsity.halo_psi,
                                        self.sparsity.prune_schedule(network),
                                        sparse_layers(target) if target is not None else None)
            controller.attach(optimizer)
            return controller
        criteria = self.sparsity.criteria()
        prune, grow = criteria if criteria else (None, None)
        layers = sparse_layers(online)
        controller = TopologyController(layers, prune, grow, self.sparsity.schedule(),
                                        sparse_layers(target) if target is not None else None)
        if any(not bool(layer.mask.all()) for layer in layers.values()):
            controller.attach(optimizer)
        return controller

    def topology_controllers(self) -> dict[str, MaskController]:
        """The controllers by network name (``"actor"``, ``"critic"``)."""
        return {"actor": self.actor_topology, "critic": self.critic_topology}

    def set_training_progress(self, progress: float) -> None:
        """Fraction of training done, for schedules whose end is a fraction of training."""
        for controller in self.topology_controllers().values():
            controller.set_progress(progress)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(self.sparsity.as_kwargs())
        return data


class SparseSACPolicy(SparsePolicyMixin, SACPolicy):
    """SB3's ``SACPolicy`` with sparse actor, critics and target critics.

    Use it like ``MlpPolicy``: ``SAC(SparseSACPolicy, env, policy_kwargs=dict(density=0.1))``.
    Every field of :class:`~sparse_rl.sb3.config.SparsityConfig` is a ``policy_kwargs`` key
    (``density``, ``actor_density``, ``critic_density``, ``method``, ``distribution``,
    ``dense_layers``, ``update_interval``, ``drop_fraction``, ``update_end``, ``decay``,
    ``prune``, ``grow``, ``prune_kwargs``, ``grow_kwargs``); the rest go to ``SACPolicy``.
    Adam and AdamW default to ``fused=True``. gSDE is not supported.
    """

    _base_policy = SACPolicy
    _actor_class = SparseSACActor


class SparseTD3Policy(SparsePolicyMixin, TD3Policy):
    """SB3's ``TD3Policy`` with sparse actor, critics and both target networks.

    ``policy_kwargs`` as for :class:`SparseSACPolicy`. The actor's schedule counts the actor's own
    (delayed) optimizer steps; the critics' counts theirs.
    """

    _base_policy = TD3Policy
    _actor_class = SparseTD3Actor
