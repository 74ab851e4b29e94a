"""``SparseTQCPolicy`` and ``SparseCrossQPolicy``: sb3-contrib's TQC and CrossQ policies, sparse.

They drop into sb3-contrib as :class:`~sparse_rl.sb3.policies.SparseSACPolicy` drops into SB3,
through the same mixin (settings, sparse networks, controllers, the learning-rate progress tap):
``TQC(SparseTQCPolicy, env, policy_kwargs=dict(density=0.1, method="rigl"))``.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.crossq.policies import CrossQPolicy
from sb3_contrib.tqc.policies import TQCPolicy

from sparse_rl.sb3.contrib_networks import SparseCrossQActor, SparseCrossQCritic, SparseTQCActor, SparseTQCCritic
from sparse_rl.sb3.policies import SparsePolicyMixin

CROSSQ_ADAM_BETAS = (0.5, 0.999)
"""What ``CrossQPolicy`` gives Adam/AdamW when ``optimizer_kwargs`` is not set."""


class SparseTQCPolicy(SparsePolicyMixin, TQCPolicy):
    """sb3-contrib's ``TQCPolicy`` with sparse actor, quantile critics and target critics.

    ``policy_kwargs`` as for :class:`~sparse_rl.sb3.policies.SparseSACPolicy`, plus TQC's own
    (``n_quantiles``, ...). All quantile networks share one critic density; the target critics
    follow every new mask of the online ones.
    """

    _base_policy = TQCPolicy
    _actor_class = SparseTQCActor
    _critic_class = SparseTQCCritic

    @classmethod
    def critic_outputs(cls, kwargs: dict[str, Any]) -> int:
        """TQC's critic heads output ``n_quantiles`` values each."""
        return int(kwargs.get("n_quantiles", 25))


class SparseCrossQPolicy(SparsePolicyMixin, CrossQPolicy):
    """sb3-contrib's ``CrossQPolicy`` with sparse actor and critics; its BatchRenorm layers stay dense.

    ``policy_kwargs`` as for :class:`~sparse_rl.sb3.policies.SparseSACPolicy`, plus CrossQ's own
    (``batch_norm``, ``batch_norm_momentum``, ...). CrossQ has no target networks, so a target
    rule other than ``shared`` (``ds-td3``'s ``magnitude``) is refused. Adam keeps CrossQ's betas
    (0.5, 0.999) unless ``optimizer_kwargs`` is given.
    """

    _base_policy = CrossQPolicy
    _actor_class = SparseCrossQActor
    _critic_class = SparseCrossQCritic
    _has_targets = False
    _default_net_arch = {"pi": [256, 256], "qf": [1024, 1024]}

    def _setup_sparsity(self, observation_space: spaces.Space, action_space: spaces.Space,
                        kwargs: dict[str, Any]) -> None:
        optimizer_class = kwargs.get("optimizer_class", torch.optim.Adam)
        if kwargs.get("optimizer_kwargs") is None and optimizer_class in (torch.optim.Adam, torch.optim.AdamW):
            kwargs["optimizer_kwargs"] = {"betas": CROSSQ_ADAM_BETAS}
        super()._setup_sparsity(observation_space, action_space, kwargs)
