"""How long the README's Run command (SAC on HalfCheetah-v4, 1M env steps) takes, from the wall-clock of
the committed ledger records of SAC HalfCheetah runs (``summary.json``: seconds per 1,000 env steps).

    python benchmarks/run_time.py [--ledger results/ledger] [--steps 1000000] [--runs "sac-rigl-d*"]

Prints the range and median over the records, by CPU model; each record ran one torch thread, two
runs at a time on a 2-core machine, sometimes beside other work (which the range includes).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", type=Path, default=Path("results/ledger"))
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--runs", default="sac-rigl-d*", help="record names to read (default: SAC RigL, as Run)")
    args = parser.parse_args()
    by_cpu: dict[str, list[float]] = defaultdict(list)
    for summary in sorted(args.ledger.glob(f"*/HalfCheetah-v4/{args.runs}/summary.json")):
        data = json.loads(summary.read_text())
        by_cpu[data.get("cpu", "unknown CPU")].append(data["wall_clock_s_per_1k_steps"])
    for cpu, seconds in by_cpu.items():
        low, median, high = np.percentile(seconds, [0, 50, 100])
        hours = args.steps / 1000 / 3600
        print(f"{cpu}: {len(seconds)} SAC HalfCheetah records, {low:.1f} / {median:.1f} / {high:.1f} s per 1,000 "
              f"steps (min / median / max): {args.steps:,} steps take {low * hours:.1f} / {median * hours:.1f} / "
              f"{high * hours:.1f} h")


if __name__ == "__main__":
    main()
