"""Sparse versions of SB3's actor and critic networks.

Each class is SB3's own network whose ``nn.Linear`` layers are ``SparseLinear`` from
construction on, with the sparsity settings as constructor parameters, so SB3 can rebuild it
alone (``model.actor.save(path)`` then ``type(model.actor).load(path)``) and its masks come
back from the state dict. Linear layers inside a features extractor are left dense.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.sac.policies import Actor as SACActor
from stable_baselines3.td3.policies import Actor as TD3Actor
from torch import nn

from sparse_rl.deferred_init import DeferredInit, linears_on_meta
from sparse_rl.distributions import check_density
from sparse_rl.methods import KINDS
from sparse_rl.sb3.actor_loss import ActorLossQ1Critic
from sparse_rl.sparsify import sparsify
from sparse_rl.sparsity import NetworkSparsity


def actor_outputs(action_dim: int, sac: bool, use_sde: bool = False) -> int:
    """Output features of an actor's last layers: SAC's actor has a mean and a log-std head (with
    gSDE the log-std is a parameter, not a layer); TD3's has one action head."""
    return action_dim * (2 if sac and not use_sde else 1)


class SparseNetworkMixin:
    """Turns an SB3 network sparse at construction and records how, for SB3's save/load."""

    sparsity: NetworkSparsity

    def _init_sparsity(self, sparsity: NetworkSparsity, deferred: Mapping[nn.Linear, DeferredInit]) -> None:
        """Make the just-built network sparse; ``deferred``: its linear layers built on the meta device."""
        if sparsity.kind not in KINDS:
            raise ValueError(f"unknown method kind {sparsity.kind!r}; allowed: {', '.join(KINDS)}")
        check_density(sparsity.density)
        self.sparsity = sparsity
        sparsify(self, sparsity, self.output_layer_names(), deferred)  # type: ignore[arg-type]  # mixin: SB3's Actor/ContinuousCritic, later in the MRO, make self an nn.Module

    def output_layer_names(self) -> list[str]:
        """Names of the linear layers that produce the network's outputs (the last one of every head)."""
        return [last_linear(self, head) for head in self._output_heads()]  # type: ignore[arg-type]  # mixin: SB3's Actor/ContinuousCritic, later in the MRO, make self an nn.Module

    def _output_heads(self) -> list[str]:
        raise NotImplementedError

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]  # mixin: SB3's Actor/ContinuousCritic, later in the MRO, make self an nn.Module
        data.update(sparsity=self.sparsity)
        return data

    def train(self, mode: bool = True) -> Any:
        """``nn.Module.train``: ``training`` set to ``mode`` on this network and every submodule, in a fraction of
        its Python. SB3 flips it twice per environment step (``set_training_mode`` in the rollout and in
        ``train()``), and ``nn.Module.__setattr__`` made that about 55 µs per flip for a SAC or TD3 network."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        _flag_tree(self, mode)  # type: ignore[arg-type]  # mixin: as above
        return self


def set_training(module: nn.Module, mode: bool) -> None:
    """What ``module.train(mode)`` does, without ``nn.Module.__setattr__`` where the module's class keeps
    ``nn.Module``'s ``train`` and ``__setattr__``; a module that defines either gets its own ``train`` called."""
    cls = type(module)
    if cls.train is not nn.Module.train or cls.__setattr__ is not nn.Module.__setattr__:
        module.train(mode)
    else:
        _flag_tree(module, mode)


def _flag_tree(module: nn.Module, mode: bool) -> None:
    """``module``'s own ``training`` flag set directly, then each child's by :func:`set_training`."""
    module.__dict__["training"] = mode
    for child in module._modules.values():
        if child is not None:
            set_training(child, mode)


def last_linear(module: nn.Module, head: str) -> str:
    """The qualified name of the last linear layer at or under submodule ``head`` of ``module``."""
    names = [name for name, child in module.named_modules()
             if (name == head or name.startswith(head + ".")) and isinstance(child, nn.Linear)]
    return names[-1]


class SparseSACActor(SparseNetworkMixin, SACActor):
    """SB3's SAC ``Actor`` (``latent_pi``, ``mu``, ``log_std``) with sparse linear layers.

    :param sparsity: how its layers are sparse (:class:`~sparse_rl.sparsity.NetworkSparsity`: density, layer
        distribution, dense layers, the method kind whose layer class replaces every ``nn.Linear``, backend, ...).
    """

    def _output_heads(self) -> list[str]:
        return [name for name in ("mu", "log_std") if isinstance(getattr(self, name, None), nn.Module)]

    def __init__(self, *args: Any, sparsity: NetworkSparsity = NetworkSparsity(), **kwargs: Any) -> None:
        with linears_on_meta() as deferred:
            super().__init__(*args, **kwargs)
        self._init_sparsity(sparsity, deferred)


class SparseTD3Actor(SparseNetworkMixin, TD3Actor):
    """SB3's TD3 ``Actor`` with sparse linear layers (parameters as :class:`SparseSACActor`)."""

    def _output_heads(self) -> list[str]:
        return ["mu"]

    def __init__(self, *args: Any, sparsity: NetworkSparsity = NetworkSparsity(), **kwargs: Any) -> None:
        with linears_on_meta() as deferred:
            super().__init__(*args, **kwargs)
        self._init_sparsity(sparsity, deferred)


class SparseContinuousCritic(SparseNetworkMixin, ActorLossQ1Critic, ContinuousCritic):
    """SB3's ``ContinuousCritic`` with sparse linear layers. All Q-heads share one budget:
    ``density`` is split across the layers of every head together (as in RLx2).

    Unlike SB3's critic it records all its constructor parameters, so ``save``/``load`` of the
    critic alone work, and in SB3's actor loss it computes no weight gradients
    (:mod:`sparse_rl.sb3.actor_loss`).
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, net_arch: list[int],
                 features_extractor: BaseFeaturesExtractor, features_dim: int,
                 activation_fn: type[nn.Module] = nn.ReLU, normalize_images: bool = True, n_critics: int = 2,
                 share_features_extractor: bool = True, sparsity: NetworkSparsity = NetworkSparsity()) -> None:
        with linears_on_meta() as deferred:
            super().__init__(observation_space, action_space, net_arch, features_extractor, features_dim,
                             activation_fn, normalize_images, n_critics, share_features_extractor)
        self.net_arch, self.features_dim, self.activation_fn = net_arch, features_dim, activation_fn
        self._init_sparsity(sparsity, deferred)

    def _output_heads(self) -> list[str]:
        return [f"qf{index}" for index in range(self.n_critics)]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(net_arch=self.net_arch, features_extractor=self.features_extractor,
                    features_dim=self.features_dim, activation_fn=self.activation_fn,
                    n_critics=self.n_critics, share_features_extractor=self.share_features_extractor)
        return data
