"""Named DST methods: a pair of (prune, grow) criteria, or no updates at all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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


def method_label(sparsity: Mapping[str, Any]) -> str:
    """The method a ``sparsity`` settings mapping runs, with what it changes of the preset.

    ``rigl``; ``rigl+prune-snip`` for a criterion override; ``dst-ee+c0.01`` for a criterion
    parameter. Run directory names and report rows both use it, so an ablation of a criterion
    or its parameters never shares a directory or a row with the preset.
    """
    parts = [str(sparsity.get("method", "rigl"))]
    parts += [f"{kind}-{sparsity[kind]}" for kind in ("prune", "grow") if sparsity.get(kind)]
    for kind in ("prune_kwargs", "grow_kwargs"):
        parts += [f"{key}{value:g}" if isinstance(value, (int, float)) else f"{key}{value}"
                  for key, value in sorted((sparsity.get(kind) or {}).items())]
    return "+".join(parts)
