"""Compaction: fold dead hidden units into the next layer's bias and remove orphan ones, without changing
what the network computes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sparse_rl.deploy import Layer, activate


def compact(layers: list[Layer]) -> list[Layer]:
    """An equivalent network without dead or orphan hidden units.

    Forward, layer by layer: a hidden unit whose weight row is all zero outputs the constant
    ``act(bias)``; that constant times its weight column is added to the next layer's bias and the
    unit is removed (which can leave units of the next layer without inputs, removed in turn).
    Backward: a hidden unit whose weight column in the next layer is all zero is removed. Input and
    output units are kept. A hidden layer left empty keeps one unit with zero weights (exact, and no
    target needs zero-sized arrays).
    """
    layers = [replace(layer, weight=layer.weight.copy(), bias=layer.bias.copy()) for layer in layers]

    def remove(i: int, units: np.ndarray) -> None:
        keep = ~units
        if not keep.any():
            keep[0] = True
            layers[i].weight[0] = 0
            layers[i].bias[0] = 0
            layers[i + 1].weight[:, 0] = 0
        layers[i].weight, layers[i].bias = layers[i].weight[keep], layers[i].bias[keep]
        layers[i + 1].weight = np.ascontiguousarray(layers[i + 1].weight[:, keep])

    for i in range(len(layers) - 1):
        dead = ~(layers[i].weight != 0).any(axis=1)
        if dead.any():
            constant = activate(layers[i].bias[dead], layers[i].activation, layers[i].alpha).astype(np.float64)
            folded = layers[i + 1].bias + layers[i + 1].weight[:, dead].astype(np.float64) @ constant
            layers[i + 1].bias = folded.astype(np.float32)
            remove(i, dead)
    for i in range(len(layers) - 2, -1, -1):
        orphan = ~(layers[i + 1].weight != 0).any(axis=0)
        if orphan.any():
            remove(i, orphan)
    return layers

