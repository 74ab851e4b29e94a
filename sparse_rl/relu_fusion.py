"""A ReLU fused into the compact layer before it: rectified inside the forward kernel's own pass over the output,
masked at the start of the layer's backward, one autograd node instead of two.

SB3 builds its networks as ``nn.Sequential(Linear, ReLU, Linear, ReLU, ...)``. :func:`fuse_relus` sets
``fused_relu`` on each sparse layer followed by a plain ``nn.ReLU`` and puts a :class:`RectifiedReLU` in that ReLU's
place. A compact layer with ``fused_relu`` rectifies its output in its forward kernel, masks the output gradient in
its backward by the same test ``torch.relu``'s backward uses, and tags its output (:func:`mark_rectified`);
:class:`RectifiedReLU` returns a tagged tensor unchanged (``relu(relu(z)) == relu(z)``, with the same gradient) and
rectifies anything else, as ``nn.ReLU`` does. So a network's outputs, gradients and the ReLU module's forward hooks
(dormant neurons read them) are those of the unfused pair, on every layout. Only the fused layer itself differs: called
alone it returns its output rectified, and hooks on it see that output and its gradient. A hook that returns a new
output tensor (a module's full backward hook wraps it) drops the tag: the ReLU then rectifies again, which changes no
value and costs what the unfused ReLU did.
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


class RectifiedReLU(nn.ReLU):
    """``nn.ReLU`` that passes a fused layer's already rectified output through (see the module docstring)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input if getattr(input, RECTIFIED, False) else super().forward(input)


def fuse_relus(module: nn.Module) -> int:
    """Fuse every plain ``nn.ReLU`` that directly follows a layer with a ``fused_relu`` setting (a
    :class:`~sparse_rl.layers.SparseLinear`) in an ``nn.Sequential`` of ``module`` into that layer. Returns how many
    were fused."""
    fused = 0
    for sequence in module.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        children = list(sequence.named_children())
        for (_, layer), (name, after) in zip(children, children[1:]):
            if hasattr(layer, "fused_relu") and type(after) is nn.ReLU and not after.inplace:
                setattr(layer, "fused_relu", True)  # typed as a module here; SparseLinear declares it a bool
                setattr(sequence, name, RectifiedReLU())
                fused += 1
    return fused


__all__ = ["RECTIFIED", "RectifiedReLU", "fuse_relus", "mark_rectified"]
