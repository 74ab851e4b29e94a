"""FLOP accounting of masked networks, as a sparse implementation would pay it.

Counts matrix-multiply FLOPs only, the way ``torch.utils.flop_counter.FlopCounterMode`` does:
a linear layer's forward on a batch of B costs 2·nnz·B (2·in·out·B dense); its backward costs
2·nnz·B for the weight gradient and, unless its input needs no gradient, 2·nnz·B for the input
gradient. On a topology update whose growth uses the dense gradient, the weight gradient is
dense that once (RigL's accounting). Plain ``nn.Linear`` layers count as fully dense.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import nn

from sparse_rl.algorithms import get_algorithm
from sparse_rl.masks import is_masked_layer


def active_weights(layer: nn.Linear, dense: bool = False) -> int:
    """Active weights of ``layer`` (its ``nnz``); all of them if ``dense`` or if it has no mask."""
    if dense or not is_masked_layer(layer):
        return layer.weight.numel()
    return layer.nnz


def weight_grad_weights(layer: nn.Linear, dense: bool = False) -> int:
    """Weights whose gradient a backward pass computes: the active ones, or all of them for a
    layer whose weight gradient is dense by construction (``dense_weight_grad``, e.g. thresholds)."""
    return active_weights(layer, dense or (is_masked_layer(layer) and layer.dense_weight_grad))


@dataclass(frozen=True)
class NetworkFlops:
    """Per-sample FLOPs of one network's linear layers.

    :param layers: the network's linear layers by name.
    :param input_layers: names of the layers that read the network's input; their input gradient
        is only computed when the input itself needs one (e.g. actions from the actor).
    :param extra_forward: dense FLOPs per sample outside the linear layers that the sparsity does
        not change (gSDE's noise and variance products); their backward costs twice as much.
    """

    layers: Mapping[str, nn.Linear]
    input_layers: frozenset[str]
    extra_forward: int = 0

    def subset(self, prefix: str) -> NetworkFlops:
        """The layers whose names start with ``prefix`` (e.g. one Q-head)."""
        layers = {name: layer for name, layer in self.layers.items() if name.startswith(prefix)}
        return NetworkFlops(layers, frozenset(self.input_layers & set(layers)), self.extra_forward)

    def _sum(self, names: Iterable[str], dense: bool) -> int:
        return sum(2 * active_weights(self.layers[name], dense) for name in names)

    def forward(self, dense: bool = False) -> int:
        """Forward FLOPs per sample."""
        return self._sum(self.layers, dense) + self.extra_forward

    def backward(self, dense: bool = False, input_grad: bool = False, weight_grads: bool = True) -> int:
        """Backward FLOPs per sample: weight gradients (unless not ``weight_grads``), and input gradients of every
        layer except the input layers (those too when ``input_grad``)."""
        input_grads = [n for n in self.layers if input_grad or n not in self.input_layers]
        weights = sum(2 * weight_grad_weights(layer, dense) for layer in self.layers.values()) if weight_grads else 0
        return weights + self._sum(input_grads, dense) + 2 * self.extra_forward

    def dense_weight_grad_extra(self) -> int:
        """Extra FLOPs per sample when the weight gradient is computed dense instead of sparse."""
        return self._sum(self.layers, dense=True) - self._sum(self.layers, dense=False)


@dataclass(frozen=True)
class TrainStepFlops:
    """FLOPs of one actor-critic training step, split by the optimizer step they belong to."""

    critic_step: int
    """Everything computed for one critic update (target, critic forward and backward)."""
    actor_step: int
    """Everything computed for one actor update (actor forward, critic forward, backward)."""
    critic_controller_update: int
    """Extra cost of a critic topology update that needs the dense gradient."""
    actor_controller_update: int


def actor_critic_step_flops(algo: str, actor: NetworkFlops, critic: NetworkFlops, batch_size: int,
                            dense: bool = False, extra_actor_forwards: int = 0,
                            critic_weight_grads_in_actor_loss: bool = True) -> TrainStepFlops:
    """FLOPs of the ``train()`` of SB3's SAC and TD3 or sb3-contrib's TQC and CrossQ per gradient step:

    SAC and TQC, per step: actor on next obs (no grad), target critics, critics, critic backward;
    actor on obs, critics on its actions, backward through critics (to the actions) and actor.
    TQC's quantile heads are the critics' last layers, so they count as layers do.
    TD3: target actor and target critics, critics, critic backward; per delayed actor step: actor,
    first Q-head, backward through that head and the actor.
    CrossQ: actor on next obs (no grad), then one joint critic forward of current and next batch
    (2B rows: the second ``critic.forward`` SAC spends on its targets) and its backward over all 2B
    rows; per delayed actor step as SAC. BatchRenorm is element-wise (no matrix FLOPs), but its
    learned scale needs the input gradient of the layer after it (:func:`sparse_rl.sb3.flops.network_flops`).
    ``extra_actor_forwards`` more actor forwards per sample go with each critic step (RLx2's bonuses).
    The backward through the critics in the actor's loss computes their weight gradients too, as SB3's critics do,
    unless not ``critic_weight_grads_in_actor_loss`` (the sparse critics: :mod:`sparse_rl.sb3.actor_loss`).
    """
    facts = get_algorithm(algo)
    actor_q = critic.subset(next(iter(critic.layers)).split(".")[0] + ".") if facts.actor_q_first_head else critic
    critic_rows = 2 if facts.joint_critic_batch else 1
    critic_step = ((1 + extra_actor_forwards) * actor.forward(dense) + 2 * critic.forward(dense)
                   + critic_rows * critic.backward(dense))
    actor_step = (actor.forward(dense) + actor_q.forward(dense)
                  + actor_q.backward(dense, input_grad=True, weight_grads=critic_weight_grads_in_actor_loss)
                  + actor.backward(dense))
    return TrainStepFlops(
        critic_step=critic_step * batch_size,
        actor_step=actor_step * batch_size,
        critic_controller_update=0 if dense else critic.dense_weight_grad_extra() * critic_rows * batch_size,
        actor_controller_update=0 if dense else actor.dense_weight_grad_extra() * batch_size,
    )
