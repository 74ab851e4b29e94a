"""The critic's pass in the actor's loss computes no critic weight gradients.

SAC's, TD3's, TQC's and CrossQ's ``train()`` run the critic on the actor's actions for the actor's loss. Its backward
pass then computes every critic weight gradient too, which nothing reads: only the actor's optimizer steps after
it, the critic's next ``zero_grad`` discards them, and the controllers score the critic at its own optimizer step,
before this pass. (SBX, the JAX SB3, differentiates the actor's loss with respect to the actor's parameters only.)

The sparse critics (:class:`ActorLossCritic`) skip that work: called from one of those ``train()`` functions with
actions that need a gradient, they run with their parameters' ``requires_grad`` off, so the backward pass computes
the actions' gradient alone, and their Q networks' first layers compute the input gradient of the actions' features
only (:func:`actions_gradient_only`; the observation's features need none). Called from anywhere else (an algorithm
subclass that overrides ``train()``, a loss of the user's own, e.g. a penalty on ``∂Q/∂a`` that trains the critic),
they record every gradient as an SB3 critic does. Training is bit for bit what it was (``tests/test_actor_loss.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any

import torch
from torch import nn

from sparse_rl.algorithms import ALGO_NAMES
from sparse_rl.backends.compact import INPUT_GRAD_FROM
from sparse_rl.sb3.algorithms import algo_class

CALLER_FRAMES = 4
"""How many frames above the critic's method :func:`called_from_actor_loss` looks for ``train()``: ``nn.Module``'s
call machinery (two frames) lies between ``train()`` and ``forward``; none between it and ``q1_forward``."""

_callers: frozenset[CodeType] | None = None


def _actor_loss_callers() -> frozenset[CodeType]:
    """The code of the ``train()`` of every algorithm of :data:`sparse_rl.algorithms.ALGORITHMS`."""
    global _callers
    if _callers is None:
        _callers = frozenset(getattr(algo_class(name), "train").__code__ for name in ALGO_NAMES)
    return _callers


def called_from_actor_loss(actions: torch.Tensor) -> bool:
    """Whether the critic's method that calls this runs on actions that need a gradient, for an algorithm's own
    ``train()`` (the actor's loss: the only such call there)."""
    if not (actions.requires_grad and torch.is_grad_enabled()):
        return False
    callers = _actor_loss_callers()
    frame: FrameType | None = sys._getframe(2)
    for _ in range(CALLER_FRAMES):
        if frame is None:
            return False
        if frame.f_code in callers:
            return True
        frame = frame.f_back
    return False


@contextmanager
def parameters_frozen(module: nn.Module) -> Iterator[None]:
    """``module``'s parameters with ``requires_grad`` off while the block runs (those that had it on)."""
    parameters = [parameter for parameter in module.parameters() if parameter.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


@contextmanager
def actions_gradient_only(critic: nn.Module, actions: torch.Tensor) -> Iterator[None]:
    """While the block runs, the first layer of each of ``critic``'s Q networks (where it is a sparse layer) computes
    its input gradient for the actions' features only: SB3's and sb3-contrib's critics feed it
    ``torch.cat([features, actions], dim=1)``, and in the actor's loss the features need no gradient (the critic's
    parameters are frozen, the observations are data). The layer checks the concatenation itself
    (:func:`sparse_rl.backends.compact.input_grad_from`) and computes every feature's gradient where it is not one."""
    from sparse_rl.layers import SparseLinear  # here: the layers import the backends, which the policies import

    firsts = [q_net[0] for q_net in getattr(critic, "q_networks", ())
              if isinstance(q_net, nn.Sequential) and len(q_net) and isinstance(q_net[0], SparseLinear)]
    for layer in firsts:
        layer.__dict__[INPUT_GRAD_FROM] = layer.in_features - actions.shape[-1]
    try:
        yield
    finally:
        for layer in firsts:
            layer.__dict__.pop(INPUT_GRAD_FROM, None)


class ActorLossCritic:
    """Mixin for a critic whose ``forward(obs, actions)`` records no parameter gradients in an algorithm's actor
    loss, and no gradient for the observation's features (see the module docstring)."""

    def forward(self, obs: Any, actions: torch.Tensor) -> Any:
        if called_from_actor_loss(actions):
            with parameters_frozen(self), actions_gradient_only(self, actions):  # type: ignore[arg-type]  # mixin: the SB3 critic, later in the MRO, makes self an nn.Module
                return super().forward(obs, actions)  # type: ignore[misc]  # mixin: as above
        return super().forward(obs, actions)  # type: ignore[misc]  # mixin: as above


class ActorLossQ1Critic(ActorLossCritic):
    """:class:`ActorLossCritic` for SB3's ``ContinuousCritic``, whose TD3 actor loss calls ``q1_forward``."""

    def q1_forward(self, obs: Any, actions: torch.Tensor) -> torch.Tensor:
        if called_from_actor_loss(actions):
            with parameters_frozen(self), actions_gradient_only(self, actions):  # type: ignore[arg-type]  # mixin: SB3's ContinuousCritic, later in the MRO, makes self an nn.Module
                return super().q1_forward(obs, actions)  # type: ignore[misc]  # mixin: as above
        return super().q1_forward(obs, actions)  # type: ignore[misc]  # mixin: as above
