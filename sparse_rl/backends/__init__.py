"""Execution backends of :class:`~sparse_rl.layers.SparseLinear`: how a sparse layer stores and computes.

A backend is a small strategy object, :class:`Backend`: its name, the layout it needs (``masked``: a dense
``weight`` with a mask; ``compact``: the active values only, with their indices) and its forward function. ``auto``
is not a backend but a resolver (:func:`resolve`), which picks one from the layer's shape, density and device
(:mod:`sparse_rl.backends.auto`). Adding a backend is one module with a ``forward(layer, x)`` and one line in
:data:`REGISTRY`; the layer, the CLI (``--backend``), the config validation and the benchmarks read the names here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sparse_rl.backends import compact, csr, masked
from sparse_rl.backends.auto import auto_backend

if TYPE_CHECKING:
    from sparse_rl.layers import SparseLinear


@dataclass(frozen=True)
class Backend:
    """One way to compute a sparse layer."""

    name: str
    layout: str
    """``"masked"`` (dense ``weight`` + ``mask``) or ``"compact"`` (``values`` + index: no dense weight)."""
    forward: Callable[[SparseLinear, torch.Tensor], torch.Tensor]
    sparse_kernels: bool
    """Whether it computes with the active weights only (then its network runs feature-major)."""
    summary: str


REGISTRY: dict[str, Backend] = {backend.name: backend for backend in (
    Backend("masked", "masked", masked.forward, False, "dense kernels on the masked weight"),
    Backend("sparse", "masked", csr.forward, True, "MKL's CSR products on the masked weight"),
    Backend("compact", "compact", compact.forward, True, "active values only, with this package's kernels"),
)}

BACKENDS = ("auto", *REGISTRY)
"""The values a ``backend`` setting accepts: ``auto`` (resolved per layer) and every registered backend."""


def check_backend(name: str) -> str:
    """``name`` if it is a backend setting, else a one-line ``ValueError`` naming the allowed values."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")
    return name


def resolve(layer: SparseLinear) -> Backend:
    """The backend ``layer`` computes with: its own setting, or what ``auto`` picks within the layer's layout (a
    compact layer stays compact; a masked one takes ``sparse`` or ``masked`` by its density, which may change)."""
    if layer.backend != "auto":
        return REGISTRY[layer.backend]
    if layer.layout == "compact":
        return REGISTRY["compact"]
    return REGISTRY[auto_backend(layer.in_features, layer.out_features, layer.density, layer.device,
                                 compact_capable=False)]


def layout_for(layer: SparseLinear, backend: str, feeds_compact: bool = False) -> str:
    """The layout ``layer`` takes when its backend is set to ``backend`` (``auto``: compact where it pays, given
    the layouts of its network's body, the layers other than its heads, now, and whether its output goes straight
    into a compact layer, ``feeds_compact``)."""
    return layout_for_shape(layer.in_features, layer.out_features, layer.density, layer.device, backend,
                            layer.compact_capable, layer.in_sparse_network(body=True), feeds_compact)


def layout_for_shape(in_features: int, out_features: int, density: float, device: torch.device, backend: str,
                     compact_capable: bool, in_sparse_network: bool = False, feeds_compact: bool = False) -> str:
    """The layout a layer of this shape, density and device takes with ``backend`` (so a network can build each
    layer in its layout directly); ``in_sparse_network``: its network's body (the layers other than its heads) runs
    sparse kernels; ``feeds_compact``: its output goes straight (through a ReLU) into a compact layer."""
    if backend != "auto":
        return REGISTRY[backend].layout
    return REGISTRY[auto_backend(in_features, out_features, density, device, compact_capable=compact_capable,
                                 in_sparse_network=in_sparse_network, feeds_compact=feeds_compact)].layout
