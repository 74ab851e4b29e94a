"""Size of a run's replay-buffer checkpoint after N HalfCheetah steps (``sparse_rl.buffer_io``) against
SB3's own ``save_replay_buffer`` (the whole 1M-row buffer).

    python benchmarks/buffer_size.py --steps 15000 100000

The buffer is SAC's (the packaged config: 1M rows) filled by random actions on HalfCheetah-v4, the
first ``learning_starts`` steps of every run; learned actions fill it the same way (the same shapes,
observations from the same simulator), so the size per row is what a training run writes.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import numpy as np
from stable_baselines3 import SAC

from sparse_rl.buffer_io import save_buffer
from sparse_rl.quiet import filter_known_warnings


def fill(model: SAC, steps: int, seed: int = 0) -> None:
    """Add ``steps`` random-action transitions of the model's env to its replay buffer."""
    env = model.get_env()
    assert env is not None and model.replay_buffer is not None
    env.seed(seed)
    observation = env.reset()
    for _ in range(steps):
        action = np.array([env.action_space.sample()])
        next_observation, reward, done, infos = env.step(action)
        model.replay_buffer.add(observation, next_observation, action, reward, done, infos)
        observation = next_observation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[15_000, 100_000])
    args = parser.parse_args()
    filter_known_warnings()
    model = SAC("MlpPolicy", "HalfCheetah-v4", buffer_size=1_000_000, seed=0)
    done = 0
    with tempfile.TemporaryDirectory() as tmp:
        for steps in sorted(args.steps):
            fill(model, steps - done, seed=steps)
            done = steps
            path = Path(tmp) / f"buffer_{steps}.pkl"
            started = time.perf_counter()
            save_buffer(model, path)
            seconds = time.perf_counter() - started
            assert model.replay_buffer is not None
            row = sum(a.itemsize * a[0].size for a in vars(model.replay_buffer).values()
                      if isinstance(a, np.ndarray) and a.ndim and a.shape[0] == model.replay_buffer.buffer_size)
            packed = len(gzip.compress(path.read_bytes(), compresslevel=1))
            print(f"{steps:>7} steps: {path.stat().st_size / 1e6:6.1f} MB written in {seconds:.1f} s "
                  f"(gzip level 1 would make it {packed / 1e6:.1f} MB) "
                  f"({row} B per row uncompressed: {steps * row / 1e6:.1f} MB; SB3's pickle of the "
                  f"1M-row buffer: {1_000_000 * row / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
