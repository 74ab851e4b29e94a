"""Sparse versions of sb3-contrib's TQC and CrossQ networks.

As in :mod:`sparse_rl.sb3.networks`, each class is sb3-contrib's own network with its ``nn.Linear``
layers swapped for the method kind's layer at construction. Everything else stays as sb3-contrib
builds it: TQC's quantile heads are the critics' last linear layers (one budget for all heads), and
CrossQ's ``BatchRenorm1d`` layers are not linear layers, so they stay dense (computed by
:class:`~sparse_rl.sb3.batch_renorm.FusedBatchRenorm1d`, the same layer in fewer passes). Every constructor
argument is recorded, so each network can be saved and loaded alone.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from sb3_contrib.common.torch_layers import BatchRenorm
from sb3_contrib.crossq.policies import Actor as CrossQActor
from sb3_contrib.crossq.policies import CrossQCritic
from sb3_contrib.tqc.policies import Actor as TQCActor
from sb3_contrib.tqc.policies import Critic as TQCCritic
from torch import nn

from sparse_rl.deferred_init import linears_on_meta
from sparse_rl.sb3.actor_loss import ActorLossCritic
from sparse_rl.sb3.batch_renorm import fuse_batch_renorm
from sparse_rl.sb3.networks import SparseNetworkMixin
from sparse_rl.sparsity import NetworkSparsity


class SparseContribNetwork(SparseNetworkMixin):
    """Builds the sb3-contrib network ``_base_class`` (the next class in the MRO), then makes it
    sparse with ``sparsity`` (as :class:`~sparse_rl.sb3.networks.SparseSACActor`)."""

    _base_class: type

    def __init__(self, *args: Any, sparsity: NetworkSparsity = NetworkSparsity(), **kwargs: Any) -> None:
        bound = inspect.signature(type(self)._base_class).bind(*args, **kwargs)
        with linears_on_meta() as deferred:
            super().__init__(*args, **kwargs)
        self._base_arguments = dict(bound.arguments)
        self._init_sparsity(sparsity, deferred)
        float_step_counters(self)  # type: ignore[arg-type]  # mixin: sb3-contrib's network, later in the MRO, makes self an nn.Module
        fuse_batch_renorm(self)  # type: ignore[arg-type]  # mixin: as above

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), **self._base_arguments}


def float_step_counters(module: nn.Module) -> None:
    """Store every BatchRenorm step counter as float64 (exact up to 2**53 steps), so the network's
    state dict holds only float tensors, as the masks and controller counters are stored."""
    for layer in module.modules():
        if isinstance(layer, BatchRenorm):
            layer.steps = layer.steps.to(torch.float64)


def gaussian_heads(network: nn.Module) -> list[str]:
    """The output heads of a squashed-Gaussian actor: ``mu`` and, unless gSDE makes it a parameter, ``log_std``."""
    return [name for name in ("mu", "log_std") if isinstance(getattr(network, name, None), nn.Module)]


def critic_heads(network: Any) -> list[str]:
    """The output heads of a multi-head critic: ``qf0`` ... ``qf{n_critics - 1}``."""
    return [f"qf{index}" for index in range(network.n_critics)]


class SparseTQCActor(SparseContribNetwork, TQCActor):
    """sb3-contrib's TQC ``Actor`` with sparse linear layers."""

    _base_class = TQCActor

    def _output_heads(self) -> list[str]:
        return gaussian_heads(self)


class SparseTQCCritic(SparseContribNetwork, ActorLossCritic, TQCCritic):
    """sb3-contrib's TQC ``Critic``: ``n_critics`` quantile networks of ``n_quantiles`` outputs, one
    density budget for all of them; no weight gradients in the actor loss (:mod:`sparse_rl.sb3.actor_loss`)."""

    _base_class = TQCCritic

    def _output_heads(self) -> list[str]:
        return critic_heads(self)


class SparseCrossQActor(SparseContribNetwork, CrossQActor):
    """sb3-contrib's CrossQ ``Actor`` with sparse linear layers; its BatchRenorm layers stay dense."""

    _base_class = CrossQActor

    def _output_heads(self) -> list[str]:
        return gaussian_heads(self)


class SparseCrossQCritic(SparseContribNetwork, ActorLossCritic, CrossQCritic):
    """sb3-contrib's ``CrossQCritic`` with sparse linear layers (one budget for all Q-heads); its
    BatchRenorm layers stay dense; no weight gradients in the actor loss (:mod:`sparse_rl.sb3.actor_loss`)."""

    _base_class = CrossQCritic

    def _output_heads(self) -> list[str]:
        return critic_heads(self)
