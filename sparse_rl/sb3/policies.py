"""``SparseSACPolicy`` and ``SparseTD3Policy``: SB3 policies whose actor, critics and target
networks are sparse and rewire themselves during ``learn()`` with no callback.

Each network's optimizer gets the hooks of the controller its method kind builds
(:mod:`sparse_rl.methods.registry`): before every step the controller counts it, runs what the
method does then (a scheduled topology update scored with the gradient of SB3's own
replay-buffer batch, a regulariser, a prune), and masks the gradient; after the step it
re-masks the weights. Target networks follow every new mask.

Schedules given as a fraction of training learn how far training is from SB3 itself: every
``train()`` call evaluates the algorithm's learning-rate schedule at ``progress_remaining``, and
the policy taps that schedule, so ``model.learn(N)`` alone runs the whole schedule (several
``learn()`` calls with ``reset_num_timesteps=False`` follow SB3's own progress).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, get_actor_critic_arch
from stable_baselines3.common.utils import FloatSchedule
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from sparse_rl.controller import MaskController
from sparse_rl.dormant import DormantMonitor
from sparse_rl.layer_state import convert_state
from sparse_rl.masks import sparse_layers
from sparse_rl.network_layout import set_backend
from sparse_rl.optim import LEAN_OPTIMIZERS
from sparse_rl.sb3.networks import SparseContinuousCritic, SparseSACActor, SparseTD3Actor, actor_outputs
from sparse_rl.sparsity import SPARSITY_KEYS, SparsityConfig
from sparse_rl.width import iso_param_density, widen

RENAMED_SUBMODULES = {"actor_topology.": "actor_controller.", "critic_topology.": "critic_controller."}
"""State-dict prefixes of models saved by sparse_rl 0.1.0, and what they are called now."""


def _same(schedule: Callable[[float], float]) -> Callable[[float], float]:
    return schedule


class ProgressTap:
    """A learning-rate schedule that also tells a policy how far training is.

    SB3 evaluates its schedule at ``progress_remaining`` on every ``train()`` call; the tap passes
    ``1 - progress_remaining`` to the policy and returns the wrapped schedule's value unchanged. It
    holds the policy weakly and pickles as the wrapped schedule, so saved models are unaffected.
    """

    def __init__(self, schedule: Callable[[float], float], policy: SparsePolicyMixin) -> None:
        self.schedule = schedule
        self._policy = weakref.ref(policy)

    def __call__(self, progress_remaining: float) -> float:
        policy = self._policy()
        if policy is not None:
            policy.set_training_progress(min(1.0, max(0.0, 1.0 - progress_remaining)))
        return self.schedule(progress_remaining)

    def __reduce__(self) -> tuple[Any, ...]:
        return _same, (self.schedule,)


class SparsePolicyMixin:
    """What SAC's and TD3's sparse policies share: settings, sparse networks, controllers."""

    sparsity: SparsityConfig
    actor_controller: MaskController
    critic_controller: MaskController
    _base_policy: type
    _actor_class: type
    _critic_class: type = SparseContinuousCritic
    _gaussian_actor: bool = True
    """The actor has a mean and a log-std head (SAC, TQC, CrossQ), not one action head (TD3)."""
    _has_targets: bool = True
    """The algorithm keeps target critics (CrossQ has none)."""
    _default_net_arch: list[int] | dict[str, list[int]] = [256, 256]

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, lr_schedule: Any,
                 **kwargs: Any) -> None:
        given = kwargs.pop("sparsity", None)
        flat = {key: kwargs.pop(key) for key in SPARSITY_KEYS if key in kwargs}
        if given is not None and (flat or not isinstance(given, SparsityConfig)):
            raise ValueError("policy kwarg 'sparsity' takes a SparsityConfig, and then no other sparsity keys "
                             f"(got {type(given).__name__}{' and ' + ', '.join(flat) if flat else ''})")
        self.sparsity = given if given is not None else SparsityConfig.from_kwargs(**flat)
        self._setup_sparsity(observation_space, action_space, kwargs)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)  # type: ignore[call-arg]  # mixin: SACPolicy/TD3Policy, later in the MRO, define it
        if isinstance(lr_schedule, FloatSchedule):  # the algorithm's own schedule object
            lr_schedule.value_schedule = ProgressTap(lr_schedule.value_schedule, self)

    def _setup_sparsity(self, observation_space: spaces.Space, action_space: spaces.Space,
                        kwargs: dict[str, Any]) -> None:
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"sparse SAC/TD3 policies need a Box (continuous) action space, got {action_space}")
        allowed = [p for p in inspect.signature(self._base_policy).parameters
                   if p not in ("observation_space", "action_space", "lr_schedule")]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ValueError(f"unknown policy kwarg(s) {unknown}; allowed: "
                             f"{', '.join([*SPARSITY_KEYS, 'sparsity', *allowed])}")
        if isinstance(observation_space, spaces.Dict) and "features_extractor_class" not in kwargs:
            kwargs["features_extractor_class"] = CombinedExtractor  # what SB3's MultiInputPolicy sets
        self._check_targets()
        self._densities = {network: self.sparsity.network_density(network) for network in ("actor", "critic")}
        multiplier = self.sparsity.width_multiplier
        self._base_net_arch = kwargs.get("net_arch")
        if multiplier > 1:
            self._widen(observation_space, action_space, kwargs)
        optimizer_class = kwargs.get("optimizer_class", torch.optim.Adam)
        if optimizer_class in LEAN_OPTIMIZERS:
            # Adam's exp_avg_sq is exactly 0 at every masked weight, and torch's foreach sqrt is
            # many times slower on tensors holding zeros on common CPUs; the fused kernel is not.
            # The lean class runs that kernel with less Python around it (sparse_rl/optim.py).
            kwargs["optimizer_class"] = LEAN_OPTIMIZERS[optimizer_class]
            kwargs["optimizer_kwargs"] = {"fused": True, **(kwargs.get("optimizer_kwargs") or {})}

    def _widen(self, observation_space: spaces.Space, action_space: spaces.Box, kwargs: dict[str, Any]) -> None:
        """Multiply the hidden widths by ``width_multiplier``; with ``iso_params`` set the densities
        so each network keeps the weight count of its dense version at multiplier 1."""
        if not self.sparsity.kind.holds_density:
            raise ValueError(f"width_multiplier needs a method of fixed density, not {self.sparsity.method!r}")
        multiplier = self.sparsity.width_multiplier
        pi, qf = get_actor_critic_arch(kwargs.get("net_arch") or self._default_net_arch)
        kwargs["net_arch"] = {"pi": widen(pi, multiplier), "qf": widen(qf, multiplier)}
        if self.sparsity.iso_params:
            n_obs, n_act = get_flattened_obs_dim(observation_space), int(action_space.shape[0])
            actor_out = actor_outputs(n_act, self._gaussian_actor, bool(kwargs.get("use_sde")))
            n_critics = kwargs.get("n_critics", 2)
            self._densities = {"actor": iso_param_density(n_obs, pi, actor_out, multiplier),
                               "critic": iso_param_density(n_obs + n_act, qf, self.critic_outputs(kwargs), multiplier,
                                                           n_critics)}

    def _check_targets(self) -> None:
        """Refuse a method whose target rule needs target networks when the algorithm has none."""
        rule = getattr(self.sparsity.settings, "target_rule", "shared")
        if not self._has_targets and rule != "shared":
            raise ValueError(f"method {self.sparsity.method!r} with target_rule {rule!r} prunes target networks, "
                             f"which {self._base_policy.__name__} does not have; allowed here: target_rule='shared'")

    @classmethod
    def critic_outputs(cls, kwargs: dict[str, Any]) -> int:
        """Outputs of one critic head built with policy ``kwargs`` (1; TQC: its quantiles)."""
        return 1

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Any:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)  # type: ignore[attr-defined]  # mixin: SACPolicy/TD3Policy, later in the MRO, define it
        return self._actor_class(**actor_kwargs, **self._network_kwargs("actor")).to(self.device)  # type: ignore[attr-defined]  # mixin: SACPolicy/TD3Policy, later in the MRO, define it

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> Any:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)  # type: ignore[attr-defined]  # mixin: SACPolicy/TD3Policy, later in the MRO, define it
        return self._critic_class(**critic_kwargs, **self._network_kwargs("critic")).to(self.device)  # type: ignore[attr-defined]  # mixin: SACPolicy/TD3Policy, later in the MRO, define it

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]  # mixin: SACPolicy/TD3Policy, later in the MRO, define it
        actor, critic = self.actor, self.critic  # type: ignore[attr-defined]  # mixin: SACPolicy/TD3Policy, later in the MRO, define it
        self.actor_controller = self._make_controller("actor", actor, getattr(self, "actor_target", None),
                                                    actor.optimizer)
        self.critic_controller = self._make_controller("critic", critic, getattr(self, "critic_target", None),
                                                     critic.optimizer)
        for optimizer in (actor.optimizer, critic.optimizer):
            optimizer.register_load_state_dict_pre_hook(self._optimizer_state_in_layout)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Read a ``model.zip`` of sparse_rl 0.1.0, whose controllers were saved as ``actor_topology`` and
        ``critic_topology`` (renamed before the submodules read their keys)."""
        for key in [key for key in state_dict if key.startswith(prefix)]:
            for old, new in RENAMED_SUBMODULES.items():
                if key.startswith(prefix + old):
                    state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]  # mixin: SB3's policy, later in the MRO, defines it

    def _optimizer_state_in_layout(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
        """Convert saved per-element optimizer state to each layer's layout before it loads (a ``model.zip`` of
        the masked release into compact layers, or the reverse)."""
        params = [param for group in optimizer.param_groups for param in group["params"]]
        owners = {id(layer.trainable_weight()): layer for layer in sparse_layers(self).values()}  # type: ignore[arg-type]  # mixin: SB3's policy, later in the MRO, makes self an nn.Module
        for index, slots in state_dict["state"].items():
            layer = owners.get(id(params[int(index)])) if int(index) < len(params) else None
            if layer is not None:
                state_dict["state"][index] = {key: convert_state(layer, slot) for key, slot in slots.items()}

    def set_backend(self, backend: str) -> None:
        """Compute every sparse layer (actor, critics and targets) with ``backend``, converting layouts where it
        needs the other one; the optimizers follow onto the new parameters with their state converted."""
        optimizers = (self.actor.optimizer, self.critic.optimizer)  # type: ignore[attr-defined]  # mixin: SACPolicy/TD3Policy, later in the MRO, define it
        for name in ("actor", "actor_target", "critic", "critic_target"):
            network = getattr(self, name, None)
            if network is not None:
                set_backend(network, backend, optimizers)
                network.sparsity = replace(network.sparsity, backend=backend)
        self.sparsity = replace(self.sparsity, backend=backend)

    def _network_kwargs(self, network: str) -> dict[str, Any]:
        return {"sparsity": self.sparsity.for_network(network, self._densities[network])}

    def _make_controller(self, network: str, online: nn.Module, target: nn.Module | None,
                         optimizer: torch.optim.Optimizer) -> MaskController:
        """The method kind's controller of ``online`` (and ``target``), attached to ``optimizer``
        unless every layer is dense and stays so (a dense baseline runs SB3's plain step)."""
        controller = self.sparsity.kind.make_controller(self.sparsity, network, online, target)
        stays_dense = self.sparsity.is_dense and all(bool(layer.mask.all()) for layer in sparse_layers(online).values())
        if not stays_dense:
            controller.attach(optimizer)
        sparsity = self.sparsity
        monitor = DormantMonitor(controller, online, sparsity.update_interval, sparsity.recycle_dormant,
                                 sparsity.recycle_interval, sparsity.recycle_regrow, sparsity.sparse_init)
        monitor.attach(optimizer, controller_attached=not stays_dense)
        self._dormant_monitors = {**getattr(self, "_dormant_monitors", {}), network: monitor}
        return controller

    def controllers(self) -> dict[str, MaskController]:
        """The controllers by network name (``"actor"``, ``"critic"``)."""
        return {"actor": self.actor_controller, "critic": self.critic_controller}

    def dormant_monitors(self) -> dict[str, DormantMonitor]:
        """The dormant-neuron monitors by network name (``"actor"``, ``"critic"``)."""
        return self._dormant_monitors

    def set_training_progress(self, progress: float) -> None:
        """Fraction of training done, for schedules whose end is a fraction of training (SB3's
        ``learn()`` sets it through the learning-rate schedule; call it from a custom loop)."""
        for controller in self.controllers().values():
            controller.set_progress(progress)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]  # mixin: SACPolicy/TD3Policy, later in the MRO, define it
        data.update(self.sparsity.as_kwargs())
        data["net_arch"] = self._base_net_arch if self._base_net_arch is not None else data["net_arch"]
        return data


