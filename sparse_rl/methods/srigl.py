"""SRigL (Lasby et al., ICLR 2024, "Dynamic Sparse Training with Structured Sparsity").

Every output neuron of a layer has the same fan-in k = round(d_l · fan_in), d_l the layer's ERK
share of the network's density. At each RigL update (ΔT, cosine-decayed drop fraction α):

1. *saliency*, as unstructured RigL would choose it within the layer: the active weights that
   survive dropping the round(α · nnz) smallest magnitudes, and as many inactive positions with
   the largest |gradient|;
2. *neuron ablation*: a hidden neuron with fewer than γ_sal · k salient weights is removed (no
   incoming and no outgoing weights), keeping enough neurons to hold the layer's budget; the
   budget (its initial number of weights) is redistributed, k = round(budget / live neurons);
3. *constant fan-in*: each live neuron keeps its surviving weights by magnitude and grows by
   gradient until it has exactly k (new weights start at 0, their optimizer state zeroed).

Where the paper and the authors' code (calgaryml/condensed-sparsity) differ, this follows the
paper: the ablation threshold is γ_sal · k (the code compares with γ_sal · dense fan-in unless a
flag asks for the sparse one), and growth candidates are inactive positions only (the code ranks
every position by gradient). As in the code, γ_sal = 0.3 and output layers are never ablated.
A neuron's outgoing connections are removed in the layers that read it, which grow elsewhere
to keep their own fan-in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from sparse_rl.criteria import Criterion
from sparse_rl.distributions import layer_densities
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import LayerUpdateStats
from sparse_rl.methods.kind import MethodKind, MethodPreset
from sparse_rl.methods.prune_grow import PruneGrowController, prune_grow_controller
from sparse_rl.neurons import hidden_layers
from sparse_rl.schedules import UpdateSchedule, check_drop_fraction

if TYPE_CHECKING:
    from sparse_rl.sparsity import SparsityConfig


def constant_fan_in(shape: tuple[int, int], density: float) -> int:
    """k = round(density · fan_in), at least 1 and at most fan_in."""
    return min(shape[1], max(1, round(density * shape[1])))


def random_fan_in_mask(shape: tuple[int, int], k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A boolean mask with exactly ``k`` active inputs per row, placed uniformly at random."""
    rows = torch.rand(shape, generator=generator).topk(k, dim=1).indices
    return torch.zeros(shape, dtype=torch.bool).scatter_(1, rows, True)


@torch.no_grad()
def init_constant_fan_in(layers: Mapping[str, SparseLinear], density: float, distribution: str = "erk",
                         dense_layers: Iterable[str] = (), generator: torch.Generator | None = None) -> dict[str, int]:
    """Give each layer a random constant-fan-in mask at its share of ``density``; returns the counts."""
    shapes = {name: (layer.out_features, layer.in_features) for name, layer in layers.items()}
    densities = layer_densities(shapes, density, distribution, dense_layers)
    counts = {}
    for name, layer in layers.items():
        k = constant_fan_in(shapes[name], densities[name])
        layer.set_mask(random_fan_in_mask(shapes[name], k, generator).to(layer.device))
        counts[name] = k * layer.out_features
    return counts


