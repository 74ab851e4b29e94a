"""Prune and grow scores, each a small function looked up by name.

A *prune* score ranks the active weights of a layer (the lowest are removed); a *grow* score
ranks the inactive ones (the highest are added). Every criterion has the signature
``fn(inputs: ScoreInputs, **params) -> Tensor`` and returns a tensor shaped like the weight;
the scores at positions it does not rank are ignored by :mod:`sparse_rl.masks`.
Adding a criterion is one decorated function here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

EPSILON = 1e-8


@dataclass(frozen=True)
class ScoreInputs:
    """What a criterion may look at for one layer at one topology update."""

    weight: torch.Tensor
    grad: torch.Tensor | None
    mask: torch.Tensor
    active_count: torch.Tensor
    """Number of earlier topology updates after which each weight was active (DST-EE's N_i); a 0-d zero for
    criteria not registered with ``needs_counts``, whose controllers keep no counts."""
    update_index: int
    """1-based index of this topology update (DST-EE's t)."""

    def require_grad(self, criterion: str) -> torch.Tensor:
        if self.grad is None:
            raise ValueError(f"criterion {criterion!r} needs the dense gradient, but none was given")
        return self.grad


Criterion = Callable[..., torch.Tensor]
PRUNE_CRITERIA: dict[str, Criterion] = {}
GROW_CRITERIA: dict[str, Criterion] = {}
GRADIENT_CRITERIA: set[str] = set()


def _register(registry: dict[str, Criterion], name: str, needs_grad: bool = False, needs_counts: bool = False):
    def decorate(fn: Criterion) -> Criterion:
        registry[name] = fn
        if needs_grad:
            GRADIENT_CRITERIA.add(name)
        fn.needs_active_count = needs_counts  # type: ignore[attr-defined]
        return fn

    return decorate


def needs_active_count(criterion: Criterion | None) -> bool:
    """Whether ``criterion`` reads :attr:`ScoreInputs.active_count` (then its controller keeps a dense count per
    weight; otherwise it keeps none)."""
    return bool(getattr(getattr(criterion, "func", criterion), "needs_active_count", False))


def prune_criterion(name: str, needs_grad: bool = False, needs_counts: bool = False):
    """Register ``fn`` as the prune score called ``name``."""
    return _register(PRUNE_CRITERIA, name, needs_grad, needs_counts)


def grow_criterion(name: str, needs_grad: bool = False, needs_counts: bool = False):
    """Register ``fn`` as the grow score called ``name``."""
    return _register(GROW_CRITERIA, name, needs_grad, needs_counts)


@prune_criterion("magnitude")
def magnitude(inputs: ScoreInputs) -> torch.Tensor:
    """|θ| (RigL, SET, Fantastic Weights)."""
    return inputs.weight.abs()


@prune_criterion("set")
def set_rule(inputs: ScoreInputs) -> torch.Tensor:
    """SET (Mocanu et al. 2018): remove the positive weights closest to zero and the negative
    weights closest to zero, half each. The score of an active weight is its rank by |θ| among
    the active weights of its own sign (zero counts as positive), so the k lowest scores take
    k/2 from each sign, or more from one sign when the other runs out."""
    weight = inputs.weight
    score = torch.empty_like(weight)
    for sign_group in (inputs.mask & (weight >= 0), inputs.mask & (weight < 0)):
        values = weight[sign_group].abs()
        ranks = torch.empty_like(values)
        ranks[values.argsort()] = torch.arange(values.numel(), dtype=values.dtype, device=values.device)
        score[sign_group] = ranks
    return score


@prune_criterion("signed_fraction")
def signed_fraction(inputs: ScoreInputs) -> torch.Tensor:
    """DS-TD3 (Sokar et al. 2022): remove the same *fraction* of the positive and of the negative
    weights, those closest to zero. The score of an active weight is its rank by |θ| among the
    active weights of its sign, divided by their count, so the k lowest scores take k/n of each sign."""
    score = set_rule(inputs)
    weight = inputs.weight
    for sign_group in (inputs.mask & (weight >= 0), inputs.mask & (weight < 0)):
        score[sign_group] = (score[sign_group] + 1) / max(1, int(sign_group.sum()))
    return score


@prune_criterion("mest", needs_grad=True)
def mest(inputs: ScoreInputs, gamma: float = 1.0) -> torch.Tensor:
    """|θ| + γ|g| (MEST, Yuan et al. 2021)."""
    return inputs.weight.abs() + gamma * inputs.require_grad("mest").abs()


@prune_criterion("snip", needs_grad=True)
def snip(inputs: ScoreInputs) -> torch.Tensor:
    """|θ·g| (SNIP saliency, as compared in Fantastic Weights)."""
    return (inputs.weight * inputs.require_grad("snip")).abs()


@prune_criterion("sensitivity", needs_grad=True)
def sensitivity(inputs: ScoreInputs) -> torch.Tensor:
    """|g| / (|θ| + ε) (Fantastic Weights, appendix)."""
    return inputs.require_grad("sensitivity").abs() / (inputs.weight.abs() + EPSILON)


@prune_criterion("reciprocal_sensitivity", needs_grad=True)
def reciprocal_sensitivity(inputs: ScoreInputs) -> torch.Tensor:
    """|θ| / (|g| + ε) (Fantastic Weights)."""
    return inputs.weight.abs() / (inputs.require_grad("reciprocal_sensitivity").abs() + EPSILON)


@prune_criterion("random")
@grow_criterion("random")
def random_score(inputs: ScoreInputs) -> torch.Tensor:
    """Uniform random scores (SET growth; random-pruning baseline). Uses torch's global RNG."""
    return torch.rand(inputs.weight.shape, device=inputs.weight.device)


@grow_criterion("gradient", needs_grad=True)
def gradient(inputs: ScoreInputs) -> torch.Tensor:
    """|g| of the dense gradient (RigL)."""
    return inputs.require_grad("gradient").abs()


@grow_criterion("ucb", needs_grad=True, needs_counts=True)
def ucb(inputs: ScoreInputs, c: float = 1e-3, eps: float = 1.0) -> torch.Tensor:
    """|g| + c·sqrt(ln t / (N_i + ε)) (DST-EE, Huang et al. 2023): gradient magnitude plus an
    exploration bonus for weights that have rarely been active."""
    bonus = torch.sqrt(torch.log(torch.tensor(float(inputs.update_index))) / (inputs.active_count + eps))
    return inputs.require_grad("ucb").abs() + c * bonus


def resolve_criterion(kind: str, name: str, params: dict | None = None) -> Criterion:
    """The ``kind`` (``"prune"`` or ``"grow"``) criterion ``name`` with its ``params`` bound."""
    registry = {"prune": PRUNE_CRITERIA, "grow": GROW_CRITERIA}[kind]
    if name not in registry:
        raise ValueError(f"unknown {kind} criterion {name!r}; allowed: {', '.join(sorted(registry))}")
    fn = registry[name]
    params = dict(params or {})
    allowed = [p for p in inspect.signature(fn).parameters if p != "inputs"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {kind} criterion {name!r}; "
                         f"allowed: {', '.join(allowed) or 'none'}")
    return partial(fn, **params) if params else fn
