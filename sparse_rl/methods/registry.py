"""Every method kind, registered in one place, and the method names (presets) they bring.

Adding a method kind is one file under :mod:`sparse_rl.methods` defining its ``KIND`` and one
entry in :data:`KINDS` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sparse_rl.methods import ds_td3, gmp, halo, prune_grow, rlx2, srigl, thresholds
from sparse_rl.methods.kind import MethodKind, MethodPreset

KINDS: dict[str, MethodKind] = {kind.name: kind for kind in (prune_grow.KIND, rlx2.KIND, thresholds.KIND, halo.KIND,
                                                              ds_td3.KIND, srigl.KIND, gmp.KIND)}
"""Method kinds by name."""

METHODS: dict[str, MethodPreset] = {preset.name: preset for kind in KINDS.values() for preset in kind.presets}
"""Method names (what ``--method`` accepts) and what each means."""


def get_method(name: str) -> MethodPreset:
    """The preset called ``name``; ``ValueError`` naming the allowed ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def method_label(sparsity: Mapping[str, Any]) -> str:
    """The method a ``sparsity`` settings mapping runs, with what it changes of the preset.

    ``rigl``; ``rigl+prune-snip`` for a criterion override; ``dst-ee+c0.01`` for a criterion
    parameter; ``thresholds+threshold_alpha0.01`` for a kind's own setting away from its default;
    ``rigl+sparse-init`` for sparse-aware initialisation; ``rigl+recycle_dormant0.1`` for ReDo's
    recycling. Run directory names and report rows both
    use it, so an ablation never shares a directory or a row with the preset.
    """
    method = str(sparsity.get("method", "rigl"))
    parts = [method]
    parts += [f"{kind}-{sparsity[kind]}" for kind in ("prune", "grow") if sparsity.get(kind)]
    for kind in ("prune_kwargs", "grow_kwargs"):
        parts += [_setting(key, value) for key, value in sorted((sparsity.get(kind) or {}).items())]
    if method in METHODS:
        defaults = KINDS[METHODS[method].kind].settings_class()
        parts += [_setting(key, sparsity[key]) for key in sorted(sparsity)
                  if hasattr(defaults, key) and sparsity[key] != getattr(defaults, key)]
    if sparsity.get("sparse_init"):
        parts.append("sparse-init")
    if sparsity.get("recycle_dormant") is not None:
        parts.append(_setting("recycle_dormant", sparsity["recycle_dormant"]))
        parts += [_setting(key, sparsity[key]) for key, default in (("recycle_interval", 1000),
                                                                     ("recycle_regrow", False))
                  if sparsity.get(key, default) != default]
    return "+".join(parts)


def _setting(key: str, value: Any) -> str:
    return f"{key}{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else f"{key}{value}"
