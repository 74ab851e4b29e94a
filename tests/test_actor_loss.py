"""The sparse critics compute no weight gradients in the algorithms' actor losses, and nothing else changes."""

import pytest
import torch
from sb3_contrib import TQC, CrossQ
from stable_baselines3 import SAC, TD3

from sparse_rl import SparseCrossQPolicy, SparseSACPolicy, SparseTD3Policy, SparseTQCPolicy
from sparse_rl.backends import compact
from sparse_rl.masks import sparse_layers
from sparse_rl.sb3 import actor_loss

ALGOS = {"sac": (SAC, SparseSACPolicy), "td3": (TD3, SparseTD3Policy), "tqc": (TQC, SparseTQCPolicy),
         "crossq": (CrossQ, SparseCrossQPolicy)}


def make(algo, **policy_kwargs):
    cls, policy = ALGOS[algo]
    # 128x128 hidden layers at density 0.1 are compact where the kernels are built; the rest is masked
    kwargs = {"net_arch": [128, 128], "density": 0.1, "update_interval": 40, **policy_kwargs}
    return cls(policy, "Pendulum-v1", policy_kwargs=kwargs, learning_starts=50, batch_size=32, seed=0, device="cpu")


def record_critic_calls(model):
    """(the weights need a gradient, the actions need one) for every grad-enabled layer call inside the critic."""
    calls, actions_need_grad = [], []
    critic = model.policy.critic

    def critic_hook(module, inputs):
        actions_need_grad[:] = [inputs[1].requires_grad]

    def layer_hook(layer, inputs):
        if torch.is_grad_enabled():
            calls.append((layer.trainable_weight().requires_grad, actions_need_grad[0]))

    critic.register_forward_pre_hook(critic_hook)
    if hasattr(critic, "q1_forward"):  # TD3's actor loss calls it, past forward's hooks
        q1_forward = critic.q1_forward

        def q1_forward_recorded(obs, actions):
            critic_hook(critic, (obs, actions))
            return q1_forward(obs, actions)

        critic.q1_forward = q1_forward_recorded
    for layer in sparse_layers(critic).values():
        layer.register_forward_pre_hook(layer_hook)
    return calls


@pytest.mark.parametrize("algo", list(ALGOS))
def test_the_actor_loss_runs_the_critic_with_frozen_weights_and_the_critic_loss_does_not(algo):
    model = make(algo)
    calls = record_critic_calls(model)
    model.learn(120)
    assert (False, True) in calls, "no critic call in the actor loss ran with frozen weights"
    assert (True, False) in calls, "the critic loss must train the critic"
    assert all(weights for weights, actions in calls if not actions), "a critic-loss call ran frozen"
    assert all(parameter.requires_grad for parameter in model.policy.parameters())


@pytest.mark.parametrize("algo, policy_kwargs", [
    ("sac", {}),
    ("sac", {"backend": "masked"}),
    ("sac", {"backend": "compact"}),  # the first layers too: their input gradient for the actions alone
    ("td3", {"backend": "compact"}),
    ("tqc", {"backend": "compact"}),
    ("sac", {"share_features_extractor": True}),  # the critic holds the actor's extractor
    ("sac", {"method": "thresholds", "density": 1.0, "threshold_alpha": 0.05}),
    ("sac", {"recycle_dormant": 0.1, "recycle_interval": 40, "recycle_regrow": True}),
    ("td3", {}),
    ("tqc", {}),
    ("crossq", {}),
])
def test_training_is_bit_for_bit_what_it_was_with_every_gradient(monkeypatch, algo, policy_kwargs):
    """Frozen weights, and the compact first layers' input gradient for the actions' features alone."""
    frozen, skipped = [], []
    original, original_from = actor_loss.called_from_actor_loss, compact.input_grad_from

    def counting(actions):
        answer = original(actions)
        frozen.append(answer)
        return answer

    def counting_from(layer, x):
        skipped.append(original_from(layer, x))
        return skipped[-1]

    monkeypatch.setattr(compact, "input_grad_from", counting_from)

    states = []
    for check in (counting, lambda actions: False):
        monkeypatch.setattr(actor_loss, "called_from_actor_loss", check)
        model = make(algo, **policy_kwargs)
        model.learn(200)
        states.append(model.policy.state_dict())
    assert any(frozen)
    first_layers = [q_net[0] for q_net in model.policy.critic.q_networks]
    if any(getattr(layer, "resolved_backend", None) == "compact" for layer in first_layers):
        assert any(skipped), "the first layers computed the observation's input gradient too"
    assert not any(actor_loss.INPUT_GRAD_FROM in layer.__dict__ for layer in first_layers), "the flags were left"
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_a_critic_called_outside_train_keeps_its_weight_gradients():
    model = make("sac")
    critic = model.policy.critic
    obs = torch.randn(8, 3)
    actions = torch.rand(8, 1, requires_grad=True)  # e.g. a penalty on dQ/da that trains the critic
    sum(q.sum() for q in critic(obs, actions)).backward()
    assert actions.grad is not None
    assert all(parameter.grad is not None for parameter in critic.parameters())
