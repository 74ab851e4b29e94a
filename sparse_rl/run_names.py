"""How a run is named: :func:`run_label`, the one function that names a run (its directory and its report row),
from its config's method, densities, width and the settings it changes from the packaged defaults."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from sparse_rl.algorithms import ALGO_NAMES
from sparse_rl.methods import method_label
from sparse_rl.run_config import default_config_path, file_defaults, lookup_path, read_yaml, sparsity_of, with_numbers
from sparse_rl.sparsity import NETWORKS

LABELLED_SECTIONS = ("algo_kwargs", "policy_kwargs")
LABELLED_TOP = ("total_steps", "n_envs", "action_noise_std")
"""Config fields that change what a run trains: one away from its default shows in the run's label.
``seed``, ``env``, ``algo`` and the sparsity fields have their own places in a name; ``eval_*``,
``checkpoint_freq``, ``threads`` and ``device`` change how a run is measured or where it runs, not what it learns."""
SHORT_NAMES = {"total_steps": "t", "n_envs": "envs", "action_noise_std": "noise", "algo_kwargs.learning_rate": "lr",
               "algo_kwargs.learning_starts": "ls", "algo_kwargs.batch_size": "bs", "algo_kwargs.buffer_size": "buf",
               "policy_kwargs.net_arch": "arch", "policy_kwargs.n_critics": "critics",
               "policy_kwargs.activation_fn": "act"}
LABEL_SPARSITY_KEYS = ("density", "actor_density", "critic_density", "method", "width_multiplier", "iso_params",
                       "backend", "prune", "grow", "prune_kwargs", "grow_kwargs", "sparse_init")
"""Sparsity fields the label shows elsewhere (or that only change how a layer computes: ``backend``)."""


@functools.lru_cache(maxsize=None)
def _packaged_defaults(algo: str, env: str) -> str:
    data = with_numbers(read_yaml(default_config_path(algo)))
    return yaml.safe_dump(file_defaults(data, env))


def short_name(path: str) -> str:
    """A changed setting's name in a label: :data:`SHORT_NAMES`, else the key (``tau``, ``update_interval``),
    with its section for ``policy_kwargs``, whose keys SAC's own arguments share (``use_sde``)."""
    section, _, key = path.rpartition(".")
    return SHORT_NAMES.get(path) or (path.replace("policy_kwargs.", "policy.") if section == "policy_kwargs"
                                     else key)


