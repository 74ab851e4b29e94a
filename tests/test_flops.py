import pytest
import torch
from stable_baselines3 import SAC, TD3
from torch.utils.flop_counter import FlopCounterMode

from sparse_rl import SparseMetricsCallback, SparseSACPolicy, SparseTD3Policy
from sparse_rl.flops import NetworkFlops
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import random_mask
from sparse_rl.sb3.flops import inference_flops, model_step_flops


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("algo, policy", [("sac", "MlpPolicy"), ("sac", SparseSACPolicy), ("td3", "MlpPolicy"),
                                          ("td3", SparseTD3Policy)])
def test_dense_counts_match_flop_counter_on_a_real_sb3_train_step(algo, policy):
    cls = SAC if algo == "sac" else TD3
    kwargs = {"density": 0.3} if policy != "MlpPolicy" else {}
    model = cls(policy, "Pendulum-v1", learning_starts=0, batch_size=32,
                policy_kwargs=dict(net_arch=[24, 16], **kwargs),
                seed=0, device="cpu")
    model.learn(64)
    expected = model_step_flops(model, dense=True)
    if algo == "sac":
        step_flops = counted(lambda: model.train(gradient_steps=1, batch_size=32))
        assert step_flops == expected.critic_step + expected.actor_step
    else:
        model._n_updates = 1  # the next step, number 2, is a delayed actor step (policy_delay = 2)
        step_flops = counted(lambda: model.train(gradient_steps=1, batch_size=32))
        assert step_flops == expected.critic_step + expected.actor_step
        assert counted(lambda: model.train(gradient_steps=1, batch_size=32)) == expected.critic_step
    actor_input = torch.zeros(1, 3)
    assert counted(lambda: model.policy.actor(actor_input)) == inference_flops(model, dense=True)


def test_masked_layers_count_two_flops_per_active_weight_and_sample():
    layer = SparseLinear(10, 4)
    layer.set_mask(random_mask((4, 10), 7))
    net = NetworkFlops({"0": layer}, frozenset({"0"}))
    assert net.forward() == 2 * 7 and net.forward(dense=True) == 2 * 40
    assert net.backward() == 2 * 7, "an input layer computes only its weight gradient"
    assert net.backward(input_grad=True) == 4 * 7
    assert net.dense_weight_grad_extra() == 2 * 33


def test_sparse_step_scales_with_density_and_updates_cost_a_dense_weight_gradient():
    model = SAC(SparseSACPolicy, "Pendulum-v1", policy_kwargs=dict(density=0.1, distribution="uniform"),
                batch_size=256, device="cpu")
    dense, sparse = model_step_flops(model, dense=True), model_step_flops(model)
    ratio = (sparse.critic_step + sparse.actor_step) / (dense.critic_step + dense.actor_step)
    assert ratio == pytest.approx(0.1, abs=0.01)
    critic_weights = sum(m.in_features * m.out_features for m in model.policy.critic.modules()
                         if isinstance(m, torch.nn.Linear))
    assert sparse.critic_controller_update == pytest.approx(2 * 0.9 * critic_weights * 256, rel=0.01)
    assert dense.critic_controller_update == 0
    assert inference_flops(model) / inference_flops(model, dense=True) == pytest.approx(0.1, abs=0.01)


class RecountingCallback(SparseMetricsCallback):
    """The callback without its cache: every count made afresh."""

    def _current_flops(self):
        return model_step_flops(self.model), inference_flops(self.model)


@pytest.mark.parametrize("algo, policy_kwargs", [
    ("sac", dict(density=0.2, update_interval=20)),  # RigL: counts fixed, positions move
    ("sac", dict(method="srigl", density=0.2, update_interval=20)),  # neuron ablation changes the counts
    ("sac", dict(method="thresholds", threshold_alpha=0.05)),  # density learned at every step
    ("td3", dict(density=0.2, update_interval=20)),
])
def test_cached_flop_counts_equal_counts_made_at_every_step(algo, policy_kwargs):
    totals = []
    for callback in (SparseMetricsCallback(), RecountingCallback()):
        cls, policy = (SAC, SparseSACPolicy) if algo == "sac" else (TD3, SparseTD3Policy)
        model = cls(policy, "Pendulum-v1", policy_kwargs=dict(net_arch=[32, 32], **policy_kwargs),
                    learning_starts=50, batch_size=32, seed=0, device="cpu")
        model.learn(300, callback=callback)
        totals.append((callback.train_flops, callback.dense_train_flops, model_step_flops(model)))
    assert totals[0] == totals[1]
