"""``SparseLoggingCallback``: tells sparse policies how far training is and logs their topology."""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback

from sparse_rl.sb3.policies import SparsePolicyMixin


class SparseLoggingCallback(BaseCallback):
    """Feeds the training progress to a sparse policy's schedules (so ``update_end`` given as a
    fraction of training takes effect) and records, with the environment step as x-axis:
    ``sparsity/density/<net>/<layer>``, ``sparsity/churn/<net>`` and ``sparsity/dead_neurons/<net>``.

    Works with any SB3 model; with a policy that is not sparse it records nothing.
    """

    def _policy(self) -> SparsePolicyMixin | None:
        policy = self.model.policy
        return policy if isinstance(policy, SparsePolicyMixin) else None

    def _on_training_start(self) -> None:
        self._update_progress()

    def _update_progress(self) -> None:
        policy = self._policy()
        total = getattr(self.model, "_total_timesteps", 0)
        if policy is not None and total > 0:
            policy.set_training_progress(min(1.0, self.model.num_timesteps / total))

    def _on_step(self) -> bool:
        self._update_progress()
        return True

    def _on_rollout_end(self) -> None:
        policy = self._policy()
        if policy is None:
            return
        for net, controller in policy.topology_controllers().items():
            for name, layer in controller.layers.items():
                self.logger.record(f"sparsity/density/{net}/{name}", layer.density)
            if controller.last_stats:
                stats = controller.last_stats
                active = {name: controller.layers[name].nnz for name in stats}
                churn = sum(stats[name].churn * active[name] for name in stats) / max(1, sum(active.values()))
                self.logger.record(f"sparsity/churn/{net}", churn)
                self.logger.record(f"sparsity/dead_neurons/{net}", sum(s.dead_neurons for s in stats.values()))
