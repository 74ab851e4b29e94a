"""The sparsity settings a sparse SB3 policy accepts, validated in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sparse_rl.criteria import GRADIENT_CRITERIA, Criterion, resolve_criterion
from sparse_rl.distributions import DISTRIBUTIONS, check_density
from sparse_rl.methods import get_method
from sparse_rl.methods.halo import PruneSchedule
from sparse_rl.schedules import UpdateSchedule

NETWORKS = ("actor", "critic")


@dataclass(frozen=True)
class SparsityConfig:
    """Sparsity settings of a sparse SAC/TD3 policy (every field is a ``policy_kwargs`` key).

    :param density: global fraction of active weights, in (0, 1]; 1.0 gives a dense agent.
    :param actor_density: the actor's own density (default: ``density``).
    :param critic_density: the critics' density, one budget for all Q-heads (default: ``density``).
    :param method: ``rigl``, ``set``, ``mest``, ``dst-ee``, ``thresholds``, ``halo``, ``static`` or ``dense``.
    :param distribution: how a network's density is split over its layers: ``uniform``, ``er``, ``erk``.
    :param dense_layers: ``fnmatch`` patterns, prefixed with the network, of layers kept dense,
        e.g. ``("actor.mu", "critic.qf*.4")``; they are paid for from the same budget.
    :param update_interval: ΔT, optimizer steps of a network between its topology updates.
    :param drop_fraction: α, fraction of active weights replaced at the first update, in [0, 1).
    :param update_end: last update point: an int optimizer step, or a float fraction of training
        (needs the total, which ``SparseLoggingCallback`` or ``sparse_rl.train`` provides);
        ``None`` never stops.
    :param decay: drop-fraction decay, ``cosine`` or ``constant``.
    :param prune: prune criterion overriding the method's (e.g. ``snip`` for a Fantastic-Weights study).
    :param grow: grow criterion overriding the method's.
    :param prune_kwargs: parameters of the prune criterion (e.g. ``{"gamma": 1.0}`` for ``mest``).
    :param grow_kwargs: parameters of the grow criterion (e.g. ``{"c": 1e-3}`` for ``ucb``).
    :param threshold_alpha: ``thresholds`` only: α of the regulariser ``α Σ exp(-t)``.
    :param actor_threshold_alpha: the actor's own α (default: ``threshold_alpha``).
    :param critic_threshold_alpha: the critics' own α (default: ``threshold_alpha``).
    :param halo_xi: ``halo`` only: ξ of the penalty ``ξ Σ |θ|/λ² + ψ Σ |λ|``.
    :param halo_psi: ``halo`` only: ψ of that penalty.
    :param prune_start: ``halo`` only: first global magnitude prune, an int optimizer step or a
        float fraction of training; pruning then follows a cubic schedule to ``density``.
    :param prune_end: ``halo`` only: the prune that reaches ``density`` (same units as ``prune_start``).
    """

    density: float = 1.0
    actor_density: float | None = None
    critic_density: float | None = None
    method: str = "rigl"
    distribution: str = "erk"
    dense_layers: tuple[str, ...] = ()
    update_interval: int = 1000
    drop_fraction: float = 0.5
    update_end: int | float | None = 0.8
    decay: str = "cosine"
    prune: str | None = None
    grow: str | None = None
    prune_kwargs: dict[str, Any] = field(default_factory=dict)
    grow_kwargs: dict[str, Any] = field(default_factory=dict)
    threshold_alpha: float = 1e-4
    actor_threshold_alpha: float | None = None
    critic_threshold_alpha: float | None = None
    halo_xi: float = 1e-5
    halo_psi: float = 1e-5
    prune_start: int | float = 0.2
    prune_end: int | float = 0.8

    def __post_init__(self) -> None:
        check_density(self.density)
        for name in ("actor_density", "critic_density"):
            if getattr(self, name) is not None:
                check_density(getattr(self, name), name)
        preset = get_method(self.method)
        if self.method == "dense" and not self.is_dense:
            raise ValueError("method 'dense' needs density 1.0 (and no actor/critic density below 1)")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {self.distribution!r}; allowed: {', '.join(DISTRIBUTIONS)}")
        object.__setattr__(self, "dense_layers", tuple(self.dense_layers))
        for pattern in self.dense_layers:
            if pattern.split(".", 1)[0] not in NETWORKS or "." not in pattern:
                raise ValueError(f"dense layer {pattern!r} must start with one of: "
                                 f"{', '.join(n + '.' for n in NETWORKS)}")
        if preset.layer_kind != "masked" and (self.prune or self.grow):
            raise ValueError(f"method {self.method!r} has no prune/grow criteria to override")
        if preset.learns_density and any(self.network_density(network) != 1.0 for network in NETWORKS):
            raise ValueError(f"method {self.method!r} learns its density; density, actor_density and "
                             "critic_density do not apply (leave them at 1.0)")
        if preset.layer_kind == "halo":
            for network in NETWORKS:
                self.prune_schedule(network)
            if all(self.network_density(network) == 1.0 for network in NETWORKS):
                raise ValueError("method 'halo' prunes to a target density; give a density below 1")
        if preset.updates_topology or self.prune or self.grow:
            self.criteria()
        self.schedule()

    @property
    def is_dense(self) -> bool:
        """Whether every network is fully dense (density 1) and stays so."""
        return (get_method(self.method).layer_kind == "masked"
                and all(self.network_density(network) == 1.0 for network in NETWORKS))

    @property
    def layer_kind(self) -> str:
        """The kind of linear layer the method trains (see :data:`sparse_rl.sb3.networks.LAYER_KINDS`)."""
        return get_method(self.method).layer_kind

    def initial_density(self, network: str) -> float:
        """The density a network is built with: HALO and thresholds start dense."""
        return self.network_density(network) if self.layer_kind == "masked" else 1.0

    def threshold_alpha_of(self, network: str) -> float:
        """α of the threshold regulariser of ``"actor"`` or ``"critic"``."""
        own = getattr(self, f"{network}_threshold_alpha")
        return self.threshold_alpha if own is None else own

    def prune_schedule(self, network: str) -> PruneSchedule:
        """HALO's gradual prune of one network to its density, every ``update_interval`` steps."""
        return PruneSchedule(self.network_density(network), self.prune_start, self.prune_end, self.update_interval)

    def network_density(self, network: str) -> float:
        """Density of ``"actor"`` or ``"critic"``."""
        own = getattr(self, f"{network}_density")
        return self.density if own is None else own

    def network_dense_layers(self, network: str) -> tuple[str, ...]:
        """The dense-layer patterns of one network, without its prefix."""
        return tuple(p.split(".", 1)[1] for p in self.dense_layers if p.split(".", 1)[0] == network)

    def criteria(self) -> tuple[Criterion, Criterion] | None:
        """(prune, grow) criteria, or ``None`` for a topology that never changes."""
        preset = get_method(self.method)
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
        grow = self.grow or get_method(self.method).grow
        return grow in GRADIENT_CRITERIA

    def schedule(self) -> UpdateSchedule:
        return UpdateSchedule(self.update_interval, self.drop_fraction, self.update_end, self.decay)

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as ``policy_kwargs``."""
        return asdict(self)


SPARSITY_KEYS = tuple(SparsityConfig.__dataclass_fields__)
