"""Compaction: fold dead hidden units into the next layer's bias and remove orphan ones, without changing
what the network computes; and the condensed storage of a layer whose rows all hold the same number of
weights (:func:`constant_fan_in`, :func:`condensed`)."""

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



def constant_fan_in(layer: Layer) -> int | None:
    """k if every row of ``layer`` has exactly k ≥ 1 nonzero weights (SRigL's constant fan-in once compaction
    has removed its ablated neurons), None otherwise."""
    counts = np.count_nonzero(layer.weight, axis=1)
    if counts.size == 0 or counts[0] == 0 or not (counts == counts[0]).all():
        return None
    return int(counts[0])


def condensed(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """``(data, indices)`` of a constant-fan-in layer, each ``(out, k)``: row ``o``'s nonzero weights and their
    input columns in increasing column order (CSR without ``indptr``; the same order, so the same sums).
    ``ValueError`` if the rows' counts differ."""
    k = constant_fan_in(layer)
    if k is None:
        raise ValueError(f"a {layer.weight.shape} layer whose rows hold different numbers of weights "
                         "has no condensed layout")
    data, indices, _ = layer.csr()
    return data.reshape(-1, k), indices.reshape(-1, k)


def condensed_nbytes(layer: Layer) -> int | None:
    """Bytes of the condensed arrays (None where the rows' counts differ): CSR's less its ``indptr``."""
    if constant_fan_in(layer) is None:
        return None
    return sum(array.nbytes for array in condensed(layer))