def short_value(value: Any) -> str:
    """``100k``, ``0.001``, ``64x64`` (a list), ``none`` (an empty one), ``pi64.qf256`` (a mapping)."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int) and value and value % 1000 == 0:
        return f"{value // 1_000_000}M" if value % 1_000_000 == 0 else f"{value // 1000}k"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(map(short_value, value)) or "none"
    if isinstance(value, dict):
        return ".".join(f"{key}{short_value(item)}" for key, item in sorted(value.items()))
    return re.sub(r"[^A-Za-z0-9.+-]", "_", str(value).rsplit(".", 1)[-1])


RECYCLE_KEYS = ("recycle_dormant", "recycle_interval", "recycle_regrow")


def changed_settings(config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """(path, value) of each field of :data:`LABELLED_TOP`, :data:`LABELLED_SECTIONS` and the sparsity schedule
    that differs from the packaged default of its algo, env and method, sorted by path (the method's own settings
    and ReDo's recycling are in the method's label, :func:`~sparse_rl.methods.method_label`, not here)."""
    if config.get("algo") not in ALGO_NAMES or "env" not in config:
        return ()
    defaults = yaml.safe_load(_packaged_defaults(str(config["algo"]), str(config["env"])))
    sparsity = config.get("sparsity") or {}
    preset = {"method": sparsity.get("method", "rigl"), "density": sparsity.get("density", 1.0)}
    defaults["sparsity"] = sparsity_of({"sparsity": preset}).as_kwargs()
    paths = [*LABELLED_TOP, *(f"{section}.{key}" for section in LABELLED_SECTIONS for key in config.get(section) or {})]
    resolved = sparsity_of(config)
    if config.get("param_matched") is None and not (resolved.is_dense and not resolved.iso_params):  # else no schedule
        in_method_label = (*resolved.kind.setting_keys, *RECYCLE_KEYS)  # method_label names them already
        paths += [f"sparsity.{key}" for key in sparsity if key not in LABEL_SPARSITY_KEYS + in_method_label]
    changed = []
    for path in sorted(paths, key=lambda path: ("." in path, path)):  # the budget first
        present, value = lookup_path(config, path)
        known, default = lookup_path(defaults, path)
        if present and (not known or with_numbers(value) != default):
            changed.append((path, value))
    return tuple(changed)


@dataclass(frozen=True)
class RunLabel:
    """What a run trains, as its directory name and its report row show it.

    ``method`` is ``dense`` for a network that is dense and stays so, ``matched`` for the
    parameter-matched dense baseline (``density`` is then the density it matches), else the
    method with what it changes of its preset (:func:`~sparse_rl.methods.method_label`).
    ``networks`` lists the actor/critic densities that differ from ``density``; ``width`` is the
    width multiplier and ``iso_params`` whether the density follows from it; ``settings`` the
    other fields away from their defaults (:func:`changed_settings`).
    """

    method: str
    density: float
    networks: tuple[tuple[str, float], ...] = ()
    width: int = 1
    iso_params: bool = False
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def settings_text(self) -> str:
        """``-t100k-arch64x64-lr0.001``: the changed settings as the name shows them; empty if none."""
        return "".join(f"-{short_name(path)}{short_value(value)}" for path, value in self.settings)

    @property
    def core(self) -> str:
        """The label without its settings (the names of ledger records)."""
        if self.iso_params:  # the density follows from the width
            return f"{self.method}-w{self.width}-iso"
        text = f"{self.method}-d{self.density:g}" + "".join(f"-{net[0]}{d:g}" for net, d in self.networks)
        return text + (f"-w{self.width}" if self.width > 1 else "")

    def __str__(self) -> str:
        return self.core + self.settings_text

    @property
    def detail(self) -> str:
        """``actor 0.1``, ``width x4, iso-params``: what the density alone does not say; empty otherwise."""
        parts = [f"{net} {d:g}" for net, d in self.networks]
        parts += [f"width x{self.width}"] if self.width > 1 else []
        return ", ".join(parts + (["iso-params"] if self.iso_params else []))


def run_label(config: Mapping[str, Any]) -> RunLabel:
    """The label of the run ``config`` describes; ``sparse_rl.train`` names its directory
    ``<algo>-<label>-s<seed>`` and ``sparse_rl.report`` groups runs by it."""
    settings = changed_settings(config)
    if config.get("param_matched") is not None:
        return RunLabel("matched", float(config["param_matched"]), settings=settings)
    sparsity = config.get("sparsity") or {}
    resolved = sparsity_of(config)
    differing = tuple((net, resolved.network_density(net)) for net in NETWORKS
                      if resolved.network_density(net) != resolved.density)
    if resolved.is_dense and not resolved.iso_params:
        return RunLabel("dense", resolved.density, width=resolved.width_multiplier, settings=settings)
    return RunLabel(method_label(sparsity), resolved.density, differing, resolved.width_multiplier,
                    resolved.iso_params, settings)


def run_name(config: Mapping[str, Any], settings: bool = True) -> str:
    """``<algo>-<label>-s<seed>``: ``sac-rigl-d0.1-s0``, ``sac-dense-d1-t100k-arch64x64-s0``,
    ``sac-matched-d0.1-s0``; with ``settings=False`` without the changed settings (ledger records)."""
    label = run_label(config)
    return f"{config['algo']}-{label if settings else label.core}-s{config['seed']}"
