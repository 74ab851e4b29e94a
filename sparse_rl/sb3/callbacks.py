"""``SparseMetricsCallback``: FLOP accounting and topology statistics through SB3's logger."""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from sparse_rl.flops import TrainStepFlops
from sparse_rl.masks import MaskedLayer
from sparse_rl.sb3.flops import counted_layers, flops_key, inference_flops, model_step_flops
from sparse_rl.sb3.policies import SparsePolicyMixin


class SparseMetricsCallback(BaseCallback):
    """Counts training FLOPs and records them and the topology through SB3's logger, x-axis = env steps
    (training needs no callback: the policy learns its progress from SB3's learning-rate schedule):

    - ``flops/train_cumulative``, ``flops/train_per_step`` (mean per gradient step so far),
      ``flops/inference_per_action``, ``flops/train_vs_dense`` (cumulative, against the dense
      network of the same architecture); a dense SAC/TD3 model (``MlpPolicy``) logs the same tags;
    - for sparse policies: ``sparsity/density/<net>/<layer>``, ``sparsity/churn/<net>`` (share of
      active weights new at the last topology update), ``sparsity/dead_neurons/<net>``;
    - for sparse policies, every method: ``sparsity/dormant/<net>/tau0`` and ``.../tau0.1`` (share of
      hidden neurons τ-dormant on the last measured replay batch, dead ones apart), ``.../dead`` (share
      with no incoming weight) and, with ``recycle_dormant``, ``.../recycled`` (neurons recycled so far);
    - a replay buffer's own scalars, where it has a ``log_values()``: with
      :class:`~sparse_rl.sb3.rlx2.RLx2ReplayBuffer` ``rlx2/buffer_size``, ``rlx2/policy_distance``,
      ``rlx2/n_steps``.

    The cumulative counts are attributes too (``train_flops``, ``dense_train_flops``) and are
    restored from the logger-independent ``flops_state`` when a run resumes.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.train_flops = 0.0
        self.dense_train_flops = 0.0
        self._counted = {"critic": 0, "actor": 0, "critic_updates": 0, "actor_updates": 0}
        self._dense_step: TrainStepFlops | None = None
        self._counted_of: nn.Module | None = None
        self._counted_layers: list[MaskedLayer] = []
        self._counts: tuple[tuple, TrainStepFlops, int] | None = None

    def _policy(self) -> SparsePolicyMixin | None:
        policy = self.model.policy
        return policy if isinstance(policy, SparsePolicyMixin) else None

    def flops_state(self) -> dict[str, float | int]:
        """What resuming a run needs to continue the cumulative counts."""
        return {"train_flops": self.train_flops, "dense_train_flops": self.dense_train_flops, **self._counted}

    def load_flops_state(self, state: dict[str, float | int]) -> None:
        self.train_flops = float(state["train_flops"])
        self.dense_train_flops = float(state["dense_train_flops"])
        self._counted = {key: int(state[key]) for key in self._counted}

    def _on_training_start(self) -> None:
        self._dense_step = model_step_flops(self.model, dense=True)
        self.logger.record("flops/inference_per_action_dense", inference_flops(self.model, dense=True))

    def _optimizer_counts(self) -> dict[str, int]:
        """Optimizer steps and topology updates so far, per network."""
        critic_steps = self.model._n_updates
        delay = getattr(self.model, "policy_delay", 1)
        counts = {"critic": critic_steps, "actor": critic_steps // delay, "critic_updates": 0, "actor_updates": 0}
        policy = self._policy()
        if policy is not None and policy.sparsity.grow_uses_dense_gradient():
            for net, controller in policy.controllers().items():
                counts[f"{net}_updates"] = int(controller.num_updates)
        return counts

    def _current_flops(self) -> tuple[TrainStepFlops, int]:
        """The model's step and inference FLOPs at its current topology, recounted only when the topology changed
        (a full count walks every layer in Python: 0.8-0.9 ms, a tenth of a sparse SAC step on HalfCheetah, and
        this runs after every environment step)."""
        if self._counted_of is not self.model.policy:
            self._counted_of, self._counted_layers = self.model.policy, counted_layers(self.model)
        key = flops_key(self.model, self._counted_layers)
        if self._counts is None or self._counts[0] != key:
            self._counts = (key, model_step_flops(self.model), inference_flops(self.model))
        return self._counts[1], self._counts[2]

    def _accumulate_flops(self, sparse: TrainStepFlops) -> None:
        counts = self._optimizer_counts()
        new = {key: counts[key] - self._counted[key] for key in counts}
        if not any(new.values()):
            return
        dense = self._dense_step
        assert dense is not None
        self.train_flops += (new["critic"] * sparse.critic_step + new["actor"] * sparse.actor_step
                             + new["critic_updates"] * sparse.critic_controller_update
                             + new["actor_updates"] * sparse.actor_controller_update)
        self.dense_train_flops += new["critic"] * dense.critic_step + new["actor"] * dense.actor_step
        self._counted = counts

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        step_flops, inference = self._current_flops()
        self._accumulate_flops(step_flops)
        steps = max(1, self._counted["critic"])
        self.logger.record("flops/train_cumulative", self.train_flops)
        self.logger.record("flops/train_per_step", self.train_flops / steps)
        self.logger.record("flops/inference_per_action", inference)
        if self.dense_train_flops > 0:
            self.logger.record("flops/train_vs_dense", self.train_flops / self.dense_train_flops)
        for key, value in getattr(getattr(self.model, "replay_buffer", None), "log_values", dict)().items():
            self.logger.record(key, value)  # a replay buffer with scalars of its own (RLx2's)
        policy = self._policy()
        if policy is None:
            return
        for net, controller in policy.controllers().items():
            for name, layer in controller.layers.items():
                self.logger.record(f"sparsity/density/{net}/{name}", layer.density)
            for key, value in controller.log_values().items():
                self.logger.record(f"sparsity/{key}/{net}", value)
            for key, value in policy.dormant_monitors()[net].log_values().items():
                self.logger.record(f"sparsity/dormant/{net}/{key}", value)
            if controller.last_stats:
                stats = controller.last_stats
                active = {name: controller.layers[name].nnz for name in stats}
                churn = sum(stats[name].churn * active[name] for name in stats) / max(1, sum(active.values()))
                self.logger.record(f"sparsity/churn/{net}", churn)
                self.logger.record(f"sparsity/dead_neurons/{net}", sum(s.dead_neurons for s in stats.values()))

    def _on_training_end(self) -> None:
        self._on_rollout_end()
