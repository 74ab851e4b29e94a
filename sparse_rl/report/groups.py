"""The rows of a report: runs grouped by label and config, and which groups each group is compared with."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sparse_rl.ledger import config_difference, resolved
from sparse_rl.report.runs import GroupKey, Run

SAME_RUN_KEYS = ("seed", "threads", "device", "eval_freq", "checkpoint_freq")
"""Config keys in which runs of one row may differ; any other difference splits the row."""


def comparable(run: Run) -> dict[str, Any]:
    """What runs of one row share: the run's config without :data:`SAME_RUN_KEYS`, its sparsity as the
    settings it resolves to (:func:`~sparse_rl.ledger.resolved`), and for a dense network only its width."""
    config = resolved({key: value for key, value in run.config.items() if key not in SAME_RUN_KEYS})
    if run.method in ("dense", "matched"):  # a network that stays dense has no sparse schedule
        config["sparsity"] = {"width_multiplier": config["sparsity"].get("width_multiplier", 1)}
    return config


def split_unlike(key: GroupKey, runs: list[Run]) -> dict[GroupKey, list[Run]]:
    """``runs`` of one label, split where their configs differ in more than :data:`SAME_RUN_KEYS`,
    each further part's settings naming how it differs from the first."""
    parts: list[list[Run]] = []
    for run in runs:
        part = next((p for p in parts if not config_difference(comparable(p[0]), comparable(run))), None)
        if part is None:
            parts.append([run])
        else:
            part.append(run)
    differences = [re.sub(r": recorded (.*), planned (.*)", r" \2 (vs \1)",
                          config_difference(comparable(parts[0][0]), comparable(part[0])))
                   for part in parts[1:]]
    keys = [key] + [(*key[:5], ", ".join(filter(None, (key[5], difference)))) for difference in differences]
    return dict(zip(keys, parts))


def group_runs(runs: Iterable[Run]) -> dict[GroupKey, list[Run]]:
    """Runs grouped by label (env, algo, method, density, detail, settings) and split where their configs
    differ otherwise; sorted by env, algo, settings, density descending, method."""
    labelled: dict[GroupKey, list[Run]] = {}
    for run in runs:
        labelled.setdefault(run.key, []).append(run)
    groups = {k: v for key, runs_of in labelled.items() for k, v in split_unlike(key, runs_of).items()}
    order = sorted(groups, key=lambda key: (key[0], key[1], key[5], -key[3], key[2], key[4]))
    return {key: sorted(groups[key], key=lambda run: run.seed) for key in order}


def dense_key(groups: dict[GroupKey, list[Run]], env: str, algo: str, settings: str = "") -> GroupKey | None:
    """The dense (density 1.0) group of ``env`` and ``algo`` with the same settings (architecture, budget,
    hyperparameters), if any."""
    dense = [key for key in groups if key[:2] == (env, algo) and key[2] == "dense" and key[5] == settings]
    return min(dense, key=lambda key: bool(key[4]), default=None)  # the plain dense network first


def compared_pairs(groups: dict[GroupKey, list[Run]]) -> list[tuple[GroupKey, GroupKey]]:
    """The (X, Y) groups the report compares: every group against its dense group, every sparse
    group against the parameter-matched dense group of the same env, algo and density, every
    variant of a method (its label has a ``+``, e.g. ``rigl+sparse-init``) against the method's own
    group of the same env, algo, density and network details, and every other sparse method against
    RigL's group of the same (the reference the DST literature compares with)."""
    pairs = []
    for key in groups:
        env, algo, method, density, detail, settings = key
        dense = dense_key(groups, env, algo, settings)
        if dense is not None and key != dense:
            pairs.append((key, dense))
        matched = [other for other in groups if other[:2] == (env, algo) and other[2] == "matched"
                   and other[3] == density and other[4] == "" and other[5] == settings]
        if method not in ("dense", "matched") and matched:
            pairs.append((key, matched[0]))
        base = (env, algo, method.split("+", 1)[0], density, detail, settings)
        if base[2] != method and base in groups:
            pairs.append((key, base))
        rigl = (env, algo, "rigl", density, detail, settings)
        if method.split("+", 1)[0] not in ("dense", "matched", "rigl") and rigl in groups:
            pairs.append((key, rigl))
    return pairs


def group_name(key: GroupKey) -> str:
    """``rigl 0.1``, ``dense 1.0 [total_steps 4000]``, ``rigl 0.1 (width x4)``: a group's method, density and
    settings."""
    _, _, method, density, detail, settings = key
    return f"{method} {density}" + (f" ({detail})" if detail else "") + (f" [{settings}]" if settings else "")
