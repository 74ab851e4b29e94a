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
        MethodPreset("static", None, None, "fixed random sparse topology"),
        MethodPreset("dense", None, None, "dense baseline (density 1)"),
    )
}


def get_method(name: str) -> MethodPreset:
    """The preset called ``name``; ``ValueError`` naming the allowed ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]
