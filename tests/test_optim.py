"""The lean fused Adam/AdamW: torch's floats and state exactly, torch's hooks exactly once, torch's own step where the
fast path does not apply."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import SAC
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from sparse_rl.optim import LeanAdam, LeanAdamW
from sparse_rl.sb3 import SparseSACPolicy

PAIRS = {"adam": (torch.optim.Adam, LeanAdam), "adamw": (torch.optim.AdamW, LeanAdamW)}


def twin_params(seed: int, shapes: list[tuple[int, ...]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    params = [torch.randn(shape, generator=generator) for shape in shapes]
    return ([p.clone().requires_grad_() for p in params], [p.clone().requires_grad_() for p in params])


@settings(max_examples=30)
@given(kind=st.sampled_from(sorted(PAIRS)), seed=st.integers(0, 2**16),
       shapes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=5),
       steps=st.integers(1, 6), lr=st.floats(1e-5, 1e-1), weight_decay=st.sampled_from([0.0, 0.01, 0.1]),
       betas=st.sampled_from([(0.9, 0.999), (0.5, 0.999), (0.0, 0.99)]),
       skipped=st.lists(st.integers(0, 4), max_size=3))
def test_lean_steps_equal_torchs_fused_steps_bit_for_bit(kind, seed, shapes, steps, lr, weight_decay, betas,
                                                         skipped):
    """Parameters and every state tensor equal torch's fused optimizer's exactly after each step, with a learning
    rate changed between steps (as SB3's schedules do) and some parameters left without a gradient on some steps."""
    torch_class, lean_class = PAIRS[kind]
    ours, theirs = twin_params(seed, shapes)
    settings_ = dict(lr=lr, betas=betas, weight_decay=weight_decay)
    lean, reference = lean_class(ours, **settings_), torch_class(theirs, fused=True, **settings_)
    generator = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        for optimizer in (lean, reference):
            optimizer.zero_grad()
            optimizer.param_groups[0]["lr"] = lr / (step + 1)
        for index, (a, b) in enumerate(zip(ours, theirs)):
            if step > 0 and index in skipped:
                continue  # no gradient this step: neither optimizer moves it or counts its step
            grad = torch.randn(a.shape, generator=generator)
            a.grad, b.grad = grad.clone(), grad.clone()
        lean.step()
        reference.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
            for key, value in reference.state[b].items():
                assert torch.equal(lean.state[a][key], value), key


def test_every_step_hook_runs_once_per_step_on_either_path():
    """Global and per-optimizer pre- and post-hooks run once per step, in torch's order, on the fast path and on
    torch's own (the first step initialises state; a closure always takes torch's path)."""
    calls: list[str] = []
    param = torch.ones(3, requires_grad=True)
    optimizer = LeanAdam([param], lr=0.1)
    torch.optim.Adam([torch.ones(1, requires_grad=True)])  # torch wraps Adam.step in its hook runner from now on
    handles = [register_optimizer_step_pre_hook(lambda *_: calls.append("global pre")),
               optimizer.register_step_pre_hook(lambda *_: calls.append("pre")),
               optimizer.register_step_post_hook(lambda *_: calls.append("post")),
               register_optimizer_step_post_hook(lambda *_: calls.append("global post"))]
    try:
        for closure in (None, None, lambda: 0.0):
            calls.clear()
            param.grad = torch.ones(3)
            optimizer.step(closure)
            assert calls == ["global pre", "pre", "post", "global post"]
    finally:
        for handle in handles:
            handle.remove()
    assert optimizer.state[param]["step"].item() == 3


def test_a_pre_hook_may_replace_the_closure():
    param = torch.ones(2, requires_grad=True)
    optimizer = LeanAdam([param])
    param.grad = torch.ones(2)
    optimizer.step()
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: ((opt, lambda: 7.0), kwargs))
    param.grad = torch.ones(2)
    assert optimizer.step() == 7.0


@pytest.mark.parametrize("settings_", [dict(amsgrad=True), dict(maximize=True), dict(fused=False),
                                       dict(lr=torch.tensor(0.01)), dict(float64=True)])
def test_settings_outside_the_fast_path_run_torchs_step(settings_):
    """The floats of torch's own optimizer with the same settings (float64 parameters beside float32 ones: torch
    groups them by dtype), step after step."""
    settings_ = dict(settings_)
    ours, theirs = twin_params(0, [(4, 3), (3,)])
    if settings_.pop("float64", False):
        ours[1], theirs[1] = (p.detach().double().requires_grad_() for p in (ours[1], theirs[1]))
    fused = settings_.get("fused", True)
    lean = LeanAdam(ours, **settings_)
    reference = torch.optim.Adam(theirs, **{"fused": fused, **settings_})
    for _ in range(3):
        for a, b in zip(ours, theirs):
            a.grad = torch.full_like(a, 0.5)
            b.grad = torch.full_like(b, 0.5)
        lean.step()
        reference.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_zero_grad_drops_or_zeroes_gradients_as_torchs_does():
    param = torch.ones(3, requires_grad=True)
    optimizer = LeanAdam([param])
    param.grad = torch.ones(3)
    optimizer.zero_grad(set_to_none=False)
    assert torch.equal(param.grad, torch.zeros(3))
    optimizer.zero_grad()
    assert param.grad is None


def test_state_dicts_load_across_torchs_and_the_lean_optimizer():
    """A state saved by torch's Adam continues in the lean one (and back) with the same floats."""
    ours, theirs = twin_params(3, [(5, 2)])
    reference = torch.optim.Adam(theirs, lr=0.01, fused=True)
    for _ in range(2):
        theirs[0].grad = torch.ones(5, 2)
        reference.step()
    ours[0].data.copy_(theirs[0].data)
    lean = LeanAdam(ours, lr=0.01)
    lean.load_state_dict(copy.deepcopy(reference.state_dict()))  # state_dict() shares the tensors
    for _ in range(2):
        ours[0].grad, theirs[0].grad = torch.ones(5, 2), torch.ones(5, 2)
        lean.step()
        reference.step()
    assert torch.equal(ours[0], theirs[0])
    back = torch.optim.Adam([theirs[0]], lr=0.01, fused=True)
    back.load_state_dict(copy.deepcopy(lean.state_dict()))
    assert torch.equal(back.state[theirs[0]]["exp_avg_sq"], lean.state[ours[0]]["exp_avg_sq"])


def test_sparse_policies_build_the_lean_optimizer_unless_told_otherwise():
    model = SAC(SparseSACPolicy, "Pendulum-v1", policy_kwargs=dict(density=0.5), learning_starts=10, seed=0)
    assert type(model.actor.optimizer) is LeanAdam and type(model.critic.optimizer) is LeanAdam
    model = SAC(SparseSACPolicy, "Pendulum-v1", seed=0,
                policy_kwargs=dict(density=0.5, optimizer_class=torch.optim.AdamW))
    assert type(model.critic.optimizer) is LeanAdamW
    model = SAC(SparseSACPolicy, "Pendulum-v1", seed=0,
                policy_kwargs=dict(density=0.5, optimizer_class=torch.optim.RMSprop))
    assert type(model.critic.optimizer) is torch.optim.RMSprop


def test_a_dense_sb3_policy_trains_with_the_lean_optimizer():
    """``policy_kwargs=dict(optimizer_class=LeanAdam)`` in plain SB3: one counted step per gradient step."""
    model = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(optimizer_class=LeanAdam), learning_starts=50,
                seed=0)
    model.learn(120)
    steps = {state["step"].item() for state in model.critic.optimizer.state.values()}
    assert type(model.critic.optimizer) is LeanAdam and steps == {float(model._n_updates)}
