"""Third-party messages a run cannot act on, kept off the first screen.

* gymnasium's ``The environment HalfCheetah-v4 is out of date`` (the v4 envs are the ones the
  benchmarks in the literature use; ``-v5`` works too) is filtered;
* MuJoCo's ``compiler attribute 'settotalmass' is deprecated`` (in gymnasium's own v4 model files)
  and MuJoCo's other warnings go to ``MUJOCO_LOG.TXT`` in the run directory instead of the
  terminal and the working directory (:func:`mujoco_log_to`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

KNOWN_WARNINGS = (r".*The environment .* is out of date",)
"""Message patterns of the Python warnings :func:`filter_known_warnings` hides."""


class MujocoLog:
    """MuJoCo's warning handler: messages go to ``path`` (kept in memory until one is set)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.pending: list[str] = []

    def __call__(self, message: str) -> None:
        self.pending.append(message)
        if self.path is not None:
            with self.path.open("a") as log:
                log.write("".join(f"WARNING: {line}\n" for line in self.pending))
            self.pending.clear()


MUJOCO_LOG = MujocoLog()


def filter_known_warnings() -> None:
    """Hide :data:`KNOWN_WARNINGS` and route MuJoCo's warnings through :data:`MUJOCO_LOG`."""
    import gymnasium  # noqa: F401  (its import adds a filter of its own, which ours must precede)

    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    try:
        import mujoco
    except ImportError:  # an env without MuJoCo has none of its messages
        return
    mujoco.set_mju_user_warning(MUJOCO_LOG)


def mujoco_log_to(directory: Path) -> None:
    """Write MuJoCo's warnings (those so far included) to ``directory/MUJOCO_LOG.TXT``."""
    MUJOCO_LOG.path = Path(directory) / "MUJOCO_LOG.TXT"
    if MUJOCO_LOG.pending:
        MUJOCO_LOG(MUJOCO_LOG.pending.pop())
