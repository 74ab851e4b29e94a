"""The npz target: the file the numpy runtime :mod:`sparse_rl.deploy` reads."""

from __future__ import annotations

from pathlib import Path

from sparse_rl.deploy import ExportedPolicy


def write_npz(policy: ExportedPolicy, path: str | Path) -> list[Path]:
    """The numpy-runtime file (:meth:`sparse_rl.deploy.ExportedPolicy.load` reads it)."""
    policy.save(path)
    return [Path(path)]
