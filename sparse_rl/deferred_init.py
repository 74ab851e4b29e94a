"""Plain ``nn.Linear`` layers built without their dense weights, their initial values drawn later.

SB3 builds a policy's networks dense before this package makes them sparse, and a wide network's dense weights
(64 MB for one 4096×4096 layer, twice that for a pair of critics) set the peak memory of building a sparse one.
Inside :func:`linears_on_meta` every plain ``nn.Linear`` is built on the meta device (no memory); the CPU random
generator advances exactly as the layer's initialisation would have advanced it, and the state it would have drawn
from is kept (:class:`DeferredInit`). :meth:`DeferredInit.weight_at` then draws the very values SB3's layer would
have held, at chosen positions only, and :meth:`DeferredInit.materialize` all of them, so a seed gives the same
network as a dense build.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

DRAW_CHUNK = 1 << 16
"""Random numbers drawn per call (a scratch buffer of this size, not the layer's)."""


@torch.no_grad()
def draw_like_linear_init(linear: nn.Linear) -> None:
    """Advance torch's generator exactly as initialising a copy of ``linear`` would (its weight, then its bias:
    one uniform number per element), through a small scratch buffer."""
    scratch = torch.empty(DRAW_CHUNK, dtype=linear.weight.dtype)
    for numel in (linear.weight.numel(), linear.bias.numel() if linear.bias is not None else 0):
        while numel:
            count = min(numel, DRAW_CHUNK)
            scratch[:count].uniform_()
            numel -= count


def _bounds(in_features: int) -> tuple[float, float]:
    """``nn.Linear.reset_parameters``'s uniform bounds, computed as it computes them: Kaiming-uniform with
    a = √5 for the weight, 1/√fan_in for the bias."""
    if in_features == 0:
        return 0.0, 0.0
    weight = math.sqrt(3.0) * (nn.init.calculate_gain("leaky_relu", math.sqrt(5)) / math.sqrt(in_features))
    return weight, 1 / math.sqrt(in_features)


@dataclass(frozen=True)
class DeferredInit:
    """Where a meta-built ``nn.Linear``'s initial values come from: the generator state its initialisation would
    have drawn from."""

    state: torch.Tensor

    def _generator(self) -> torch.Generator:
        generator = torch.Generator()
        generator.set_state(self.state)
        return generator

    @torch.no_grad()
    def weight_at(self, linear: nn.Linear, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``linear``'s initial weights at the ascending flat ``positions``, and its initial bias, drawn through a
        scratch buffer (no dense weight)."""
        generator, (bound, bias_bound) = self._generator(), _bounds(linear.in_features)
        dtype, numel = linear.weight.dtype, linear.weight.numel()
        positions = positions.to(torch.int64).cpu()
        values = torch.empty(positions.numel(), dtype=dtype)
        scratch = torch.empty(DRAW_CHUNK, dtype=dtype)
        for start in range(0, numel, DRAW_CHUNK):
            count = min(DRAW_CHUNK, numel - start)
            scratch[:count].uniform_(-bound, bound, generator=generator)
            low, high = torch.searchsorted(positions, torch.tensor([start, start + count])).tolist()
            values[low:high] = scratch[positions[low:high] - start]
        bias = None
        if linear.bias is not None:
            bias = torch.empty(linear.out_features, dtype=dtype).uniform_(-bias_bound, bias_bound, generator=generator)
        return values, bias

    @torch.no_grad()
    def materialize(self, linear: nn.Linear) -> None:
        """Give ``linear`` real CPU parameters holding the values its initialisation would have drawn."""
        generator, (bound, bias_bound) = self._generator(), _bounds(linear.in_features)
        weight = torch.empty(linear.weight.shape, dtype=linear.weight.dtype)
        linear.weight = nn.Parameter(weight.uniform_(-bound, bound, generator=generator))
        if linear.bias is not None:
            bias = torch.empty(linear.bias.shape, dtype=linear.bias.dtype)
            linear.bias = nn.Parameter(bias.uniform_(-bias_bound, bias_bound, generator=generator))


@contextmanager
def linears_on_meta() -> Iterator[dict[nn.Linear, DeferredInit]]:
    """Build every plain CPU ``nn.Linear`` created inside on the meta device; yields the layers built so, each with
    its :class:`DeferredInit`. The caller must replace or materialize each of them before using it. (It swaps
    ``nn.Linear.__init__`` while it is open: open it only around building a network, on one thread.)"""
    deferred: dict[nn.Linear, DeferredInit] = {}
    original = nn.Linear.__init__

    def init(self: nn.Linear, in_features: int, out_features: int, bias: bool = True,
             device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        if type(self) is not nn.Linear or (device is not None and torch.device(device).type != "cpu"):
            original(self, in_features, out_features, bias, device, dtype)
            return
        original(self, in_features, out_features, bias, device="meta", dtype=dtype)
        deferred[self] = DeferredInit(torch.get_rng_state())
        draw_like_linear_init(self)

    nn.Linear.__init__ = init  # type: ignore[method-assign]
    try:
        yield deferred
    finally:
        nn.Linear.__init__ = original  # type: ignore[method-assign]


__all__ = ["DeferredInit", "draw_like_linear_init", "linears_on_meta"]
