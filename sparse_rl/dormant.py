"""Dormant neurons of one network, measured on the algorithm's own replay batch, and ReDo's recycling.

:class:`DormantMonitor` hooks the activation module after every hidden layer
(:func:`~sparse_rl.neurons.hidden_layers`). One step before each measurement step it arms the
hooks, which then record the per-neuron scores of the last forward pass in training mode (SB3's
``train()`` batch; ``predict`` runs in eval mode and is ignored). Measurement steps are the
topology-update steps (every ``update_interval`` optimizer steps), for every method; with
``recycle_dormant=τ`` the neurons dormant at τ are recycled every ``recycle_interval`` steps,
after the optimizer step (:func:`~sparse_rl.neurons.redo_reinit`), masks kept or, with
``recycle_regrow``, their incoming connections regrown where the gradient is largest.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparse_rl.controller import MaskController
from sparse_rl.neurons import dead_neurons, dormant_neurons, dormant_scores, hidden_layers, redo_reinit

TAUS = (0.0, 0.1)
"""The thresholds every run logs."""


class DormantMonitor:
    """Dormant-neuron measurement (and optional recycling) of one network.

    :param controller: the network's controller (its layers, step counter and mask changes).
    :param network: the online network.
    :param interval: optimizer steps between measurements.
    :param recycle_tau: τ of ReDo's recycling, or ``None`` for none.
    :param recycle_interval: optimizer steps between recyclings.
    :param regrow: also move a recycled neuron's incoming connections to its largest gradients.
    :param sparse_init: re-initialise at the active fan-in's scale (as ``sparse_init`` does).
    """

    def __init__(self, controller: MaskController, network: nn.Module, interval: int,
                 recycle_tau: float | None = None, recycle_interval: int = 1000, regrow: bool = False,
                 sparse_init: bool = False) -> None:
        self.controller, self.interval = controller, interval
        self.recycle_tau, self.recycle_interval, self.regrow = recycle_tau, recycle_interval, regrow
        self.sparse_init = sparse_init
        self.hidden = {name: h for name, h in hidden_layers(network).items() if name in controller.layers}
        self.scores: dict[str, torch.Tensor] = {}
        self.values: dict[str, float] = {}
        self.recycled = 0
        self._armed = False
        self._steps = 0
        self._attached = False
        self._handles: list[Any] = []

    def _arm(self, armed: bool) -> None:
        """Hook the activations only for the steps that measure or recycle: a forward hook makes every call of its
        module take PyTorch's slower hooked path."""
        self._armed = armed
        if armed and not self._handles:
            self._handles = [hidden.activation.register_forward_hook(self._hook(name))
                             for name, hidden in self.hidden.items()]
        elif not armed:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if self._armed and module.training and output.dim() == 2:
                self.scores[name] = dormant_scores(output)
        return hook

    @property
    def step(self) -> int:
        """Optimizer steps so far (the controller's count when its hooks run, else the monitor's own)."""
        return self.controller.current_step if self._attached else self._steps

    def attach(self, optimizer: torch.optim.Optimizer, controller_attached: bool) -> None:
        """Hook ``optimizer`` (after the controller, so its hooks run after the controller's)."""
        self._attached = controller_attached
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: self._before_step())
        optimizer.register_step_post_hook(lambda opt, args, kwargs: self._after_step(opt))

    def _due(self, step: int) -> tuple[bool, bool]:
        recycle = self.recycle_tau is not None and step % self.recycle_interval == 0
        return step % self.interval == 0, recycle

    def _before_step(self) -> None:
        self._steps += 1
        measure, _ = self._due(self.step)
        if measure and self.scores:
            self.values = self.measure()

    def _after_step(self, optimizer: torch.optim.Optimizer) -> None:
        _, recycle = self._due(self.step)
        if recycle and self.scores:
            self.recycle(optimizer)
        self.scores = {}
        measure, recycle = self._due(self.step + 1)
        self._arm(measure or recycle)
        if recycle and self.regrow:
            for name in self.hidden:
                self.controller.layers[name].dense_grad_needed = True

    def measure(self) -> dict[str, float]:
        """Fractions of the hidden neurons that are τ-dormant (dead ones apart) and dead."""
        total = sum(int(score.numel()) for score in self.scores.values())
        dead = {name: dead_neurons(self.controller.layers[name]) for name in self.scores}
        values = {f"tau{tau:g}": sum(int((dormant_neurons(score, tau) & ~dead[name]).sum())
                                     for name, score in self.scores.items()) / max(total, 1) for tau in TAUS}
        values["dead"] = sum(int(d.sum()) for d in dead.values()) / max(total, 1)
        return values

    @torch.no_grad()
    def recycle(self, optimizer: torch.optim.Optimizer | None) -> int:
        """Recycle the neurons dormant at τ in the recorded scores (dead ones have nothing to re-initialise)."""
        assert self.recycle_tau is not None
        count = 0
        for name, score in self.scores.items():
            layer = self.controller.layers[name]
            neurons = dormant_neurons(score, self.recycle_tau) & ~dead_neurons(layer)
            if not bool(neurons.any()):
                continue
            if self.regrow and layer.score_grad() is not None:
                self._regrow(name, neurons, optimizer)
            consumers = [self.controller.layers[c] for c in self.hidden[name].consumers if c in self.controller.layers]
            redo_reinit(layer, consumers, neurons, optimizer, self.sparse_init)
            count += int(neurons.sum())
        self.recycled += count
        return count

    def _regrow(self, name: str, neurons: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        """Give each recycled neuron its fan-in's worth of incoming connections where |grad| is largest."""
        layer = self.controller.layers[name]
        old = layer.mask
        fan_in = old.sum(dim=1)
        ranks = layer.score_grad().abs().argsort(dim=1, descending=True).argsort(dim=1)
        new = torch.where(neurons.unsqueeze(1), ranks < fan_in.unsqueeze(1), old)
        changed = new ^ old
        if bool(changed.any()):
            self.controller.set_layer_mask(name, new, changed, optimizer)

    def log_values(self) -> dict[str, float]:
        """The last measurement, and the neurons recycled so far."""
        return {**self.values, **({"recycled": float(self.recycled)} if self.recycle_tau is not None else {})}
