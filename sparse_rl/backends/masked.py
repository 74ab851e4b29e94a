"""``masked``: the dense kernel on a weight whose masked entries are zero; what all backends share: the activation
layouts, and which layers are input layers.

Every weight is multiplied and the weight gradient is dense. This is the layout of methods whose density changes as
they learn (``thresholds``, ``halo``), of every non-CPU device, and of a user's explicit ``backend="masked"``.

Layouts. The sparse kernels (``sparse``, ``compact``) read and write activations feature-major, ``(features,
batch)`` row-major, and return ``(W xᵀ)ᵀ``, a transposed view. In a network where any layer runs a sparse kernel,
the dense ``auto`` layers also return feature-major ``(W xᵀ + b)ᵀ`` (the same GEMM with other transpose flags), so
activations stay feature-major throughout with no copies. Each layer returns its input gradient in its input's
layout: ReLU and its backward on mixed layouts ran several times slower. A network with no sparse layer runs
``F.linear`` exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sparse_rl.relu_fusion import mark_rectified, rectifies_now

if TYPE_CHECKING:
    from sparse_rl.layers import SparseLinear

SMALL_BATCH = 4
"""Below this many rows, the ``sparse`` backend runs dense kernels on the masked weight: at batch 1 (one action
from ``predict``) a CSR call costs more than the dense product it replaces."""


INPUT_LAYER_MAX_IN = 64
"""Input width up to which a layer counts as an input layer (an observation, or an observation and an action: 11-35
features in MuJoCo's Hopper to Ant)."""

INPUT_LAYER_MIN_FANOUT = 4
"""How many times its input width an input layer's output width is at least (17 -> 256 is 15 times). A narrow hidden
layer (64 -> 64) is not one: ``auto`` laying it out compactly at density 0.4 made SAC's ``train()`` with
``net_arch=[64, 64]`` 1.08x slower (0.24: 1.01x; an ad-hoc in-process A/B, Intel Xeon)."""


def is_input_layer(in_features: int, out_features: int) -> bool:
    """Whether a layer of this shape is an input layer: at most :data:`INPUT_LAYER_MAX_IN` features fanned out to at
    least :data:`INPUT_LAYER_MIN_FANOUT` times as many. ``auto`` lays such layers out compactly up to a higher
    density, and a dense one in a sparse network adds its bias inside its GEMM (:func:`dense_linear`)."""
    return in_features <= INPUT_LAYER_MAX_IN and out_features >= INPUT_LAYER_MIN_FANOUT * in_features


def is_feature_major(x: torch.Tensor) -> bool:
    """Whether a 2-d ``x`` is stored transposed (``x.t()`` contiguous) and not also row-major. Read from the strides
    (a ``(rows, cols)`` tensor with both sizes above 1 and strides ``(1, rows)``; with a size of 0 or 1 the two layouts
    coincide), not by building the transposed view: every sparse layer asks this on every call."""
    if x.dim() != 2:
        return False
    rows, cols = x.shape
    return rows > 1 and cols > 1 and x.stride() == (1, rows)


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 feature_major: bool = False, rectify: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` with the dense kernel. The result is feature-major, ``(W xᵀ + b)ᵀ``,
    when ``feature_major`` is set or ``x`` itself is feature-major. Otherwise ``F.linear`` runs
    and the result is row-major. Dense GEMM reads either layout. With ``rectify``, the product is rectified in
    place (``relu_``, while the GEMM's fresh output is still in cache; the GEMM's backward does not read it).

    An input layer (:func:`is_input_layer`) adds its bias inside the GEMM, as one more input row of ones and one more
    weight column: ``addmm`` would first copy the bias across its whole ``(out, batch)`` output and its backward sum
    the gradient over it, two passes over a tensor the copy of the narrow input (``in × batch``) does not cost
    (``train()`` of the wide ×4 SAC 1.016–1.032× faster, docs/architecture.md)."""
    if x.dim() != 2 or not (feature_major or is_feature_major(x)):
        y = F.linear(x, weight, bias)
        return y.relu_() if rectify else y
    x_t = x.t()
    if bias is None:
        y_t = torch.mm(weight, x_t)
    elif is_input_layer(weight.shape[1], weight.shape[0]):
        y_t = torch.mm(torch.cat([weight, bias.unsqueeze(1)], 1), torch.cat([x_t, x_t.new_ones(1, x_t.shape[1])]))
    else:
        y_t = torch.addmm(bias.unsqueeze(1), weight, x_t)
    return (y_t.relu_() if rectify else y_t).t()


def forward(layer: SparseLinear, x: torch.Tensor) -> torch.Tensor:
    """The ``masked`` backend's forward pass: feature-major when the layer's network runs sparse kernels; rectified
    in place when a :class:`~sparse_rl.relu_fusion.FusedReLUSequential` runs the layer with its ReLU."""
    parameters = layer._parameters  # not layer.weight: SparseLinear.__getattr__ costs µs on every call
    weight, bias = parameters["weight"], parameters["bias"]
    assert weight is not None
    rectify = rectifies_now(layer)
    if layer.backend == "auto" and x.dim() == 2 and x.shape[0] >= SMALL_BATCH and layer.in_sparse_network():
        y = dense_linear(x, weight, bias, feature_major=True, rectify=rectify)
    else:
        y = F.linear(x, weight, bias)
        if rectify:
            y = y.relu_()
    return mark_rectified(y) if rectify else y
