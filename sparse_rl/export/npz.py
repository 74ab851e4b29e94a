"""The npz target: the file the numpy runtime :mod:`sparse_rl.deploy` reads."""

from __future__ import annotations

from pathlib import Path

from sparse_rl.deploy import SparsePolicy


def write_npz(policy: SparsePolicy, path: str | Path) -> list[Path]:
    """The numpy-runtime file (:meth:`sparse_rl.deploy.SparsePolicy.load` reads it)."""
    policy.save(path)
    return [Path(path)]
