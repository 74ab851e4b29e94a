"""What a method is: a :class:`MethodKind` (a layer class, a controller, the kind's own settings)
and the named :class:`MethodPreset` s of that kind.

A method kind lives in one file under :mod:`sparse_rl.methods` that defines its ``KIND``; one
line in :mod:`sparse_rl.methods.registry` registers it, and with it its presets (the names the
CLI's ``--method`` and ``policy_kwargs["method"]`` accept).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from torch import nn

from sparse_rl.controller import MaskController
from sparse_rl.masks import init_masks

if TYPE_CHECKING:
    from sparse_rl.sparsity import SparsityConfig


@dataclass(frozen=True)
class NoSettings:
    """A method kind with no settings of its own."""


MaskInit = Callable[..., dict[str, int]]
"""``(layers, density, distribution, dense_layers) -> counts``: a network's first masks."""

ControllerFactory = Callable[["SparsityConfig", str, nn.Module, "nn.Module | None"], MaskController]
"""``(settings, network name, online network, target network or None) -> controller``."""


@dataclass(frozen=True)
class MethodPreset:
    """What a method name means: its kind, the criteria that rank weights, and the defaults it
    changes from :class:`~sparse_rl.sparsity.SparsityConfig`'s (``{"drop_fraction": 0.1}``)."""

    name: str
    kind: str
    prune: str | None
    grow: str | None
    paper: str
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def updates_topology(self) -> bool:
        return self.prune is not None


@dataclass(frozen=True)
class MethodKind:
    """How a family of methods keeps sparsity.

    :param name: the kind's name (``prune-grow``, ``thresholds``, ``halo``, ``ds-td3``, ``srigl``, ``gmp``).
    :param layer_class: the linear layer class its networks are built from (``from_dense(linear)``).
    :param make_controller: builds the controller of one network.
    :param presets: the method names of this kind.
    :param settings_class: a frozen dataclass of the kind's own ``policy_kwargs`` keys.
    :param learns_density: the kind learns its density instead of holding a target one.
    :param starts_dense: networks are built dense and pruned later (the target density applies then).
    :param compact: whether its layers may take the compact layout (a count per layer that only topology updates
        change, and targets that share the online pattern); ``auto`` keeps the others on the masked layout.
    :param init_masks: gives a network's layers their first masks (random at each layer's count by default).
    """

    name: str
    layer_class: type[nn.Linear]
    make_controller: ControllerFactory
    presets: tuple[MethodPreset, ...]
    settings_class: type = NoSettings
    learns_density: bool = False
    starts_dense: bool = False
    compact: bool = True
    init_masks: MaskInit = init_masks

    @property
    def holds_density(self) -> bool:
        """Whether networks are built at their target density and keep it (neither pruned later nor learned)."""
        return not (self.learns_density or self.starts_dense)

    @property
    def setting_keys(self) -> tuple[str, ...]:
        """The ``policy_kwargs`` keys of the kind's own settings."""
        return tuple(f.name for f in fields(self.settings_class))
