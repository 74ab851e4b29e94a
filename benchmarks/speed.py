"""Wall-clock per training step of sparse SAC and TD3 against dense networks, in one run.

For each algorithm, on HalfCheetah-v4 with one torch thread and the same seed, five models:
SB3's ``MlpPolicy`` as SB3 ships it, and for each density in ``--densities`` the sparse policy
(RigL, ΔT = 1000, topology updates included and never stopped) and the parameter-matched dense
network (a narrower dense policy with the sparse one's weight count, fused Adam like the sparse
one). All models first collect ``--learning-starts`` steps, then train in alternating chunks so
machine noise hits them alike. The share of time spent in topology updates is measured by
timing every ``TopologyController.update`` call of the sparse models.

Prints a table and writes it to ``results/speed.md``.

    python benchmarks/speed.py [--rounds 4 --chunk 500 --densities 0.5 0.1]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from sparse_rl import SparseSACPolicy, SparseTD3Policy
from sparse_rl.sb3.matched import matched_net_arch
from sparse_rl.topology import TopologyController

ALGOS = {"sac": (SAC, SparseSACPolicy, [256, 256]), "td3": (TD3, SparseTD3Policy, [400, 300])}
RESULTS = Path(__file__).resolve().parent.parent / "results" / "speed.md"


def time_updates(controller: TopologyController, spent: list[float]) -> None:
    """Add the seconds of each of ``controller``'s topology updates to ``spent[0]``."""
    update = controller.update

    @functools.wraps(update)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return update(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    controller.update = timed


def build_models(algo: str, env_id: str, densities: list[float], common: dict) -> dict[str, BaseAlgorithm]:
    algo_class, policy_class, net_arch = ALGOS[algo]
    env = gym.make(env_id)
    models = {"mlp": algo_class("MlpPolicy", env_id, policy_kwargs=dict(net_arch=net_arch), **common)}
    for density in densities:
        models[f"sparse {density}"] = algo_class(policy_class, env_id, **common, policy_kwargs=dict(
            net_arch=net_arch, density=density, method="rigl", update_end=None))
        matched = matched_net_arch(policy_class, env.observation_space, env.action_space, net_arch,
                                   dict(density=density))
        models[f"matched {density}"] = algo_class(policy_class, env_id, **common,
                                                  policy_kwargs=dict(net_arch=matched, density=1.0))
    return models


def measure(models: dict[str, BaseAlgorithm], rounds: int, chunk: int, learning_starts: int
            ) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per env step of each model, and seconds spent in topology updates."""
    elapsed, in_updates = dict.fromkeys(models, 0.0), {}
    for name, model in models.items():
        model.learn(learning_starts)
        if name.startswith("sparse"):
            spent = [0.0]
            for controller in model.policy.topology_controllers().values():
                time_updates(controller, spent)
            in_updates[name] = spent
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.learn(chunk, reset_num_timesteps=False)
            elapsed[name] += time.perf_counter() - start
    steps = rounds * chunk
    return ({name: seconds / steps for name, seconds in elapsed.items()},
            {name: spent[0] / steps for name, spent in in_updates.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--densities", nargs="+", type=float, default=[0.5, 0.1])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=500, help="environment steps per model per round")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    common = dict(learning_starts=args.learning_starts, seed=args.seed, device="cpu")
    rows = []
    for algo in args.algos:
        per_step, update_time = measure(build_models(algo, args.env, args.densities, common), args.rounds,
                                        args.chunk, args.learning_starts)
        for density in args.densities:
            sparse, matched = per_step[f"sparse {density}"], per_step[f"matched {density}"]
            rows.append(f"| {algo} | {density:g} | {sparse * 1e3:.2f} | {per_step['mlp'] * 1e3:.2f} | "
                        f"{sparse / per_step['mlp']:.3f} | {matched * 1e3:.2f} | {sparse / matched:.3f} | "
                        f"{100 * update_time[f'sparse {density}'] / sparse:.1f} % |")
    timed = args.rounds * args.chunk
    command = " ".join(["python", "benchmarks/speed.py", *sys.argv[1:]])
    table = "\n".join([
        f"Command: `{command}` ({args.env}, 1 torch thread, seed {args.seed}, {timed} timed env "
        f"steps per model after {args.learning_starts} learning-starts steps, one gradient step per env step; "
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}).", "",
        "| algo | density | sparse ms/step | MlpPolicy ms/step | sparse ÷ MlpPolicy | matched dense ms/step "
        "| sparse ÷ matched | time in topology updates |",
        "|---|---|---|---|---|---|---|---|", *rows])
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
