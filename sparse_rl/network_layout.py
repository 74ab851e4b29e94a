"""One network's sparse layers as a layout group, and :func:`set_backend`, which sets a module's backend and forms
the group.

A network whose layers compute with sparse kernels hands activations between its layers feature-major
``(features, batch)``, the layout those kernels read and write; its dense ``auto`` layers then return that layout too,
so that no layer copies its input (:mod:`sparse_rl.backends.masked`). Whether that holds is a property of the whole
network, not of one layer: the group answers it once and caches the answer until a pattern or a backend changes.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from sparse_rl.backends import check_backend, compact_chain
from sparse_rl.backends.auto import is_narrow_output_layer
from sparse_rl.backends.masked import is_input_layer
from sparse_rl.layer_state import convert_state, replace_parameter
from sparse_rl.layers import SparseLinear


class LayoutGroup:
    """The ``SparseLinear`` layers of one network, grouped by :func:`set_backend`. When any of them computes with
    sparse kernels, the group's dense ``auto`` layers return feature-major activations too, so that no layer copies
    its input into the sparse kernels' layout (:mod:`sparse_rl.backends.masked`)."""

    def __init__(self, layers: list[SparseLinear]) -> None:
        self.layers = layers
        self._sparse: tuple[bool, bool] | None = None  # (any layer, any body layer) computes with sparse kernels

    def invalidate(self) -> None:
        """Forget the cached answers (a pattern or a backend changed)."""
        self._sparse = None

    def any_sparse(self, body: bool = False) -> bool:
        """Whether any layer of the group (with ``body``, any but its heads) computes with sparse kernels."""
        if self._sparse is None:
            sparse = [m for m in self.layers if m.strategy().sparse_kernels]
            self._sparse = bool(sparse), any(not is_narrow_output_layer(m.in_features, m.out_features) for m in sparse)
        return self._sparse[body]


def _layout_order(layer: SparseLinear) -> tuple[bool, bool]:
    """Hidden layers first, then input layers (``auto`` lays them out by the layers they feed), heads last (by the
    others)."""
    return (is_narrow_output_layer(layer.in_features, layer.out_features),
            is_input_layer(layer.in_features, layer.out_features))


def set_backend(module: nn.Module, backend: str, optimizers: tuple[torch.optim.Optimizer, ...] = ()) -> int:
    """Set the backend of every ``SparseLinear`` in ``module``, input layers after the layers they feed and heads last
    (``auto`` lays them out by the others), and
    group them as one network (:class:`LayoutGroup`). Layers that change layout get a new parameter; each optimizer
    in ``optimizers`` is moved onto it, with its per-element state converted. Returns how many layers were set."""
    check_backend(backend)
    layers = [m for m in module.modules() if isinstance(m, SparseLinear)]
    group = LayoutGroup(layers) if layers else None
    for layer in layers:
        layer._layout_group = group
    feeds = compact_chain.successors(module)
    for layer in sorted(layers, key=_layout_order):
        successor = feeds.get(layer)
        swapped = layer.set_backend(backend, isinstance(successor, SparseLinear) and successor.layout == "compact")
        if swapped is not None:
            for optimizer in optimizers:
                replace_parameter(optimizer, *swapped, partial(convert_state, layer))
    return len(layers)


__all__ = ["LayoutGroup", "set_backend"]
