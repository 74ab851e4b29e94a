"""Wall-clock per environment step of sparse SAC against dense SB3 SAC, in one process.

``SAC(SparseSACPolicy, density=0.1)`` (RigL, ΔT = 1000, topology updates included) is timed
against ``SAC("MlpPolicy")`` as SB3 ships it and against ``MlpPolicy`` with the fused Adam the
sparse policy uses, on HalfCheetah-v4, one torch thread, same seed. All models first fill their
buffers for ``--learning-starts`` steps; then they train in alternating chunks, so machine noise
hits them alike. Prints per-step times and the ratios.

    python benchmarks/sb3_overhead.py [--rounds 6 --chunk 500 --density 0.1]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from stable_baselines3 import SAC

from sparse_rl import SparseSACPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--chunk", type=int, default=500, help="environment steps per model per round")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    common = dict(learning_starts=args.learning_starts, seed=args.seed, device="cpu")
    models = {
        "SB3 MlpPolicy (default Adam)": SAC("MlpPolicy", args.env, **common),
        "SB3 MlpPolicy (fused Adam)": SAC("MlpPolicy", args.env, policy_kwargs=dict(optimizer_kwargs={"fused": True}),
                                          **common),
        f"SparseSACPolicy d={args.density}": SAC(SparseSACPolicy, args.env, **common, policy_kwargs=dict(
            density=args.density, method="rigl", update_end=None)),
    }
    elapsed = dict.fromkeys(models, 0.0)
    for model in models.values():
        model.learn(args.learning_starts)
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.learn(args.chunk, reset_num_timesteps=False)
            elapsed[name] += time.perf_counter() - start
    steps = args.rounds * args.chunk
    sparse_name = next(reversed(models))
    updates = models[sparse_name].policy.critic_topology.num_updates
    print(f"{args.env}, 1 thread, {steps} timed env steps per model after {args.learning_starts} "
          f"learning-starts steps, {int(updates)} critic topology updates in the sparse run")
    for name in models:
        print(f"{name:32} {elapsed[name] / steps * 1e3:7.2f} ms/step")
    for baseline in list(models)[:2]:
        print(f"ratio sparse / {baseline}: {elapsed[sparse_name] / elapsed[baseline]:.3f}")


if __name__ == "__main__":
    main()
