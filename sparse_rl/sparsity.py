"""The sparsity settings of a sparse network pair (actor, critics), validated in one place.

:class:`SparsityConfig` holds the settings every method shares (densities, layer distribution,
update schedule, criteria, execution backend, width) and the settings of the method's kind,
which that kind declares (:attr:`~sparse_rl.methods.kind.MethodKind.settings_class`). Every
field is a flat ``policy_kwargs`` key; build one with :meth:`SparsityConfig.from_kwargs`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sparse_rl.backends import check_backend
from sparse_rl.criteria import GRADIENT_CRITERIA, Criterion, resolve_criterion
from sparse_rl.distributions import DISTRIBUTIONS, check_density
from sparse_rl.methods.kind import MethodKind, MethodPreset
from sparse_rl.methods.registry import KINDS, get_method
from sparse_rl.schedules import UpdateSchedule

NETWORKS = ("actor", "critic")


@dataclass(frozen=True)
class NetworkSparsity:
    """One network's share of a :class:`SparsityConfig`: what its layers are built with (the sparse
    networks' one sparsity constructor parameter, recorded for SB3's save/load of a network alone).

    :param density: the network's density (1.0 for a kind that starts dense or learns its density).
    :param distribution: how the density is split over its layers.
    :param dense_layers: ``fnmatch`` patterns of its layers kept dense (without the network prefix).
    :param kind: the method kind whose layer class replaces every ``nn.Linear``.
    :param dense_output: keep its output layers dense, from the same budget.
    :param backend: how its sparse layers store and compute.
    :param sparse_init: rescale each neuron's initial weights to its active fan-in.
    """

    density: float = 1.0
    distribution: str = "erk"
    dense_layers: tuple[str, ...] = ()
    kind: str = "prune-grow"
    dense_output: bool = False
    backend: str = "auto"
    sparse_init: bool = False


@dataclass(frozen=True)
class SparsityConfig:
    """Sparsity settings of a sparse SAC/TD3 policy (every field but ``settings`` is a ``policy_kwargs`` key).

    :param density: global fraction of active weights, in (0, 1]; 1.0 gives a dense agent.
    :param actor_density: the actor's own density (default: ``density``).
    :param critic_density: the critics' density, one budget for all Q-heads (default: ``density``).
    :param method: a method name of :data:`sparse_rl.methods.METHODS` (``rigl``, ``set``, ``mest``,
        ``dst-ee``, ``static``, ``dense``, ``rlx2``, ``thresholds``, ``halo``, ``ds-td3``, ``srigl``, ``gmp``).
    :param distribution: how a network's density is split over its layers: ``uniform``, ``er``, ``erk``.
    :param dense_layers: ``fnmatch`` patterns, prefixed with the network, of layers kept dense,
        e.g. ``("actor.mu", "critic.qf*.4")``; they are paid for from the same budget.
    :param dense_output: keep every network's output layers dense (DS-TD3), from the same budget.
    :param update_interval: ΔT, optimizer steps of a network between its topology updates.
    :param drop_fraction: α, fraction of active weights replaced at the first update, in [0, 1).
    :param update_end: last update point: an int optimizer step, or a float fraction of training
        (SB3's ``learn()`` tells the policy its progress); ``None`` never stops.
    :param decay: drop-fraction decay, ``cosine`` or ``constant``.
    :param prune: prune criterion overriding the method's (e.g. ``snip`` for a Fantastic-Weights study).
    :param grow: grow criterion overriding the method's.
    :param prune_kwargs: parameters of the prune criterion (e.g. ``{"gamma": 1.0}`` for ``mest``).
    :param grow_kwargs: parameters of the grow criterion (e.g. ``{"c": 1e-3}`` for ``ucb``).
    :param backend: how sparse layers store and compute (:data:`sparse_rl.backends.BACKENDS`): ``compact``
        (active values only, this package's kernels), ``masked`` (dense kernels on masked weights), ``sparse``
        (MKL's CSR on masked weights) or ``auto`` (per layer, :mod:`sparse_rl.backends.auto`).
    :param sparse_init: sparse-aware initialisation: each output neuron's initial weights are rescaled by
        sqrt(dense fan-in / active fan-in), so its pre-activation variance matches the dense layer's.
    :param width_multiplier: every hidden width is multiplied by this integer (>= 1).
    :param iso_params: set the density so the widened network has the weight count of the dense
        network at width multiplier 1 (needs ``width_multiplier`` > 1 and ``density`` 1.0).
    :param recycle_dormant: τ of ReDo's recycling (Sokar et al. 2023): every ``recycle_interval``
        optimizer steps, the neurons whose mean |activation| on the replay batch, over their layer's
        mean, is ≤ τ get their active incoming weights re-initialised (masks kept) and their outgoing
        weights zeroed, Adam moments reset; ``None`` (default) recycles nothing. Methods of fixed
        weight count only.
    :param recycle_interval: optimizer steps between recyclings.
    :param recycle_regrow: a recycled neuron's incoming connections also move to where its weight
        gradient is largest (its fan-in kept).
    :param settings: the method kind's own settings (``threshold_alpha`` for ``thresholds``,
        ``halo_xi`` for ``halo``, ``target_rule`` for ``ds-td3``, RLx2's buffer settings for ``rlx2``), flat keys
        in ``policy_kwargs``.
    """

    density: float = 1.0
    actor_density: float | None = None
    critic_density: float | None = None
    method: str = "rigl"
    distribution: str = "erk"
    dense_layers: tuple[str, ...] = ()
    dense_output: bool = False
    update_interval: int = 1000
    drop_fraction: float = 0.5
    update_end: int | float | None = 0.8
    decay: str = "cosine"
    prune: str | None = None
    grow: str | None = None
    prune_kwargs: dict[str, Any] = field(default_factory=dict)
    grow_kwargs: dict[str, Any] = field(default_factory=dict)
    backend: str = "auto"
    sparse_init: bool = False
    width_multiplier: int = 1
    iso_params: bool = False
    recycle_dormant: float | None = None
    recycle_interval: int = 1000
    recycle_regrow: bool = False
    settings: Any = None

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SparsityConfig:
        """Settings from flat ``policy_kwargs`` keys: the method preset's defaults, then ``kwargs``;
        the kind's own keys go to its settings. ``ValueError`` for a key of another method's kind."""
        preset = get_method(kwargs.get("method", "rigl"))
        kind = KINDS[preset.kind]
        values = {**preset.defaults, **kwargs}
        own = {key: values.pop(key) for key in kind.setting_keys if key in values}
        for key in values:
            if key not in COMMON_KEYS:
                owners = [k for k in KINDS.values() if key in k.setting_keys]
                if not owners:
                    raise ValueError(f"unknown sparsity setting {key!r}; allowed: {', '.join(SPARSITY_KEYS)}")
                methods = [p.name for k in owners for p in k.presets]
                raise ValueError(f"{key!r} is a setting of method {' / '.join(methods)}, not of {preset.name!r}"
                                 + (f" (whose own settings are {', '.join(kind.setting_keys)})"
                                    if kind.setting_keys else ""))
        return cls(**values, settings=kind.settings_class(**own))

    def __post_init__(self) -> None:
        check_density(self.density)
        for name in ("actor_density", "critic_density"):
            if getattr(self, name) is not None:
                check_density(getattr(self, name), name)
        preset, kind = self.preset, self.kind
        if self.settings is None:
            object.__setattr__(self, "settings", kind.settings_class())
        elif not isinstance(self.settings, kind.settings_class):
            raise ValueError(f"method {self.method!r} takes {kind.settings_class.__name__} settings, "
                             f"got {type(self.settings).__name__}")
        if self.method == "dense" and not self.is_dense:
            raise ValueError("method 'dense' needs density 1.0 (and no actor/critic density below 1)")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {self.distribution!r}; allowed: {', '.join(DISTRIBUTIONS)}")
        check_backend(self.backend)
        self._check_recycling()
        for name in ("dense_output", "sparse_init", "iso_params", "recycle_regrow"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.dense_layers, str):
            raise ValueError(f"dense_layers must be a list of layer names, got the string {self.dense_layers!r}")
        if isinstance(self.width_multiplier, bool) or not isinstance(self.width_multiplier, int) \
                or self.width_multiplier < 1:
            raise ValueError(f"width_multiplier must be an integer >= 1, got {self.width_multiplier!r}")
        if self.iso_params and (self.width_multiplier == 1 or self.density != 1.0
                                or self.actor_density is not None or self.critic_density is not None):
            raise ValueError("iso_params sets the density from width_multiplier: give width_multiplier > 1 "
                             "and no density, actor_density or critic_density")
        object.__setattr__(self, "dense_layers", tuple(self.dense_layers))
        for pattern in self.dense_layers:
            if pattern.split(".", 1)[0] not in NETWORKS or "." not in pattern:
                raise ValueError(f"dense layer {pattern!r} must start with one of: "
                                 f"{', '.join(n + '.' for n in NETWORKS)}")
        if kind.name != "prune-grow" and preset.prune is None and (self.prune or self.grow):
            raise ValueError(f"method {self.method!r} has no prune/grow criteria to override")
        if kind.learns_density and any(self.network_density(network) != 1.0 for network in NETWORKS):
            raise ValueError(f"method {self.method!r} learns its density; density, actor_density and "
                             "critic_density do not apply (leave them at 1.0)")
        if kind.starts_dense and all(self.network_density(network) == 1.0 for network in NETWORKS):
            raise ValueError(f"method {self.method!r} prunes to a target density; give a density below 1")
        check = getattr(self.settings, "check", None)
        if check is not None:
            check(self)
        if preset.updates_topology or self.prune or self.grow:
            self.criteria()
        self.schedule()

    def _check_recycling(self) -> None:
        tau, interval = self.recycle_dormant, self.recycle_interval
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 <= tau < 1):
            raise ValueError(f"recycle_dormant must be None or a number in [0, 1), got {tau!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"recycle_interval must be an integer >= 1, got {interval!r}")
        if tau is not None and not self.kind.holds_density:
            fixed = [p.name for k in KINDS.values() if k.holds_density for p in k.presets]
            raise ValueError(f"recycle_dormant needs a method of fixed weight count ({', '.join(fixed)}), "
                             f"not {self.method!r}")

    @property
    def preset(self) -> MethodPreset:
        return get_method(self.method)

    @property
    def kind(self) -> MethodKind:
        """The method's kind (its layer class, controller and settings)."""
        return KINDS[self.preset.kind]

    @property
    def is_dense(self) -> bool:
        """Whether every network is fully dense (density 1) and stays so."""
        return (self.kind.holds_density and not self.iso_params
                and all(self.network_density(network) == 1.0 for network in NETWORKS))

    def network_density(self, network: str) -> float:
        """Density of ``"actor"`` or ``"critic"`` (before any ``iso_params`` widening)."""
        own = getattr(self, f"{network}_density")
        return self.density if own is None else own

    def network_dense_layers(self, network: str) -> tuple[str, ...]:
        """The dense-layer patterns of one network, without its prefix."""
        return tuple(p.split(".", 1)[1] for p in self.dense_layers if p.split(".", 1)[0] == network)

    def for_network(self, network: str, density: float | None = None) -> NetworkSparsity:
        """What ``network`` (``"actor"`` or ``"critic"``) is built with; ``density`` overrides its own
        (the widened density of ``iso_params``). A kind that does not hold a density builds it dense."""
        own = self.network_density(network) if density is None else density
        return NetworkSparsity(own if self.kind.holds_density else 1.0, self.distribution,
                               self.network_dense_layers(network), self.kind.name, self.dense_output, self.backend,
                               self.sparse_init)

    def criteria(self) -> tuple[Criterion, Criterion] | None:
        """(prune, grow) criteria, or ``None`` for a topology that never changes."""
        preset = self.preset
        prune, grow = self.prune or preset.prune, self.grow or preset.grow
        if prune is None or grow is None:
            if self.prune or self.grow:
                raise ValueError(f"method {self.method!r} never updates the topology; "
                                 "prune/grow criteria need a method that does")
            return None
        return (resolve_criterion("prune", prune, self.prune_kwargs),
                resolve_criterion("grow", grow, self.grow_kwargs))

    def grow_uses_dense_gradient(self) -> bool:
        """Whether topology updates need the dense weight gradient (growth scored by gradients)."""
        return (self.grow or self.preset.grow) in GRADIENT_CRITERIA

    def schedule(self) -> UpdateSchedule:
        return UpdateSchedule(self.update_interval, self.drop_fraction, self.update_end, self.decay)

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as flat ``policy_kwargs`` (the kind's settings inlined)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"}
        return {**data, **asdict(self.settings)}


COMMON_KEYS = tuple(f.name for f in fields(SparsityConfig) if f.name != "settings")
SPARSITY_KEYS = COMMON_KEYS + tuple(dict.fromkeys(key for kind in KINDS.values() for key in kind.setting_keys))
"""Every sparsity ``policy_kwargs`` key: the shared ones, then each kind's own."""
