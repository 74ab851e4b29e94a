"""What machine this is: the facts that runs record and that ``auto``'s calibrated rule is keyed by."""

from __future__ import annotations

import platform
from pathlib import Path

TIMING_EPOCH = 1
"""Which code a run's times belong to: bumped when a change makes the same run take materially different time, so
that the report compares times only within one epoch. 0: records that do not name it. 1: the sparse critics stopped
computing weight gradients in the actor's loss (:mod:`sparse_rl.sb3.actor_loss`; the sparse policy's SAC
``train()`` step at density 1.0 took 1.25x as long before)."""


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
