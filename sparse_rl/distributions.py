"""How one global density is split across the layers of a network.

``uniform`` gives every sparse layer the same density; ``er``/``erk`` (RigL) make a
layer's density proportional to ``(n_in + n_out) / (n_in * n_out)`` (for linear layers the
two coincide), with a scale solved so that the kept total matches the global budget. A layer
whose density would exceed 1 is made dense and the scale re-solved over the others. Layers
named in ``dense_layers`` (``fnmatch`` patterns) are kept dense and paid for from the same
budget, so the total stays ``round(density * total)`` whatever is kept dense.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping

DISTRIBUTIONS = ("uniform", "er", "erk")
Shape = tuple[int, int]


def check_density(density: float, name: str = "density") -> float:
    """Return ``density`` as a float, or raise ``ValueError`` unless it lies in (0, 1]."""
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 < density <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {density!r}")
    return float(density)


def match_dense_layers(names: Iterable[str], patterns: Iterable[str]) -> set[str]:
    """Names matched by ``patterns``; a pattern that matches no layer is an error."""
    names = list(names)
    matched: set[str] = set()
    for pattern in patterns:
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise ValueError(f"dense layer {pattern!r} matches no layer; layers are: {', '.join(names)}")
        matched.update(hits)
    return matched


def _raw_weight(shape: Shape, distribution: str) -> float:
    n_out, n_in = shape
    return 1.0 if distribution == "uniform" else (n_in + n_out) / (n_in * n_out)


def layer_densities(
    shapes: Mapping[str, Shape],
    density: float,
    distribution: str = "erk",
    dense_layers: Iterable[str] = (),
) -> dict[str, float]:
    """Density per layer (keys of ``shapes``, each an ``(out, in)`` weight shape) for a global ``density``."""
    density = check_density(density)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    sizes = {name: shape[0] * shape[1] for name, shape in shapes.items()}
    dense = match_dense_layers(sizes, dense_layers)
    budget = density * sum(sizes.values())
    while True:
        sparse = [name for name in sizes if name not in dense]
        remaining = budget - sum(sizes[name] for name in dense)
        if remaining < -1e-9:
            raise ValueError(f"density {density} is too low to keep {sorted(dense)} dense")
        if not sparse:
            break
        raw = {name: _raw_weight(shapes[name], distribution) for name in sparse}
        scale = remaining / sum(raw[name] * sizes[name] for name in sparse)
        overfull = [name for name in sparse if scale * raw[name] > 1.0]
        if not overfull:
            return {name: 1.0 if name in dense else scale * raw.get(name, 0.0) for name in sizes}
        dense.update(overfull)
    return {name: 1.0 for name in sizes}


def layer_counts(shapes: Mapping[str, Shape], densities: Mapping[str, float]) -> dict[str, int]:
    """Kept weights per layer: largest-remainder rounding of ``density * size`` so the total is
    ``round(sum(density * size))``, with at least one weight per layer."""
    sizes = {name: shape[0] * shape[1] for name, shape in shapes.items()}
    exact = {name: densities[name] * sizes[name] for name in sizes}
    counts = {name: math.floor(value) for name, value in exact.items()}
    shortfall = round(sum(exact.values())) - sum(counts.values())
    by_remainder = sorted(sizes, key=lambda name: exact[name] - counts[name], reverse=True)
    for name in by_remainder[:shortfall]:
        counts[name] += 1
    return {name: min(sizes[name], max(1, count)) for name, count in counts.items()}
