"""Wide sparse networks: every hidden width times K, and the iso-parameter density that keeps the
weight count of the dense network at K = 1 (Ma et al., ICML 2025, "Network Sparsity Unlocks the
Scaling Potential of Deep RL")."""

from __future__ import annotations

from collections.abc import Sequence


def widen(net_arch: Sequence[int], multiplier: int) -> list[int]:
    """Every hidden width of ``net_arch`` times ``multiplier``."""
    return [width * multiplier for width in net_arch]


def mlp_weights(n_in: int, widths: Sequence[int], n_out: int, copies: int = 1) -> int:
    """Weights (biases excluded) of ``copies`` MLPs ``n_in -> widths... -> n_out``."""
    sizes = [n_in, *widths, n_out]
    return copies * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def iso_param_density(n_in: int, net_arch: Sequence[int], n_out: int, multiplier: int, copies: int = 1) -> float:
    """The density at which the MLP widened by ``multiplier`` has the weights of the dense MLP at 1:
    ``d_K = weights(K = 1) / weights(K)``.

    That is a density for the whole network. Its distribution (ERK by default) splits it over the
    layers, and largest-remainder rounding makes the kept total exact. ERK gives each layer a density
    proportional to ``(n_in + n_out) / (n_in · n_out)``, capped at 1. A widened MuJoCo network
    therefore keeps its narrow input and output layers dense and puts the sparsity into the wide
    hidden layers. For SAC on HalfCheetah (17 → [256, 256] → 2 × 6, critics 2 × (23 → [256, 256] → 1))
    at K = 4: the actor gets d_K = 0.068, with 1024 × 1024 at 0.041 and the rest dense. The critics get
    d_K = 0.067, with each 1024 × 1024 at 0.045 and the rest dense.
    """
    return mlp_weights(n_in, net_arch, n_out, copies) / mlp_weights(n_in, widen(net_arch, multiplier), n_out, copies)
