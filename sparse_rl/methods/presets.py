"""Named DST methods: a pair of (prune, grow) criteria, or no updates at all."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodPreset:
    """What a method name means: which criteria rank weights, and whether the topology moves."""

    name: str
    prune: str | None
    grow: str | None
    paper: str
    layer_kind: str = "masked"
    """``masked``: SparseLinear rewired by (prune, grow); ``threshold`` and ``halo``: the layers
    of :mod:`sparse_rl.methods.thresholds` and :mod:`sparse_rl.methods.halo`, with their own controllers."""

    @property
    def learns_density(self) -> bool:
        """Whether the method learns its density instead of holding a target one."""
        return self.layer_kind == "threshold"

    @property
    def updates_topology(self) -> bool:
        return self.prune is not None


METHODS: dict[str, MethodPreset] = {
    preset.name: preset
    for preset in (
        MethodPreset("rigl", "magnitude", "gradient", "Evci et al. 2020, Rigging the Lottery"),
        MethodPreset("set", "set", "random", "Mocanu et al. 2018, Sparse Evolutionary Training"),
        MethodPreset("mest", "mest", "random", "Yuan et al. 2021, MEST"),
        MethodPreset("dst-ee", "magnitude", "ucb", "Huang et al. 2023, DST-EE"),
        MethodPreset("rlx2", "magnitude", "gradient", "Tan et al. 2023, RLx2 (RigL + multi-step targets + "
                     "policy-aware replay buffer)"),
        MethodPreset("thresholds", None, None, "Liu et al. 2020, Dynamic Sparse Training (learned thresholds)",
                     layer_kind="threshold"),
        MethodPreset("halo", None, None, "Seto et al. 2020, HALO (shrinkage penalty, then global magnitude prune)",
                     layer_kind="halo"),
        MethodPreset("static", None, None, "fixed random sparse topology"),
        MethodPreset("dense", None, None, "dense baseline (density 1)"),
    )
}


def get_method(name: str) -> MethodPreset:
    """The preset called ``name``; ``ValueError`` naming the allowed ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]
