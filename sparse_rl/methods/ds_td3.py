"""DS-TD3 (Sokar et al., IJCAI 2022, "Dynamic Sparse Training for Deep Reinforcement Learning").

The rules of the paper: ER densities on the hidden layers with the output layers dense; every
ΔT = 1000 optimizer steps, drop 5 % of the positive and 5 % of the negative weights closest to
zero (criterion ``signed_fraction``, drop fraction 0.05, no decay) and grow as many at random,
new weights at 0; no updates in the last 50,000 of the paper's 1M steps (``update_end`` 0.95, a
fraction, so it scales with the budget). Target networks follow the paper's rule by default
(``target_rule="magnitude"``): before every forward pass each target layer is pruned back to its
online layer's count by magnitude, so Polyak averaging brings in the online network's new
connections as they grow; ``target_rule="shared"`` gives the shared-mask rule of the other methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sparse_rl.criteria import Criterion
from sparse_rl.layers import SparseLinear
from sparse_rl.methods.kind import MethodKind, MethodPreset
from sparse_rl.methods.prune_grow import PruneGrowController, prune_grow_controller
from sparse_rl.schedules import UpdateSchedule

if TYPE_CHECKING:
    from sparse_rl.sparsity import SparsityConfig

TARGET_RULES = ("magnitude", "shared")


@dataclass(frozen=True)
class DSTD3Settings:
    """The ``ds-td3`` method's own ``policy_kwargs``.

    :param target_rule: ``magnitude`` (targets pruned back to the online count by magnitude, the
        paper's rule) or ``shared`` (targets take the online masks).
    """

    target_rule: str = "magnitude"

    def check(self, config: SparsityConfig) -> None:
        if self.target_rule not in TARGET_RULES:
            raise ValueError(f"unknown target_rule {self.target_rule!r}; allowed: {', '.join(TARGET_RULES)}")


@torch.no_grad()
def prune_to_count(layer: SparseLinear, count: int, candidates: torch.Tensor | None = None) -> None:
    """Keep the ``count`` largest-magnitude weights of ``layer`` (its mask then has exactly ``count``);
    ``candidates``, a boolean tensor shaped like the weight, limits the choice to where weights can be
    non-zero (the rest are 0 and would only fill ties)."""
    flat = layer.weight.flatten()
    index = (torch.arange(flat.numel(), device=flat.device) if candidates is None
             else candidates.flatten().nonzero().squeeze(1))
    if index.numel() < count:
        index = torch.arange(flat.numel(), device=flat.device)
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[index[flat[index].abs().topk(count, sorted=False).indices]] = True
    layer.set_mask(keep.view_as(layer.weight))


class DSTD3Controller(PruneGrowController):
    """A :class:`~sparse_rl.masks.PruneGrowController` whose targets follow ``target_rule``."""

    def __init__(self, layers: Mapping[str, SparseLinear], prune: Criterion | None, grow: Criterion | None,
                 schedule: UpdateSchedule | None, targets: Mapping[str, SparseLinear] | None = None,
                 target_rule: str = "magnitude", grow_uses_gradient: bool = False) -> None:
        super().__init__(layers, prune, grow, schedule, targets, grow_uses_gradient=grow_uses_gradient)
        self.target_rule = target_rule
        if target_rule == "magnitude":
            for name, target in self.targets.items():
                target.register_forward_pre_hook(self._prune_target_hook(name))

    def _prune_target_hook(self, name: str) -> Any:
        online = self.layers[name]

        def hook(target: SparseLinear, inputs: Any) -> None:
            """Prune the target back to the online count if a Polyak update left weights outside its mask;
            only positions active in the target or the online layer can be non-zero. The check reads the
            weights, not their version counter: SB3's ``polyak_update`` writes through ``.data``, which
            the counter does not see."""
            with torch.no_grad():
                if not target.weight.masked_fill(target.mask, 0).any():
                    return
            prune_to_count(target, online.nnz, target.mask | online.mask)

        return hook

    @torch.no_grad()
    def mirror_to_target(self, online: SparseLinear, target: SparseLinear, changed: torch.Tensor | None) -> None:
        """``shared``: the target takes the online mask; ``magnitude``: nothing here, the target is
        pruned to the online count before its next forward pass."""
        if self.target_rule == "shared":
            super().mirror_to_target(online, target, changed)


def ds_td3_controller(config: SparsityConfig, network: str, online: nn.Module,
                      target: nn.Module | None) -> PruneGrowController:
    """The DS-TD3 controller of one network: the prune-grow kind's, with this kind's target rule."""
    return prune_grow_controller(config, network, online, target,
                               partial(DSTD3Controller, target_rule=config.settings.target_rule))


KIND = MethodKind(
    name="ds-td3", layer_class=SparseLinear, make_controller=ds_td3_controller,
    presets=(MethodPreset("ds-td3", "ds-td3", "signed_fraction", "random",
                          "Sokar et al. 2022, Dynamic Sparse Training for Deep RL (DS-TD3)",
                          defaults={"distribution": "er", "dense_output": True, "update_interval": 1000,
                                    "drop_fraction": 0.05, "decay": "constant", "update_end": 0.95}),),
    settings_class=DSTD3Settings,
    compact=False,  # the magnitude rule gives each target a pattern of its own, which Polyak's pairing cannot follow
)
