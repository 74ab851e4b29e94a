"""``python -m sparse_rl.train``: train a sparse (or dense) SAC/TD3 agent into a run directory.

    python -m sparse_rl.train --env HalfCheetah-v4 --density 0.5
    python -m sparse_rl.train --algo td3 --env Hopper-v4 --density 0.1 --method set --seed 3
    python -m sparse_rl.train --resume runs/HalfCheetah-v4/sac-rigl-d0.5-s0

A run directory ``<logdir>/<env>/<algo>-<method>-d<density>-s<seed>/`` holds ``config.yaml``
(the effective config), TensorBoard events (``tb_1/``), ``evaluations.npz`` (SB3's
EvalCallback), ``checkpoint/`` (model, replay buffer, FLOP counters; for ``--resume``),
``model.zip`` and ``summary.json`` at the end.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import VecEnv

from sparse_rl.flops import active_weights
from sparse_rl.methods import METHODS, method_label
from sparse_rl.run_config import ALGOS, ConfigError, build_config, read_yaml, validate
from sparse_rl.sb3 import SparseMetricsCallback, SparseSACPolicy, SparseTD3Policy, SparsityConfig
from sparse_rl.sb3.flops import inference_flops
from sparse_rl.sb3.matched import matched_net_arch
from sparse_rl.sb3.rlx2 import RLx2ReplayBuffer

POLICIES = {"sac": SparseSACPolicy, "td3": SparseTD3Policy}
CHECKPOINT = "checkpoint"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sparse_rl.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=list(ALGOS), default="sac", help="SB3 algorithm (default: sac)")
    parser.add_argument("--env", help="gymnasium env id with a Box action space, e.g. HalfCheetah-v4")
    parser.add_argument("--density", type=float, help="global fraction of active weights in (0, 1]; 1.0 = dense")
    parser.add_argument("--actor-density", type=float, help="the actor's own density (default: --density)")
    parser.add_argument("--critic-density", type=float, help="the critics' density (default: --density)")
    parser.add_argument("--param-matched", type=float, metavar="DENSITY",
                        help="train a dense network narrowed to the weight count of a sparse one at DENSITY "
                             "(the parameter-matched baseline of Graesser et al.)")
    parser.add_argument("--method", help=f"DST method: {', '.join(METHODS)} (default from the config: rigl)")
    parser.add_argument("--total-steps", type=int, help="environment steps to train for")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--n-envs", type=int, help="parallel environments (default: 1)")
    parser.add_argument("--config", type=Path, help="YAML config file (default: the packaged configs/<algo>.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set algo_kwargs.batch_size=128 "
                             "or --set sparsity.update_interval=500 (repeatable)")
    parser.add_argument("--logdir", type=Path, default=Path("runs"), help="root of run directories (default: runs)")
    parser.add_argument("--eval-freq", type=int, help="evaluate every this many environment steps")
    parser.add_argument("--eval-episodes", type=int, help="episodes per evaluation")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: two 2-thread runs on a 2-core machine run 3x slower)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide SB3's progress bar")
    args = parser.parse_args(argv)
    if args.resume is None and args.env is None:
        parser.error("--env is required (or --resume RUN_DIR)")
    return args


@functools.lru_cache(maxsize=None)
def check_env(env_id: str) -> None:
    """Fail fast for an env id gymnasium does not know or whose actions are not continuous."""
    try:
        env = gym.make(env_id)
    except gym.error.Error as error:
        raise ConfigError(f"unknown env {env_id!r}: {error}") from None
    space = env.action_space
    env.close()
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"env {env_id!r} has a {type(space).__name__} action space; SAC/TD3 need a Box")


def run_name(config: dict[str, Any]) -> str:
    """``<algo>-<method>-d<density>-s<seed>``; ``matched`` for a parameter-matched dense run; the method
    as :func:`~sparse_rl.methods.method_label` writes it (``dst-ee+c0.01`` for a criterion parameter)."""
    sparsity = SparsityConfig.from_kwargs(**config.get("sparsity", {}))
    if config.get("param_matched") is not None:
        return f"{config['algo']}-matched-d{config['param_matched']:g}-s{config['seed']}"
    method = "dense" if sparsity.is_dense else method_label(config.get("sparsity", {}))
    return f"{config['algo']}-{method}-d{sparsity.density:g}-s{config['seed']}"


def matched_policy_kwargs(config: dict[str, Any], env: VecEnv) -> dict[str, Any]:
    """``policy_kwargs`` of the run, narrowed to the sparse weight count when ``param_matched`` is set."""
    policy_kwargs = dict(config.get("policy_kwargs", {}))
    if config.get("param_matched") is not None:
        sparse = {**config.get("sparsity", {}), "density": config["param_matched"], "method": "static"}
        policy_kwargs["net_arch"] = matched_net_arch(POLICIES[config["algo"]], env.observation_space,
                                                     env.action_space, policy_kwargs.get("net_arch", [256, 256]),
                                                     sparse)
    return policy_kwargs


def make_model(config: dict[str, Any], run_dir: Path) -> BaseAlgorithm:
    """The SB3 model a config describes (policy sparsity validated here, before any file is written)."""
    algo_class = ALGOS[config["algo"]][0]
    env = make_vec_env(config["env"], n_envs=config.get("n_envs", 1), seed=config["seed"])
    kwargs = dict(config.get("algo_kwargs", {}))
    if config["algo"] == "td3" and config.get("action_noise_std"):
        n_actions = env.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n_actions), config["action_noise_std"] * np.ones(n_actions))
    policy_kwargs = {**matched_policy_kwargs(config, env), **config.get("sparsity", {})}
    if config.get("sparsity", {}).get("method") == "rlx2":
        kwargs["replay_buffer_class"] = RLx2ReplayBuffer
        kwargs["replay_buffer_kwargs"] = rlx2_buffer_kwargs(config)
    return algo_class(POLICIES[config["algo"]], env, policy_kwargs=policy_kwargs, seed=config["seed"],
                      device=config.get("device", "cpu"), tensorboard_log=str(run_dir), **kwargs)


def rlx2_buffer_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """``replay_buffer_kwargs`` of an ``rlx2`` run: the ``rlx2`` section, the algorithm's gamma,
    and ``n_step_delay`` in gradient steps (a float there is a fraction of ``total_steps``)."""
    kwargs = dict(config.get("rlx2", {}))
    kwargs["gamma"] = config.get("algo_kwargs", {}).get("gamma", 0.99)
    delay = kwargs.get("n_step_delay", 0)
    if isinstance(delay, float):
        kwargs["n_step_delay"] = int(delay * config["total_steps"])
    return kwargs


class CheckpointCallback(BaseCallback):
    """Saves model, replay buffer and FLOP counters to ``run_dir/checkpoint`` every ``every`` steps."""

    def __init__(self, run_dir: Path, every: int, flops: SparseMetricsCallback, wall_clock_s: float = 0.0) -> None:
        super().__init__()
        self.run_dir, self.every, self.flops = run_dir, every, flops
        self._last = 0
        self._wall_before, self._started = wall_clock_s, time.perf_counter()

    @property
    def wall_clock_s(self) -> float:
        """Seconds this run has spent training, summed over its processes (resumes included)."""
        return self._wall_before + time.perf_counter() - self._started

    def _on_step(self) -> bool:
        if self.every and self.num_timesteps - self._last >= self.every:
            self.save()
        return True

    def save(self) -> None:
        """Write the checkpoint next to the old one, then swap, so a crash never leaves half of one."""
        fresh, final = self.run_dir / f"{CHECKPOINT}.tmp", self.run_dir / CHECKPOINT
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        self.model.save(fresh / "model.zip")
        self.model.save_replay_buffer(fresh / "replay_buffer.pkl")
        (fresh / "state.json").write_text(json.dumps({**self.flops.flops_state(), "wall_clock_s": self.wall_clock_s}))
        shutil.rmtree(final, ignore_errors=True)
        fresh.rename(final)
        self._last = self.num_timesteps


def load_checkpoint(run_dir: Path, config: dict[str, Any], flops: SparseMetricsCallback) -> BaseAlgorithm:
    checkpoint = run_dir / CHECKPOINT
    if not (checkpoint / "model.zip").exists():
        raise ConfigError(f"{run_dir} has no checkpoint to resume from")
    algo_class = ALGOS[config["algo"]][0]
    env = make_vec_env(config["env"], n_envs=config.get("n_envs", 1), seed=config["seed"] + 1000)
    model = algo_class.load(checkpoint / "model.zip", env=env, device=config.get("device", "cpu"),
                            tensorboard_log=str(run_dir))
    model.load_replay_buffer(checkpoint / "replay_buffer.pkl")
    flops.load_flops_state(json.loads((checkpoint / "state.json").read_text()))
    return model


def checkpoint_wall_clock(run_dir: Path) -> float:
    """Training seconds a checkpoint records (0 for a new run or an old checkpoint)."""
    state = run_dir / CHECKPOINT / "state.json"
    return float(json.loads(state.read_text()).get("wall_clock_s", 0.0)) if state.is_file() else 0.0


def make_eval_callback(config: dict[str, Any], run_dir: Path) -> EvalCallback:
    n_envs = config.get("n_envs", 1)
    eval_env = make_vec_env(config["env"], n_envs=1, seed=config["seed"] + 10_000)
    callback = EvalCallback(eval_env, n_eval_episodes=config.get("eval_episodes", 10),
                            eval_freq=max(1, config.get("eval_freq", 10_000) // n_envs), log_path=str(run_dir),
                            deterministic=True, verbose=0)
    previous = run_dir / "evaluations.npz"
    if previous.exists():
        with np.load(previous) as data:
            callback.evaluations_timesteps = list(data["timesteps"])
            callback.evaluations_results = [list(r) for r in data["results"]]
            callback.evaluations_length = [list(r) for r in data["ep_lengths"]]
    return callback


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def summarize(model: BaseAlgorithm, flops: SparseMetricsCallback, evaluation: EvalCallback,
              wall_clock_s: float) -> dict[str, Any]:
    linears = [m for net in (model.policy.actor, model.policy.critic) for m in net.modules()
               if isinstance(m, torch.nn.Linear)]
    params = sum(active_weights(layer) for layer in linears)
    dense_params = sum(active_weights(layer, dense=True) for layer in linears)
    returns = evaluation.evaluations_results[-1] if evaluation.evaluations_results else []
    return {
        "final_return": float(np.mean(returns)) if len(returns) else None,
        "env_steps": int(model.num_timesteps),
        "params": params, "dense_params": dense_params,
        "inference_flops": inference_flops(model), "dense_inference_flops": inference_flops(model, dense=True),
        "train_flops": flops.train_flops, "dense_train_flops": flops.dense_train_flops,
        "wall_clock_s": wall_clock_s, "wall_clock_s_per_1k_steps": 1000 * wall_clock_s / max(1, model.num_timesteps),
        "cpu": cpu_model(), "threads": torch.get_num_threads(),
    }


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    def ratio(key: str) -> str:
        dense = summary[f"dense_{key}"]
        return f"{summary[key]:.4g} ({summary[key] / dense:.3f}x dense)" if dense else f"{summary[key]:.4g}"

    final = summary["final_return"]
    print(f"\nrun: {run_dir}")
    print(f"  env steps            {summary['env_steps']}")
    print(f"  final eval return    {'n/a' if final is None else f'{final:.1f}'}")
    print(f"  weights (actor+critic) {ratio('params')}")
    print(f"  inference FLOPs/action {ratio('inference_flops')}")
    print(f"  training FLOPs total   {ratio('train_flops')}")


def plan_run(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """The validated config and run directory of a new run (nothing is written)."""
    cli = {"seed": args.seed, "total_steps": args.total_steps, "n_envs": args.n_envs, "eval_freq": args.eval_freq,
           "eval_episodes": args.eval_episodes, "threads": args.threads, "device": args.device,
           "param_matched": args.param_matched, "sparsity.density": args.density,
           "sparsity.actor_density": args.actor_density, "sparsity.critic_density": args.critic_density,
           "sparsity.method": args.method}
    config = build_config(args.algo, args.env, args.config, cli, args.overrides)
    check_env(config["env"])
    return config, args.logdir / config["env"] / run_name(config)


def train(args: argparse.Namespace) -> Path:
    """Build or resume the run, train it, and return its directory."""
    flops = SparseMetricsCallback()
    if args.resume is not None:
        run_dir = args.resume
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
        config = read_yaml(run_dir / "config.yaml")
        validate(config)
        torch.set_num_threads(config.get("threads", 1))
        model = load_checkpoint(run_dir, config, flops)
    else:
        config, run_dir = plan_run(args)
        if run_dir.exists():
            raise ConfigError(f"{run_dir} exists; continue it with --resume {run_dir} or choose another --logdir/--seed")
        torch.set_num_threads(config["threads"])
        model = make_model(config, run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    evaluation = make_eval_callback(config, run_dir)
    evaluation.n_calls = model.num_timesteps // config.get("n_envs", 1)  # keep the evaluation grid on resume
    checkpoint = CheckpointCallback(run_dir, config.get("checkpoint_freq", 50_000), flops, checkpoint_wall_clock(run_dir))
    remaining = config["total_steps"] - model.num_timesteps
    try:
        model.learn(max(0, remaining), callback=CallbackList([flops, evaluation, checkpoint]), tb_log_name="tb",
                    reset_num_timesteps=args.resume is None, progress_bar=not args.no_progress_bar)
    except KeyboardInterrupt:
        checkpoint.save()
        print(f"\ninterrupted at step {model.num_timesteps}; checkpoint written. Continue with:\n"
              f"  python -m sparse_rl.train --resume {run_dir}", file=sys.stderr)
        raise SystemExit(130) from None
    checkpoint.save()
    model.save(run_dir / "model.zip")
    summary = summarize(model, flops, evaluation, checkpoint.wall_clock_s)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary, run_dir)
    return run_dir


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        train(args)
    except ValueError as error:  # ConfigError and the policy's own checks
        raise SystemExit(f"sparse_rl.train: error: {error}") from None


if __name__ == "__main__":
    main()
