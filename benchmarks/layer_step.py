"""The lone-layer part of ``benchmarks/sparse_speed.py`` that says where a compact layer's training step goes
(``--part layer-step``): its phases, the compiled kernels' share of each, and what a layer's autograd node and
optimizer step cost with no work in them, beside the masked layer's whole step."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from unittest.mock import patch

import torch

from sparse_rl.backends import kernels
from sparse_rl.calibrate import masked_optimizer_step, timed_layer
from sparse_rl.masks import random_mask
from sparse_rl.optim import LeanAdam

PHASES = ("zero_grad", "forward", "backward", "optimizer step")
"""A training step's phases as ``calibrate.layer_step`` runs them (the optimizer step includes the two masks)."""


class _TimedExtension:
    """The compiled kernels' module with its ``forward`` and ``backward`` calls timed by :attr:`clock`: their
    seconds are added to :attr:`seconds` (everything else passes through)."""

    def __init__(self, extension: Any, clock: Callable[[], float]) -> None:
        self._extension, self.clock, self.seconds = extension, clock, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._extension, name)

    def forward(self, *args: Any) -> Any:
        return self._timed(self._extension.forward, args)

    def backward(self, *args: Any) -> Any:
        return self._timed(self._extension.backward, args)

    def _timed(self, kernel: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        start = self.clock()
        result = kernel(*args)
        self.seconds += self.clock() - start
        return result


class _NoWork(torch.autograd.Function):
    """A layer's autograd node that computes nothing: an output and the three gradients allocated as the compact
    layer's are, their contents left as they come (the parameters' gradients zero, so Adam runs on numbers)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, out: int) -> torch.Tensor:
        ctx.shapes = x.shape, values.shape[0], bias.shape[0]
        return x.new_empty(out, x.shape[0]).t()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (batch, features), nnz, rows = ctx.shapes
        return grad_output.new_empty(features, batch).t(), grad_output.new_zeros(nnz), grad_output.new_zeros(rows), None


def _phased_step(forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
                 x: torch.Tensor, dy: torch.Tensor, after_step: Callable[[], None],
                 timed: _TimedExtension) -> dict[str, float]:
    """One training step (``calibrate.layer_step``'s) with each phase's seconds by ``timed``'s clock, and the
    compiled kernels' inside the forward and the backward (none where the step calls no kernel)."""
    clock = timed.clock
    marks, kernel_marks = [clock()], []
    optimizer.zero_grad(set_to_none=True)
    x.grad = None
    marks.append(clock())
    kernel_marks.append(timed.seconds)
    y = forward(x)
    marks.append(clock())
    kernel_marks.append(timed.seconds)
    y.backward(dy)
    marks.append(clock())
    kernel_marks.append(timed.seconds)
    after_step()
    marks.append(clock())
    seconds = {phase: end - begin for phase, begin, end in zip(PHASES, marks, marks[1:])}
    seconds["forward kernel"] = kernel_marks[1] - kernel_marks[0]
    seconds["backward kernel"] = kernel_marks[2] - kernel_marks[1]
    seconds["step"] = marks[-1] - marks[0]
    return seconds


def phase_medians(in_features: int, out_features: int, batch: int, density: float, repeats: int,
                  clock: Callable[[], float] = time.process_time, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Median seconds of each phase of one training step of a lone layer: ``masked`` (row-major activations),
    ``compact`` (feature-major, as inside a network: ``calibrate.time_layer``'s "compact in network") and ``no work``
    (an autograd node that computes nothing, on parameters of the compact layer's sizes, with the same optimizer),
    stepped alternately, one step each. Each round steps a twin of the compact layer on row-major input (untimed)
    before the compact one, as ``time_layer`` does, so that the compact step finds the code it runs warm, as it does
    inside a network, where layers run one after another; the no-work node runs after it."""
    generator = torch.Generator().manual_seed(0)
    mask = random_mask((out_features, in_features), round(density * in_features * out_features), generator)
    x = torch.randn(batch, in_features, generator=generator)
    dy = torch.randn(batch, out_features, generator=generator)
    x_t, dy_t = (tensor.t().contiguous().t() for tensor in (x, dy))  # feature-major
    x.requires_grad_(True)
    x_t.requires_grad_(True)
    masked, masked_optimizer = timed_layer(mask, "masked")
    compact, compact_optimizer = timed_layer(mask, "compact")
    twin, twin_optimizer = timed_layer(mask, "compact")
    nnz = int(mask.sum())
    values, bias = torch.nn.Parameter(torch.zeros(nnz)), torch.nn.Parameter(torch.zeros(out_features))
    no_work_optimizer = LeanAdam([values, bias], lr=1e-4)
    timed = _TimedExtension(kernels._EXTENSION, clock)
    steps: dict[str, Callable[[], dict[str, float]]] = {
        "masked": lambda: _phased_step(masked, masked_optimizer, x, dy,
                                       partial(masked_optimizer_step, masked, masked_optimizer), timed),
        "twin": lambda: _phased_step(twin, twin_optimizer, x, dy_t,
                                     partial(masked_optimizer_step, twin, twin_optimizer), timed),
        "compact": lambda: _phased_step(compact, compact_optimizer, x_t, dy_t,
                                        partial(masked_optimizer_step, compact, compact_optimizer), timed),
        "no work": lambda: _phased_step(lambda inputs: _NoWork.apply(inputs, values, bias, out_features),
                                        no_work_optimizer, x_t, dy_t, no_work_optimizer.step, timed)}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in steps if name != "twin"}
    with patch.object(kernels, "_EXTENSION", timed):
        for i in range(repeats + warmup):
            for name, step in steps.items():
                seconds = step()
                if i >= warmup and name != "twin":
                    for phase, value in seconds.items():
                        times[name].setdefault(phase, []).append(value)
    return {name: {phase: statistics.median(values) for phase, values in phases.items()}
            for name, phases in times.items()}


def layer_step_tables(shapes: list[tuple[int, int]], batches: list[int], densities: list[float],
                      repeats: int) -> list[str]:
    """Where a lone compact layer's training step goes, phase by phase, against the masked layer's whole step."""
    if not kernels.compiled():
        return ["The compiled kernels are not built here: no compact layer step to take apart."]
    rows = []
    for (in_features, out_features), batch, density in itertools.product(shapes, batches, densities):
        median = phase_medians(in_features, out_features, batch, density, repeats)
        masked, compact, floor = median["masked"]["step"], median["compact"], median["no work"]
        kernel = compact["forward kernel"] + compact["backward kernel"]
        rows.append(f"| {in_features}×{out_features} | {batch} | {density:g} | {masked * 1e6:.0f} "
                    f"| {compact['step'] * 1e6:.0f} | {compact['step'] / masked:.2f} "
                    f"| {compact['zero_grad'] * 1e6:.1f} "
                    f"| {compact['forward'] * 1e6:.0f} ({compact['forward kernel'] * 1e6:.0f}) "
                    f"| {compact['backward'] * 1e6:.0f} ({compact['backward kernel'] * 1e6:.0f}) "
                    f"| {compact['optimizer step'] * 1e6:.0f} | {kernel / masked:.2f} "
                    f"| {(compact['step'] - kernel) / masked:.2f} "
                    f"| {floor['forward'] * 1e6:.0f} / {floor['backward'] * 1e6:.0f} / "
                    f"{floor['optimizer step'] * 1e6:.0f} | {floor['step'] / masked:.2f} |")
        print(rows[-1], flush=True)
    return ["| layer (in×out) | batch | density | masked step µs | compact step µs | compact ÷ masked | zero_grad µs "
            "| forward µs (kernel) | backward µs (kernel) | optimizer step µs | kernels ÷ masked "
            "| the rest ÷ masked | no-work node: forward / backward / optimizer step µs | no-work step ÷ masked |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", *rows]