class SparseSACPolicy(SparsePolicyMixin, SACPolicy):
    """SB3's ``SACPolicy`` with sparse actor, critics and target critics.

    Use it like ``MlpPolicy``: ``SAC(SparseSACPolicy, env, policy_kwargs=dict(density=0.1))``, or hand down one
    validated :class:`~sparse_rl.sparsity.SparsityConfig` whole: ``policy_kwargs=dict(sparsity=config)``.
    Every field of :class:`~sparse_rl.sparsity.SparsityConfig` is a ``policy_kwargs`` key:
    ``density``, ``actor_density``, ``critic_density``, ``method``, ``distribution``,
    ``dense_layers``, ``dense_output``, ``update_interval``, ``drop_fraction``, ``update_end``,
    ``decay``, ``prune``, ``grow``, ``prune_kwargs``, ``grow_kwargs``, ``backend``,
    ``width_multiplier``, ``iso_params``, and the method kind's own settings
    (``threshold_alpha``, ``actor_threshold_alpha``, ``critic_threshold_alpha`` for ``thresholds``;
    ``halo_xi``, ``halo_psi``, ``prune_start``, ``prune_end`` for ``halo``; ``target_rule`` for
    ``ds-td3``; ``srigl_gamma`` for ``srigl``; ``prune_start``, ``prune_end``, ``gmp_scope`` for
    ``gmp``; ``n_steps``, ``n_step_delay``, ``check_interval``, ``check_size``, ``distance_threshold``, ``min_size``,
    ``shrink_fraction`` for ``rlx2``'s buffer), ``recycle_dormant``, ``recycle_interval``, ``recycle_regrow``
    (ReDo's recycling, methods of fixed weight count); the rest go to ``SACPolicy``. Adam and AdamW default to
    ``fused=True``. With gSDE (``use_sde=True``) the latent network and ``mu`` are sparse; the exploration matrix
    and ``log_std`` are not weights of a linear layer and stay dense. A ``Dict`` observation space
    (goal-conditioned envs, ``HerReplayBuffer``) gets SB3's ``CombinedExtractor``, as
    ``MultiInputPolicy`` does; the extractor's own layers stay dense.
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
    _gaussian_actor = False
