"""RLx2's replay buffer (Tan et al., ICLR 2023) on top of SB3's ``NStepReplayBuffer``.

What SB3's ``NStepReplayBuffer`` already does and is used as is: the n-step discounted reward
sum, truncated at the first termination or time-out in the window, with the bootstrap discount
γ^m (m = steps actually used) in ``ReplayBufferSamples.discounts``, which SAC's and TD3's
``train()`` apply. What this module adds:

* a delay: 1-step targets for the first ``n_step_delay`` sampled batches, n-step afterwards;
* SAC's intermediate entropy bonuses, ``Σ_{k=1}^{m-1} γ^k (-α log π(ã_k|s_{t+k}))`` with ã_k
  sampled from the current actor at the stored intermediate states and α SAC's current
  entropy coefficient (the last one, at s_{t+m}, is in SAC's own target already);
* a policy-aware capacity: every ``check_interval`` added steps the policy distance
  ``mean ||μ_now(s) - μ_then(s)||² / 2`` (per action dimension, actions in [-1, 1]) over the
  oldest ``check_size`` stored states is measured, μ_then being the behaviour policy's mean
  action stored with each transition; above ``distance_threshold`` (and above ``min_size``
  stored steps) the oldest ``shrink_fraction`` of the data is dropped. ``buffer_size`` is the
  maximum capacity.

Its settings are method ``rlx2``'s own ``policy_kwargs`` (:class:`~sparse_rl.methods.rlx2.RLx2Settings`);
:func:`rlx2_replay_buffer` turns them into the algorithm's ``replay_buffer_class`` and
``replay_buffer_kwargs``. The buffer needs its model (for the actor, the entropy coefficient and
``learning_starts``): give it with :meth:`RLx2ReplayBuffer.attach` once the model is built, as SB3 gives
``HerReplayBuffer`` its env (``sparse_rl.train`` does both).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.buffers import NStepReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from sparse_rl.methods.rlx2 import RLx2Settings
from sparse_rl.sb3.algorithms import algorithm_of
from sparse_rl.sparsity import SparsityConfig


def sampled_log_prob(actor: Any, states: torch.Tensor) -> torch.Tensor:
    """``log π(ã|s)`` of actions the actor samples at ``states``, with any BatchRenorm layers (CrossQ)
    in eval mode, so the bonus does not move their statistics; their mode is restored after."""
    set_bn_mode = getattr(actor, "set_bn_training_mode", None)
    if set_bn_mode is not None:
        set_bn_mode(False)
    _, log_prob = actor.action_log_prob(states)
    if set_bn_mode is not None:
        set_bn_mode(actor.training)
    return log_prob


class RLx2ReplayBuffer(NStepReplayBuffer):
    """n-step targets after a delay, SAC entropy bonuses, and a capacity that follows policy change.

    :param n_steps: n of the n-step targets (RLx2: 3).
    :param gamma: discount, the algorithm's ``gamma``.
    :param n_step_delay: sampled batches (≈ gradient steps) that use 1-step targets first.
    :param check_interval: added environment steps between policy-distance checks (RLx2: 10,000).
    :param check_size: oldest stored states the distance is measured on (RLx2: 2048).
    :param distance_threshold: policy distance above which the oldest data is dropped (RLx2: 0.2).
    :param min_size: stored steps below which the buffer never shrinks.
    :param shrink_fraction: share of the stored steps dropped by one shrink (RLx2: 0.1).
    """

    def __init__(self, *args: Any, n_steps: int = 3, gamma: float = 0.99, n_step_delay: int = 0,
                 check_interval: int = 10_000, check_size: int = 2048, distance_threshold: float = 0.2,
                 min_size: int = 50_000, shrink_fraction: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, n_steps=n_steps, gamma=gamma, **kwargs)
        if n_steps < 1 or not 0 < gamma < 1:
            raise ValueError(f"need n_steps >= 1 and 0 < gamma < 1, got n_steps={n_steps}, gamma={gamma}")
        if min(check_interval, check_size) < 1 or not 0 < shrink_fraction < 1 or n_step_delay < 0:
            raise ValueError("need check_interval, check_size >= 1, 0 < shrink_fraction < 1 and n_step_delay >= 0")
        self.max_n_steps, self.n_step_delay = n_steps, n_step_delay
        self.check_interval, self.check_size = check_interval, check_size
        self.distance_threshold, self.min_size, self.shrink_fraction = distance_threshold, min_size, shrink_fraction
        self.action_means = np.zeros_like(self.actions)
        self.stored = 0
        """Valid steps: the newest ``stored`` positions before ``pos`` (at most ``buffer_size``)."""
        self.added = 0
        self.batches_sampled = 0
        self.last_distance: float | None = None
        self._model: Any = None
        self._max_entropy = False

    def attach(self, model: Any) -> None:
        """Give the buffer its SB3 model (actor, entropy coefficient, ``learning_starts``)."""
        self._model = model
        self._max_entropy = algorithm_of(model).max_entropy  # looked up once, not per sampled batch

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None  # saved with the model, not inside its buffer
        return state

    def size(self) -> int:
        return self.stored

    def _require_model(self) -> Any:
        if self._model is None:
            raise RuntimeError("RLx2ReplayBuffer needs its model: call model.replay_buffer.attach(model) once the "
                               "model is built (or loaded)")
        return self._model

    def log_values(self) -> dict[str, float]:
        """The buffer's scalars for the logger: stored steps, the n of its targets, the last policy distance."""
        values = {"rlx2/buffer_size": float(self.size()), "rlx2/n_steps": float(self.n_steps)}
        if self.last_distance is not None:
            values["rlx2/policy_distance"] = self.last_distance
        return values

    def actor_forwards_per_sample(self, algo_has_entropy: bool) -> int:
        """Actor forward passes one sampled transition costs (the entropy bonuses of max-entropy algorithms)."""
        return self.n_steps - 1 if algo_has_entropy else 0

    def _mean_actions(self, observations: np.ndarray) -> np.ndarray:
        """The current policy's deterministic actions in [-1, 1] (SB3's buffer action space)."""
        policy = self._require_model().policy
        with torch.no_grad():
            obs = torch.as_tensor(observations, device=policy.device).float()
            return policy._predict(obs, deterministic=True).cpu().numpy()

    def add(self, obs: np.ndarray, next_obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
            done: np.ndarray, infos: list[dict[str, Any]]) -> None:
        model = self._require_model()
        random_phase = model.num_timesteps < model.learning_starts
        self.action_means[self.pos] = np.array(action) if random_phase else self._mean_actions(np.array(obs))
        super().add(obs, next_obs, action, reward, done, infos)
        self.stored = min(self.stored + 1, self.buffer_size)
        self.added += 1
        if self.added % self.check_interval == 0:
            self.adjust_capacity()

    def oldest_indices(self, count: int) -> np.ndarray:
        """Positions of the ``count`` oldest valid steps."""
        return (self.pos - self.stored + np.arange(min(count, self.stored))) % self.buffer_size

    def policy_distance(self) -> float:
        """``mean ||μ_now(s) - μ_then(s)||² / 2`` per action dimension over the oldest stored states."""
        index = self.oldest_indices(self.check_size)
        observations = self.observations[index].reshape(-1, *self.obs_shape)
        then = self.action_means[index].reshape(-1, self.action_dim)
        return float(np.mean((self._mean_actions(observations) - then) ** 2) / 2)

    def adjust_capacity(self) -> bool:
        """Drop the oldest ``shrink_fraction`` of the data if the policy has drifted; True if it did."""
        self.last_distance = self.policy_distance()
        if self.last_distance <= self.distance_threshold or self.stored <= self.min_size:
            return False
        self.stored -= int(self.shrink_fraction * self.stored)
        return True

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """A batch from the valid window (never the position ``pos`` itself, as in SB3)."""
        low = 1 if self.stored == self.buffer_size else 0  # SB3 never samples position pos of a full buffer
        offsets = np.random.randint(low, self.stored, size=batch_size)
        return self._get_samples((self.pos - self.stored + offsets) % self.buffer_size, env=env)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        self.n_steps = 1 if self.batches_sampled < self.n_step_delay else self.max_n_steps
        self.batches_sampled += 1
        state = np.random.get_state()  # the env indices SB3's _get_samples is about to draw
        env_indices = np.random.randint(0, self.n_envs, size=batch_inds.shape)
        np.random.set_state(state)
        samples = super()._get_samples(batch_inds, env)
        self._require_model()
        if self.n_steps == 1 or not self._max_entropy:  # SAC's entropy term
            return samples
        assert samples.discounts is not None  # NStepReplayBuffer always sets them
        return samples._replace(rewards=samples.rewards + self.entropy_bonus(batch_inds, env_indices,
                                                                              samples.discounts, env))

    def entropy_bonus(self, batch_inds: np.ndarray, env_indices: np.ndarray, discounts: torch.Tensor,
                      env: VecNormalize | None = None) -> torch.Tensor:
        """``Σ_{k=1}^{m-1} γ^k (-α log π(ã_k|s_{t+k}))`` per sample, m read off the discount γ^m."""
        model = self._require_model()
        steps_used = torch.round(torch.log(discounts) / math.log(self.gamma))  # [batch, 1]
        ks = np.arange(1, self.n_steps)
        index = (batch_inds[:, None] + ks[None, :]) % self.buffer_size  # [batch, n-1]
        states = np.asarray(self._normalize_obs(self.observations[index, env_indices[:, None]], env))
        states_t = self.to_torch(states.reshape(-1, *self.obs_shape))
        with torch.no_grad():
            log_prob = sampled_log_prob(model.actor, states_t)
            alpha = torch.exp(model.log_ent_coef.detach()) if model.ent_coef_optimizer is not None \
                else model.ent_coef_tensor
        log_prob = log_prob.reshape(len(batch_inds), len(ks))
        discounts_k = self.to_torch(self.gamma ** ks.astype(np.float32))[None, :]
        weights = discounts_k * (self.to_torch(ks)[None, :] < steps_used)
        return (weights * (-alpha * log_prob)).sum(dim=1, keepdim=True)


def rlx2_replay_buffer(sparsity: SparsityConfig, gamma: float, total_steps: int) -> dict[str, Any]:
    """``replay_buffer_class`` and ``replay_buffer_kwargs`` of an algorithm whose policy runs ``sparsity``:
    RLx2's buffer with the method's settings for method ``rlx2``, nothing otherwise."""
    settings = sparsity.settings
    if not isinstance(settings, RLx2Settings):
        return {}
    kwargs = dict(n_steps=settings.n_steps, gamma=gamma, n_step_delay=settings.delay_steps(total_steps),
                  check_interval=settings.check_interval, check_size=settings.check_size,
                  distance_threshold=settings.distance_threshold, min_size=settings.min_size,
                  shrink_fraction=settings.shrink_fraction)
    return {"replay_buffer_class": RLx2ReplayBuffer, "replay_buffer_kwargs": kwargs}