def _row_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` highest scores of every row, as a boolean mask."""
    top = scores.topk(k, dim=1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)


def salient_counts(mask: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, drop_fraction: float,
                   allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights kept by unstructured RigL's drop, salient weights per row: kept + grow candidates)."""
    active = mask & allowed
    n_ones = int(mask.sum())
    n_prune = round(drop_fraction * n_ones)
    n_keep = min(n_ones - n_prune, int(active.sum()))
    flat_keep = weight.abs().double().masked_fill(~active, -1.0).flatten().topk(n_keep).indices
    keep = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    keep[flat_keep] = True
    candidates = ~mask & allowed
    n_grow = min(n_prune, int(candidates.sum()))
    grow = torch.zeros_like(keep)
    grow[grad.abs().double().masked_fill(~candidates, -1.0).flatten().topk(n_grow).indices] = True
    return keep.view_as(mask), (keep | grow).view_as(mask).sum(dim=1)


def neurons_to_ablate(salient: torch.Tensor, k: int, gamma: float, min_neurons: int) -> torch.Tensor:
    """Rows with fewer than ``gamma · k`` salient weights, but at most ``len - min_neurons`` of them
    (the least salient go first)."""
    ablate = salient.double() < gamma * k
    spare = salient.numel() - min_neurons
    if int(ablate.sum()) > spare:
        order = salient.argsort(stable=True)
        ablate = torch.zeros_like(ablate)
        ablate[order[:max(spare, 0)]] = True
    return ablate


def srigl_layer_update(mask: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, drop_fraction: float,
                       budget: int, gamma: float, ablatable: bool, forbidden: torch.Tensor) -> torch.Tensor:
    """One layer's SRigL update (see the module docstring); ``forbidden`` marks the input columns
    (ablated neurons of the layer before) that may hold no weight. Returns the new mask."""
    allowed = ~forbidden.unsqueeze(0).expand_as(mask)
    fan_in_allowed = int((~forbidden).sum())
    live = mask.any(dim=1)
    k = int(mask[live].sum(dim=1).max()) if bool(live.any()) else mask.shape[1]
    keep, salient = salient_counts(mask, weight, grad, drop_fraction, allowed)
    ablate = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
    if ablatable and gamma > 0:
        min_neurons = -(-budget // max(fan_in_allowed, 1))
        ablate = neurons_to_ablate(salient, k, gamma, min_neurons)
    new_k = min(fan_in_allowed, max(1, round(budget / max(1, int((~ablate).sum())))))
    w, g = weight.abs().double(), grad.abs().double()
    scores = torch.where(keep, 2.0 + w / w.max().clamp_min(1e-30), g / g.max().clamp_min(1e-30))
    new_mask = _row_top(scores.masked_fill(~allowed, -1.0), new_k)
    new_mask[ablate] = False
    return new_mask


class SRigLController(PruneGrowController):
    """RigL with constant fan-in and neuron ablation (see the module docstring).

    :param consumers: for each hidden layer, the layers that read its output (others are never ablated).
    :param gamma: γ_sal.
    Other parameters as :class:`~sparse_rl.masks.PruneGrowController`.
    """

    def __init__(self, layers: Mapping[str, SparseLinear], prune: Criterion | None, grow: Criterion | None,
                 schedule: UpdateSchedule | None, targets: Mapping[str, SparseLinear] | None = None,
                 grow_uses_gradient: bool = True, consumers: Mapping[str, tuple[str, ...]] | None = None,
                 gamma: float = 0.3) -> None:
        super().__init__(layers, prune, grow, schedule, targets, grow_uses_gradient)
        self.consumers = {name: tuple(c for c in names if c in self.layers)
                          for name, names in (consumers or {}).items()}
        self.gamma = gamma
        self._budget_names = {name: "budget_" + name.replace(".", "_") for name in self.layers}
        for name, layer in self.layers.items():
            self.register_buffer(self._budget_names[name], torch.tensor(float(layer.nnz), dtype=torch.float64))

    def budget(self, name: str) -> int:
        """The number of weights layer ``name`` was given (kept through ablations)."""
        return int(getattr(self, self._budget_names[name]))

    def producers(self, name: str) -> list[str]:
        return [producer for producer, names in self.consumers.items() if name in names]

    @torch.no_grad()
    def update(self, drop_fraction: float, optimizer: torch.optim.Optimizer | None = None
               ) -> dict[str, LayerUpdateStats]:
        """One SRigL update of every layer, producers before the layers that read them."""
        drop_fraction = check_drop_fraction(drop_fraction)
        self.num_updates += 1
        stats = {}
        for name, layer in self.layers.items():
            old = layer.mask.clone()
            forbidden = torch.zeros(layer.in_features, dtype=torch.bool, device=old.device)
            for producer in self.producers(name):
                forbidden |= ~self.layers[producer].mask.any(dim=1)
            weight, grad = layer.score_weight(), layer.score_grad()
            grad = grad if grad is not None else torch.zeros_like(weight)
            if not (bool(torch.isfinite(weight).all()) and bool(torch.isfinite(grad).all())):
                raise FloatingPointError(f"non-finite weights or gradients in layer {name} at optimizer step "
                                         f"{self.current_step}: the network diverged")
            new = srigl_layer_update(old, weight, grad, drop_fraction, self.budget(name), self.gamma,
                                     name in self.consumers, forbidden)
            self.set_layer_mask(name, new, new ^ old, optimizer)
            stats[name] = self._stats(layer, old, int((old & ~new).sum()))
        self.last_stats = stats
        return stats

    def log_values(self) -> dict[str, float]:
        """``ablated``: hidden neurons with no incoming weight."""
        return {"ablated": float(sum(int((~self.layers[name].mask.any(dim=1)).sum()) for name in self.consumers))}


@dataclass(frozen=True)
class SRigLSettings:
    """The ``srigl`` method's own ``policy_kwargs``.

    :param srigl_gamma: γ_sal, the share of k a hidden neuron needs as salient weights to stay (0: no ablation).
    """

    srigl_gamma: float = 0.3

    def check(self, config: SparsityConfig) -> None:
        gamma = self.srigl_gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma <= 1:
            raise ValueError(f"srigl_gamma must be a number in [0, 1], got {gamma!r}")


def srigl_controller(config: SparsityConfig, network: str, online: nn.Module,
                     target: nn.Module | None) -> PruneGrowController:
    """The SRigL controller of one network: RigL's criteria and schedule, constant fan-in updates."""
    consumers = {name: hidden.consumers for name, hidden in hidden_layers(online).items()}
    return prune_grow_controller(config, network, online, target,
                               partial(SRigLController, consumers=consumers, gamma=config.settings.srigl_gamma))


KIND = MethodKind(
    name="srigl", layer_class=SparseLinear, make_controller=srigl_controller,
    presets=(MethodPreset("srigl", "srigl", "magnitude", "gradient",
                          "Lasby et al. 2024, Structured RigL (constant fan-in, neuron ablation)"),),
    settings_class=SRigLSettings, init_masks=init_constant_fan_in,
)
