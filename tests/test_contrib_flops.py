"""FLOP accounting of TQC and CrossQ against ``FlopCounterMode`` on real ``train()`` steps."""

import pytest
import torch
from sb3_contrib import TQC, CrossQ
from torch.utils.flop_counter import FlopCounterMode

from sparse_rl import SparseCrossQPolicy, SparseTQCPolicy
from sparse_rl.sb3.flops import inference_flops, model_step_flops


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("algo, policy", [(TQC, "MlpPolicy"), (TQC, SparseTQCPolicy), (CrossQ, "MlpPolicy"),
                                          (CrossQ, SparseCrossQPolicy)])
def test_dense_counts_match_flop_counter_on_a_real_train_step(algo, policy):
    sparse = {"density": 0.3} if policy != "MlpPolicy" else {}
    extra = {"n_quantiles": 5} if algo is TQC else {}
    model = algo(policy, "Pendulum-v1", learning_starts=0, batch_size=32, seed=0, device="cpu",
                 policy_kwargs=dict(net_arch=[24, 16], **extra, **sparse))
    model.learn(64)
    expected = model_step_flops(model, dense=True)
    if algo is CrossQ:  # policy_delay 3: the step after _n_updates = 2 is an actor step, the next one is not
        model._n_updates = 2
    assert counted(lambda: model.train(gradient_steps=1, batch_size=32)) == expected.critic_step + expected.actor_step
    if algo is CrossQ:
        assert counted(lambda: model.train(gradient_steps=1, batch_size=32)) == expected.critic_step
    model.policy.set_training_mode(False)
    assert counted(lambda: model.policy.actor(torch.zeros(1, 3))) == inference_flops(model, dense=True)


def test_crossq_critic_step_pays_the_joint_batch_and_quantile_heads_count_as_layers():
    kwargs = dict(learning_starts=0, batch_size=32, device="cpu")
    crossq = CrossQ("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[24, 16], batch_norm=False), **kwargs)
    step = model_step_flops(crossq, dense=True)
    critic_weights = sum(p.numel() for n, p in crossq.policy.critic.named_parameters() if n.endswith("weight"))
    actor_weights = sum(p.numel() for n, p in crossq.policy.actor.named_parameters() if n.endswith("weight"))
    first_layers = 2 * 24 * (3 + 1)  # both heads' first layers read (obs, action): no input gradient without BRN
    assert step.critic_step == 32 * (2 * actor_weights + 2 * 2 * critic_weights
                                     + 2 * (4 * critic_weights - 2 * first_layers))
    tqc = TQC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[24, 16], n_quantiles=7), **kwargs)
    assert model_step_flops(tqc, dense=True).critic_step > model_step_flops(
        TQC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[24, 16], n_quantiles=1), **kwargs),
        dense=True).critic_step


def test_sparse_crossq_step_scales_with_density():
    model = CrossQ(SparseCrossQPolicy, "Pendulum-v1", batch_size=256, device="cpu",
                   policy_kwargs=dict(density=0.1, distribution="uniform", net_arch=[64, 64]))
    dense, sparse = model_step_flops(model, dense=True), model_step_flops(model)
    assert (sparse.critic_step + sparse.actor_step) / (dense.critic_step + dense.actor_step) == pytest.approx(
        0.1, abs=0.01)
    critic_weights = sum(m.in_features * m.out_features for m in model.policy.critic.modules()
                         if isinstance(m, torch.nn.Linear))
    assert sparse.critic_controller_update == pytest.approx(2 * 0.9 * critic_weights * 2 * 256, rel=0.01)
