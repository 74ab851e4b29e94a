"""Evaluation returns of short fixed-seed runs of every registered method, to show a refactor changed no behaviour.

    python benchmarks/same_seed_returns.py --out returns.json            # before the change
    python benchmarks/same_seed_returns.py --compare returns.json        # after: exit 1 on any difference

Runs, each through the documented CLI (``python -m sparse_rl.train``) with one torch thread, seed 0:
SAC on Pendulum-v1 for every method in the registry (density 0.5, 1.0 for dense and thresholds; 1,200
steps, learning starts 200, one evaluation of 3 episodes at the end, a topology update every 100 optimizer
steps), and SAC RigL 0.1 on HalfCheetah-v4 for 3,000 steps (learning starts 1,000). The returns are exact:
the same code on the same CPU gives the same floats.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sparse_rl.methods.registry import KINDS, METHODS

PENDULUM = ["--env", "Pendulum-v1", "--total-steps", "1200", "--learning-starts", "200",
            "--eval-freq", "1200", "--eval-episodes", "3", "--set", "sparsity.update_interval=100"]
HALF_CHEETAH = ["--env", "HalfCheetah-v4", "--method", "rigl", "--density", "0.1", "--total-steps", "3000",
                "--learning-starts", "1000", "--eval-freq", "3000", "--eval-episodes", "2"]


def run_return(args: list[str], logdir: Path) -> float:
    """Train one run through the CLI and return the mean evaluation return at its last evaluation."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "sparse_rl.train", *args, "--seed", "0", "--threads", "1",
                    "--logdir", str(logdir), "--no-progress-bar"], check=True, env=env, stdout=subprocess.DEVNULL)
    (evaluations,) = logdir.rglob("evaluations.npz")
    return float(np.load(evaluations)["results"][-1].mean())


def density(method: str) -> str:
    """0.5, or 1.0 for the dense baseline and for a method that learns its density."""
    return "1.0" if method == "dense" or KINDS[METHODS[method].kind].learns_density else "0.5"


def all_returns() -> dict[str, float]:
    """``{run: return}`` for every Pendulum method and the HalfCheetah RigL run."""
    runs = {f"Pendulum-v1/{method}": [*PENDULUM, "--method", method, "--density", density(method)]
            for method in METHODS}
    runs["HalfCheetah-v4/rigl-3k"] = HALF_CHEETAH
    returns = {}
    for name, args in runs.items():
        with tempfile.TemporaryDirectory() as logdir:
            returns[name] = run_return(args, Path(logdir))
        print(f"{name}: {returns[name]!r}", flush=True)
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the returns to this JSON file")
    parser.add_argument("--compare", type=Path, help="compare with the returns in this JSON file")
    args = parser.parse_args()
    returns = all_returns()
    if args.out:
        args.out.write_text(json.dumps(returns, indent=1) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        changed = {name: (before.get(name), value) for name, value in returns.items() if before.get(name) != value}
        for name, (old, new) in changed.items():
            print(f"CHANGED {name}: {old!r} -> {new!r}")
        sys.exit(1 if changed else 0)


if __name__ == "__main__":
    main()
