"""Consecutive compact layers of one ``nn.Sequential`` run as one autograd node.

Each compact layer called alone is a module call and an autograd function: about 40 µs of Python and autograd
bookkeeping per layer for its forward and backward together, against 30-120 µs of kernel time at SAC's widths. A
:class:`~sparse_rl.relu_fusion.FusedReLUSequential` (SB3's MLPs, once sparsified) hands each run of two or more
compact layers (with the ReLUs fused into them) to :func:`forward`, which runs the same kernels on the same
tensors, layer after layer, inside one :class:`torch.autograd.Function`: the values, gradients and the output's
rectified tag are those of the layers called one by one, bit for bit (``tests/test_compact_chain.py``). A run that
ends in a one-output layer (a critic's Q head, :func:`fuses_head`) runs that layer inside the one before it: its
forward sum takes each output row of that layer while the row is in cache, and that layer's backward makes its
output gradient from the head's row by row, so the head's input (1 MB at width 1024, batch 256) is not read again
and its input gradient is never written out.

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
        y = _forward_kernels(x.t().contiguous(), parameters, structures, relus, fuses_head(structures, relus),
                             None).t()
    return mark_rectified(y) if relus[-1] else y


def fuses_head(structures: list[CompactStructure], relus: list[bool]) -> bool:
    """Whether a run ends in a one-output layer without a ReLU (a critic's Q head) that runs inside the layer before
    it: its forward in that layer's forward pass over the rows (:func:`~sparse_rl.backends.kernels.
    layer_forward_into_head`), its input gradient in that layer's backward (``layer_backward``'s ``head``). Its
    output and gradients are the same floats; what it saves is the head reading the layer's whole output again, and
    writing and that layer reading back the whole gradient of it (1 MB each at width 1024, batch 256)."""
    return len(structures) >= 2 and structures[-1].shape[0] == 1 and not relus[-1]


def _forward_kernels(x_t: torch.Tensor, parameters: list[Any], structures: list[CompactStructure],
                     relus: list[bool], fused: bool, saved: list[torch.Tensor | None] | None) -> torch.Tensor:
    """The run's forward kernels from ``x_t`` (``(in, batch)``), the last layer inside the one before it where
    ``fused`` (:func:`fuses_head`), appending what each layer's backward reads to ``saved`` (its input, its values
    and, with a fused ReLU, its output) where given; returns ``(out, batch)``."""
    count = len(structures)
    for i in range(count - 1 if fused else count):
        values, bias, structure, relu = parameters[2 * i], parameters[2 * i + 1], structures[i], relus[i]
        if fused and i == count - 2:
            y_t, out_t = kernels.layer_forward_into_head(values, structure, x_t, bias, relu, parameters[-2],
                                                         structures[-1], parameters[-1])
        else:
            y_t = out_t = kernels.layer_forward(values, structure, x_t, bias, relu)
        if saved is not None:
            saved += [x_t, values, y_t if relu else None]
        x_t = y_t
    if fused and saved is not None:
        saved += [x_t, parameters[-2], None]  # the head's input: the layer before's output
    return out_t


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
        saved: list[torch.Tensor | None] = []
        ctx.fused_head = fuses_head(structures, relus)
        # (in, batch): copied unless the input is feature-major
        y_t = _forward_kernels(x.t().contiguous(), list(parameters), structures, relus, ctx.fused_head, saved)
        ctx.save_for_backward(*saved)
        ctx.structures, ctx.feature_major, ctx.input_from = structures, feature_major, input_from
        return y_t.t()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad
        count = len(ctx.structures)
        wants_values = [needs[5 + 2 * i] for i in range(count)]
        wants_bias = [needs[6 + 2 * i] for i in range(count)]  # never true for a missing bias
        # upstream[i]: whether anything before layer i wants a gradient, so layer i must hand one back
        upstream = [needs[0]]
        for i in range(count - 1):
            upstream.append(upstream[-1] or wants_values[i] or wants_bias[i])
        grads: list[torch.Tensor | None] = [None] * (2 * count)
        dy_t: torch.Tensor | None = grad_output.t().contiguous()  # (out, batch); a no-op for feature-major gradients
        head = None
        for i in range(count - 1, -1, -1):
            x_t, values, rectified_t = saved[3 * i:3 * i + 3]
            if ctx.fused_head and i == count - 1:  # its input gradient runs inside the layer before's backward
                if wants_values[i] or wants_bias[i]:
                    _, grads[2 * i], grads[2 * i + 1] = kernels.layer_backward(
                        values, ctx.structures[i], dy_t, x_t, None, (False, wants_values[i], wants_bias[i]))
                assert dy_t is not None
                head, dy_t = (values, ctx.structures[i], dy_t), None
            else:
                dy_t, grads[2 * i], grads[2 * i + 1] = kernels.layer_backward(
                    values, ctx.structures[i], dy_t, x_t, rectified_t, (upstream[i], wants_values[i], wants_bias[i]),
                    0 if i else ctx.input_from, head)
                head = None
            if not upstream[i]:
                break
        grad_x = None if dy_t is None or not needs[0] else dy_t.t()
        if grad_x is not None and not ctx.feature_major:  # the input's own layout
            grad_x = grad_x.contiguous()
        return grad_x, None, None, None, None, *grads
