"""Consecutive compact layers of one ``nn.Sequential`` run as one autograd node.

Each compact layer called alone is a module call and an autograd function: about 40 µs of Python and autograd
bookkeeping per layer for its forward and backward together, against 30-120 µs of kernel time at SAC's widths. A
:class:`~sparse_rl.relu_fusion.FusedReLUSequential` (SB3's MLPs, once sparsified) hands each run of two or more
compact layers (with the ReLUs fused into them) to :func:`forward`, which runs the same kernels on the same
tensors, layer after layer, inside one :class:`torch.autograd.Function`: the values, gradients and the output's
rectified tag are those of the layers called one by one, bit for bit (``tests/test_compact_chain.py``).

A run is only taken where nothing could tell the difference (:func:`run_length`): no module hooks on its layers or
ReLUs and no global ones (a hook sees each layer's own call; the dormant-neuron monitor hooks the ReLUs on the steps
it measures), two-dimensional input, and, with a graph to record, no layer that keeps its dense gradient on this
step (one step ahead of a gradient-scored topology update: that layer's own backward computes it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from sparse_rl.backends import compact, kernels
from sparse_rl.backends.masked import is_feature_major
from sparse_rl.relu_fusion import FusedReLUSequential, RectifiedReLU, mark_rectified

if TYPE_CHECKING:
    from sparse_rl.backends.compact import CompactStructure
    from sparse_rl.layers import SparseLinear


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _global_hooks() -> bool:
    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
                or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks)


def run_length(modules: list[nn.Module], start: int, x: torch.Tensor) -> int:
    """How many of ``modules`` from ``start`` on :func:`forward` runs as one node now: two or more compact
    :class:`~sparse_rl.layers.SparseLinear` layers in a row, each with the :class:`RectifiedReLU` fused to it if one
    follows; 0 where no such run starts at ``start`` or the run cannot be taken (see the module docstring)."""
    from sparse_rl.layers import SparseLinear  # here: the layers import the backends

    if x.dim() != 2 or _global_hooks():
        return 0
    graph = torch.is_grad_enabled()
    end, layers = start, 0
    while end < len(modules):
        layer = modules[end]
        if (not isinstance(layer, SparseLinear) or layer._compact is None or _hooked(layer)
                or (graph and layer.dense_grad_needed)):
            break
        after = modules[end + 1] if end + 1 < len(modules) else None
        if isinstance(after, RectifiedReLU):
            if _hooked(after):
                break
            end += 1
        end += 1
        layers += 1
    return end - start if layers >= 2 else 0


def successors(module: nn.Module) -> dict[nn.Module, nn.Module]:
    """Each linear layer in a :class:`~sparse_rl.relu_fusion.FusedReLUSequential` of ``module`` mapped to the linear
    layer a run would go on into, as :func:`run_length` walks one: the next module of its sequence, or the one after
    the :class:`RectifiedReLU` fused to it. ``auto`` lays an input layer out compactly at any density when the layer
    it feeds is compact, so that the two run as one node."""
    found: dict[nn.Module, nn.Module] = {}
    for sequence in module.modules():
        if not isinstance(sequence, FusedReLUSequential):
            continue
        children = list(sequence.children())
        for i, child in enumerate(children[:-1]):
            after = children[i + 1]
            if isinstance(after, RectifiedReLU) and i + 2 < len(children):
                after = children[i + 2]
            if isinstance(child, nn.Linear) and isinstance(after, nn.Linear):
                found[child] = after
    return found


def forward(modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """The output of ``modules`` (a run that :func:`run_length` measured) applied to ``x``, in one node."""
    layers, relus = _layers_and_relus(modules)
    parameters: list[Any] = [tensor for layer in layers
                             for tensor in (layer.trainable_weight(), layer._parameters["bias"])]
    structures = [layer.compact_structure() for layer in layers]
    if torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in parameters)):
        y = _CompactChainFunction.apply(x, structures, relus, is_feature_major(x),
                                        compact.input_grad_from(layers[0], x), *parameters)
    else:  # no graph to record (target networks, predict): the kernels alone
        x_t = x.t().contiguous()
        for values, bias, structure, relu in zip(parameters[::2], parameters[1::2], structures, relus):
            x_t = kernels.layer_forward(values, structure, x_t, bias, relu)
        y = x_t.t()
    return mark_rectified(y) if relus[-1] else y


def _layers_and_relus(modules: list[nn.Module]) -> tuple[list[SparseLinear], list[bool]]:
    layers: list[SparseLinear] = []
    relus: list[bool] = []
    for module in modules:
        if isinstance(module, RectifiedReLU):
            relus[-1] = True
        else:
            layers.append(module)  # type: ignore[arg-type]
            relus.append(False)
    return layers, relus


class _CompactChainFunction(torch.autograd.Function):
    """Compact layers in a row, each ``y = x Wᵀ + b`` (rectified where ``relus`` says); the parameters come as
    ``values, bias`` per layer. Saves what each layer alone saves: its input and, with a fused ReLU, its output."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, structures: list[CompactStructure], relus: list[bool],
                feature_major: bool, input_from: int, *parameters: Any) -> torch.Tensor:
        x_t = x.t().contiguous()  # (in, batch): copied unless the input is feature-major
        saved: list[torch.Tensor | None] = []
        for values, bias, structure, relu in zip(parameters[::2], parameters[1::2], structures, relus):
            y_t = kernels.layer_forward(values, structure, x_t, bias, relu)
            saved += [x_t, values, y_t if relu else None]
            x_t = y_t
        ctx.save_for_backward(*saved)
        ctx.structures, ctx.feature_major, ctx.input_from = structures, feature_major, input_from
        ctx.has_bias = [bias is not None for bias in parameters[1::2]]
        return x_t.t()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad
        count = len(ctx.structures)
        wants_values = [needs[5 + 2 * i] for i in range(count)]
        wants_bias = [needs[6 + 2 * i] and ctx.has_bias[i] for i in range(count)]
        # upstream[i]: whether anything before layer i wants a gradient, so layer i must hand one back
        upstream = [needs[0]]
        for i in range(count - 1):
            upstream.append(upstream[-1] or wants_values[i] or wants_bias[i])
        grads: list[torch.Tensor | None] = [None] * (2 * count)
        dy_t: torch.Tensor | None = grad_output.t().contiguous()  # (out, batch); a no-op for feature-major gradients
        for i in range(count - 1, -1, -1):
            assert dy_t is not None
            x_t, values, rectified_t = saved[3 * i:3 * i + 3]
            dy_t, grads[2 * i], grads[2 * i + 1] = kernels.layer_backward(
                values, ctx.structures[i], dy_t, x_t, rectified_t, (upstream[i], wants_values[i], wants_bias[i]),
                0 if i else ctx.input_from)
            if not upstream[i]:
                break
        grad_x = None if dy_t is None or not needs[0] else dy_t.t()
        if grad_x is not None and not ctx.feature_major:  # the input's own layout
            grad_x = grad_x.contiguous()
        return grad_x, None, None, None, None, *grads
