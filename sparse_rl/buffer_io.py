"""Replay-buffer checkpoints that hold only the filled rows.

SB3's ``save_replay_buffer`` pickles the whole preallocated buffer: 308 MB for HalfCheetah's
1M-row buffer after 15k steps. :func:`save_buffer` pickles a shallow copy whose per-row arrays are
cut to the rows written so far (``README.md`` gives the sizes) and
:func:`load_buffer` grows them back to the buffer's size, so sampling after a resume sees exactly
the buffer it would have seen.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

TRIMMED = "_sparse_rl_trimmed_rows"
"""Attribute naming the per-row arrays a saved buffer holds cut to its filled rows."""


def filled_rows(buffer: ReplayBuffer) -> int:
    """How many rows of ``buffer`` hold transitions."""
    return buffer.buffer_size if buffer.full else buffer.pos


def save_buffer(model: OffPolicyAlgorithm, path: Path) -> None:
    """Write ``model``'s replay buffer, its per-row arrays cut to the filled rows (uncompressed: gzip saves
    about 5 % of a HalfCheetah buffer and takes ten times as long, ``benchmarks/buffer_size.py``)."""
    buffer = model.replay_buffer
    assert buffer is not None, "the model has no replay buffer"
    trimmed = copy.copy(buffer)
    rows = filled_rows(buffer)
    names = [name for name, value in vars(buffer).items()
             if isinstance(value, np.ndarray) and value.ndim and value.shape[0] == buffer.buffer_size]
    for name in names:
        setattr(trimmed, name, getattr(buffer, name)[:rows])
    setattr(trimmed, TRIMMED, names)
    with open(path, "wb") as file:
        pickle.dump(trimmed, file, protocol=pickle.HIGHEST_PROTOCOL)


def load_buffer(model: OffPolicyAlgorithm, path: Path) -> None:
    """Give ``model`` the replay buffer :func:`save_buffer` wrote to ``path`` (or an SB3 pickle)."""
    with open(path, "rb") as file:
        buffer = pickle.load(file)
    for name in vars(buffer).pop(TRIMMED, ()):
        rows = getattr(buffer, name)
        full = np.zeros((buffer.buffer_size, *rows.shape[1:]), dtype=rows.dtype)
        full[: len(rows)] = rows
        setattr(buffer, name, full)
    model.replay_buffer = buffer
