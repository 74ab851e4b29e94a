"""A ReLU fused into the sparse layer before it: on the compact layout rectified inside the forward kernel's own pass
over the output and masked at the start of the layer's backward, one autograd node instead of two.

SB3 builds its networks as ``nn.Sequential(Linear, ReLU, Linear, ReLU, ...)``. :func:`fuse_relus` puts a
:class:`RectifiedReLU` in the place of each plain ``nn.ReLU`` that follows a sparse layer and makes the
``nn.Sequential`` a :class:`FusedReLUSequential`; a layer followed by a ``RectifiedReLU`` is a fused pair (there
is no other record of it). When that sequence runs such a pair, the layer
is called (hooks and all) with its :data:`RECTIFY` flag set: on the compact layout it rectifies its output in its
forward kernel and masks the output gradient in its backward by the same test ``torch.relu``'s backward uses; on the
``masked`` backend it rectifies the GEMM's fresh output in place (``relu_``: no second activation-sized tensor,
which a cold write made cost several times a hot one; autograd's own ReLU backward masks the gradient); either
way it tags its output (:func:`mark_rectified`); :class:`RectifiedReLU` returns a tagged tensor unchanged
(``relu(relu(z)) == relu(z)``, with the same gradient) and rectifies anything else, as ``nn.ReLU`` does. So a
network's outputs, gradients and the ReLU module's forward hooks (dormant neurons read them) are those of the
unfused pair, on every layout, and the layer called alone is a plain linear layer. Only hooks on the fused layer
itself, inside its sequence, see its output rectified. A hook that returns a new output tensor (a module's full
backward hook wraps it) drops the tag: the ReLU then rectifies again, which changes no value and costs what the
unfused ReLU did.
"""

from __future__ import annotations

import torch
from torch import nn

RECTIFIED = "_sparse_rl_rectified"
"""The attribute that tags a tensor as already rectified by the layer that returned it."""


def mark_rectified(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, tagged as the rectified output of a fused layer."""
    setattr(tensor, RECTIFIED, True)
    return tensor


RECTIFY = "_sparse_rl_rectify"
"""The instance attribute a :class:`FusedReLUSequential` sets on a fused layer while it runs it (in ``__dict__``,
past ``nn.Module.__setattr__``: it is set and cleared on every call)."""


class FusedReLUSequential(nn.Sequential):
    """``nn.Sequential`` that runs each module followed by a :class:`RectifiedReLU` with the module's
    :data:`RECTIFY` flag set, and two or more compact layers in a row as one autograd node
    (:mod:`sparse_rl.backends.compact_chain`); the same modules, names and state dict."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        from sparse_rl.backends import compact_chain  # here: the backends import this module

        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            run = compact_chain.run_length(modules, i, input)
            if run:  # compact layers in a row: one autograd node (sparse_rl/backends/compact_chain.py)
                input = compact_chain.forward(modules[i:i + run], input)
                i += run
                continue
            module = modules[i]
            if i + 1 < len(modules) and isinstance(modules[i + 1], RectifiedReLU):
                module.__dict__[RECTIFY] = True
                try:
                    input = module(input)
                finally:
                    module.__dict__[RECTIFY] = False
            else:
                input = module(input)
            i += 1
        return input


class RectifiedReLU(nn.ReLU):
    """``nn.ReLU`` that passes a fused layer's already rectified output through (see the module docstring)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input if getattr(input, RECTIFIED, False) else super().forward(input)


def fuse_relus(module: nn.Module) -> int:
    """Fuse every plain, non-inplace ``nn.ReLU`` that directly follows a :class:`~sparse_rl.layers.SparseLinear` in
    an ``nn.Sequential`` of ``module`` into that layer. Returns how many were fused."""
    from sparse_rl.layers import SparseLinear  # here: the layers' backends import this module

    fused = 0
    for sequence in module.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        children = list(sequence.named_children())
        for (_, layer), (name, after) in zip(children, children[1:]):
            if isinstance(layer, SparseLinear) and type(after) is nn.ReLU and not after.inplace:
                setattr(sequence, name, RectifiedReLU())
                fused += 1
        if type(sequence) is nn.Sequential and any(isinstance(m, RectifiedReLU) for m in sequence):
            sequence.__class__ = FusedReLUSequential  # same modules and state; only its forward differs
    return fused


def rectifies_now(layer: nn.Module) -> bool:
    """Whether ``layer`` is being run by a :class:`FusedReLUSequential` as the first of a fused pair."""
    return layer.__dict__.get(RECTIFY, False)


__all__ = ["RECTIFIED", "RECTIFY", "FusedReLUSequential", "RectifiedReLU", "fuse_relus", "mark_rectified",
           "rectifies_now"]
