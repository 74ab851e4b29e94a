"""The ``masked`` kind: ``SparseLinear`` layers rewired by a (prune, grow) pair of criteria on an
update schedule (:class:`~sparse_rl.topology.TopologyController`), and its presets."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from sparse_rl.layers import SparseLinear
from sparse_rl.methods.kind import MethodKind, MethodPreset
from sparse_rl.topology import TopologyController, sparse_layers

if TYPE_CHECKING:
    from sparse_rl.sparsity import SparsityConfig


def topology_controller(config: SparsityConfig, network: str, online: nn.Module, target: nn.Module | None,
                        controller_class: Callable[..., TopologyController] = TopologyController) -> TopologyController:
    """A ``controller_class`` for ``online``'s sparse layers on ``config``'s criteria and schedule."""
    criteria = config.criteria()
    prune, grow = criteria if criteria else (None, None)
    return controller_class(sparse_layers(online), prune, grow, config.schedule(),
                            sparse_layers(target) if target is not None else None,
                            grow_uses_gradient=config.grow_uses_dense_gradient())


KIND = MethodKind(
    name="masked",
    layer_class=SparseLinear,
    make_controller=topology_controller,
    presets=(
        MethodPreset("rigl", "masked", "magnitude", "gradient", "Evci et al. 2020, Rigging the Lottery"),
        MethodPreset("set", "masked", "set", "random", "Mocanu et al. 2018, Sparse Evolutionary Training"),
        MethodPreset("mest", "masked", "mest", "random", "Yuan et al. 2021, MEST"),
        MethodPreset("dst-ee", "masked", "magnitude", "ucb", "Huang et al. 2023, DST-EE"),
        MethodPreset("rlx2", "masked", "magnitude", "gradient", "Tan et al. 2023, RLx2 (RigL + multi-step "
                     "targets + policy-aware replay buffer)"),
        MethodPreset("static", "masked", None, None, "fixed random sparse topology"),
        MethodPreset("dense", "masked", None, None, "dense baseline (density 1)"),
    ),
)
