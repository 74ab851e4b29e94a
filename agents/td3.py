"""Train a sparse TD3 agent with plain Stable-Baselines3: the sparse policy is the only change.

    python agents/td3.py --env HalfCheetah-v4 --density 0.1 --steps 300000 --seed 0
"""

import argparse
from pathlib import Path

import torch
from stable_baselines3 import TD3
from stable_baselines3.common.evaluation import evaluate_policy

from sparse_rl import SparseMetricsCallback, SparseTD3Policy
from sparse_rl.quiet import filter_known_warnings, mujoco_log_to

parser = argparse.ArgumentParser(description="Sparse TD3 with Stable-Baselines3")
parser.add_argument("--env", default="HalfCheetah-v4")
parser.add_argument("--density", type=float, default=0.1, help="fraction of active weights, in (0, 1]")
parser.add_argument("--steps", type=int, default=300_000, help="environment steps")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--logdir", default="runs/agents", help="TensorBoard log directory")
args = parser.parse_args()
filter_known_warnings()  # gymnasium's "v4 is out of date"; MuJoCo's warnings go to the log directory:
Path(args.logdir).mkdir(parents=True, exist_ok=True)
mujoco_log_to(Path(args.logdir))  # its MUJOCO_LOG.TXT, not the working directory's

torch.set_num_threads(1)
model = TD3(SparseTD3Policy, args.env, policy_kwargs=dict(density=args.density, method="rigl"),
            learning_starts=min(10_000, args.steps // 10), tensorboard_log=args.logdir, seed=args.seed, verbose=1)
model.learn(args.steps, callback=SparseMetricsCallback(), tb_log_name=f"td3-d{args.density}-s{args.seed}")
mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=5)
print(f"evaluation return over 5 episodes: {mean:.1f} +/- {std:.1f}")
