"""Making a network sparse at construction: every plain ``nn.Linear`` becomes its method kind's layer at its share
of the network's density, with its first random pattern.

A layer that ends on the compact layout is built there directly from the ``nn.Linear`` (its values gathered at the
drawn positions, or drawn there when SB3 built the layer on the meta device: :mod:`sparse_rl.deferred_init`), so no
dense copy, mask or float mask of it ever exists: building a wide network costs what the built network holds
(``benchmarks/sparse_speed.py --part memory``). The random numbers drawn are the same as when
every layer was first copied dense and then masked (:func:`draw_like_linear_init` stands in for a copy's
initialisation), so a seed gives the same masks and weights whichever way a layer is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from sparse_rl.backends import layout_for_shape
from sparse_rl.backends.auto import is_narrow_output_layer
from sparse_rl.deferred_init import DeferredInit, draw_like_linear_init
from sparse_rl.distributions import layer_counts, layer_densities
from sparse_rl.layers import SparseLinear
from sparse_rl.masks import init_masks, positions_mask, random_positions, sparse_layers
from sparse_rl.methods import KINDS
from sparse_rl.network_layout import set_backend
from sparse_rl.relu_fusion import fuse_relus
from sparse_rl.sparsity import NetworkSparsity


def plain_linears(module: nn.Module, skip: str = "features_extractor") -> dict[str, nn.Linear]:
    """Every plain ``nn.Linear`` under ``module`` outside submodules called ``skip``, by qualified name, in order."""
    found = {}
    for name, child in module.named_children():
        if name == skip:
            continue
        if type(child) is nn.Linear:
            found[name] = child
        else:
            found.update({f"{name}.{inner}": layer for inner, layer in plain_linears(child, skip).items()})
    return found


def set_submodule(module: nn.Module, name: str, layer: nn.Module) -> None:
    """Put ``layer`` at the qualified ``name`` under ``module``."""
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, child, layer)


@torch.no_grad()
def rescale_to_active_fan_in(layer: SparseLinear) -> None:
    """Multiply each output neuron's weights by sqrt(dense fan-in / active fan-in): the variance of its
    pre-activation then matches the dense layer's at initialisation (Evci et al. 2022's sparse init)."""
    if layer.layout == "compact":
        structure, values = layer.compact_structure(), layer.trainable_weight()
        active_fan_in = (structure.crow[1:] - structure.crow[:-1]).clamp(min=1).to(values.dtype)
        factor = torch.sqrt(layer.in_features / active_fan_in)
        values.mul_(torch.repeat_interleave(factor, (structure.crow[1:] - structure.crow[:-1]).to(torch.int64)))
        return
    active_fan_in = layer.mask.sum(dim=1).clamp(min=1).to(layer.weight.dtype)
    layer.weight.mul_(torch.sqrt(layer.in_features / active_fan_in).unsqueeze(1))


def sparsify(module: nn.Module, sparsity: NetworkSparsity, output_layers: Iterable[str],
             deferred: Mapping[nn.Linear, DeferredInit] | None = None) -> None:
    """Swap ``module``'s plain linear layers for ``sparsity``'s kind's layers with their first patterns (the
    ``output_layers`` kept dense too when ``sparsity.dense_output``), each in the layout its backend gives.
    ``deferred``: the meta-built linear layers (:func:`~sparse_rl.deferred_init.linears_on_meta`); a compact layer
    draws its initial values at its positions only, every other one is materialized first."""
    kind = KINDS[sparsity.kind]
    keep_dense = sparsity.dense_layers + (tuple(output_layers) if sparsity.dense_output else ())
    linears = plain_linears(module)
    deferred = deferred or {}
    direct = kind.compact and kind.holds_density and kind.init_masks is init_masks and kind.layer_class is SparseLinear
    if direct:
        _build_in_layout(module, linears, sparsity, keep_dense, deferred)
    else:
        _materialize(linears.values(), deferred)
        for name, linear in linears.items():
            set_submodule(module, name, kind.layer_class.from_dense(linear))  # type: ignore[attr-defined]  # every kind's layer class has one
        kind.init_masks(sparse_layers(module), sparsity.density, sparsity.distribution, keep_dense)
    _materialize((m for m in module.modules() if type(m) is nn.Linear), deferred)  # plain layers left (skipped)
    for layer in sparse_layers(module).values():
        if sparsity.sparse_init:
            rescale_to_active_fan_in(layer)
        if not (kind.compact and kind.holds_density):
            layer.compact_capable = False
    fuse_relus(module)
    set_backend(module, sparsity.backend)


def _materialize(linears: Iterable[nn.Linear], deferred: Mapping[nn.Linear, DeferredInit]) -> None:
    for linear in linears:
        if linear in deferred and linear.weight.is_meta:
            deferred[linear].materialize(linear)


def _build_in_layout(module: nn.Module, linears: dict[str, nn.Linear], sparsity: NetworkSparsity,
                     keep_dense: tuple[str, ...], deferred: Mapping[nn.Linear, DeferredInit]) -> None:
    """Each layer built in its final layout; the random draws in the order of copy-all-then-mask-all."""
    shapes = {name: (linear.out_features, linear.in_features) for name, linear in linears.items()}
    counts = layer_counts(shapes, layer_densities(shapes, sparsity.density, sparsity.distribution, keep_dense))
    devices = {name: torch.device("cpu") if linear in deferred else linear.weight.device
               for name, linear in linears.items()}
    def builds_compact(name: str, in_sparse_network: bool) -> bool:
        out_features, in_features = shapes[name]
        return layout_for_shape(in_features, out_features, counts[name] / (out_features * in_features), devices[name],
                                sparsity.backend, True, in_sparse_network) == "compact"

    compact = {name: builds_compact(name, False) for name in shapes}
    sparse_body = any(compact[name] for name, (out_features, in_features) in shapes.items()
                      if not is_narrow_output_layer(in_features, out_features))  # heads follow the body's layouts
    compact = {name: builds_compact(name, sparse_body) for name in shapes}
    _materialize((linear for name, linear in linears.items() if not compact[name]), deferred)
    for name, linear in linears.items():
        if compact[name]:
            draw_like_linear_init(linear)
        else:
            set_submodule(module, name, SparseLinear.from_dense(linear))
    for name, linear in linears.items():
        positions = random_positions(shapes[name], counts[name])
        if compact[name]:
            initial = deferred[linear].weight_at(linear, positions) if linear in deferred else None
            set_submodule(module, name, SparseLinear.from_active(linear, positions, initial))
        else:
            layer = module.get_submodule(name)
            layer.set_mask(positions_mask(positions, shapes[name], linear.weight.device))  # type: ignore[operator]  # a SparseLinear
