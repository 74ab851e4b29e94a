"""Runs as a library: build, checkpoint, resume, train and summarise one run from its config.

    from sparse_rl import runs
    config = runs.make_config({"env": "Pendulum-v1", "density": 0.1, "total_steps": 2000})
    run_dir = runs.start_run(config, Path("runs"))      # runs/Pendulum-v1/sac-rigl-d0.1-s0
    runs.resume_run(run_dir)                             # after an interruption

``python -m sparse_rl.train`` is a command line over this module and ``sparse_rl.sweep`` calls it
with one config per trial. A run directory ``<logdir>/<env>/<algo>-<label>-s<seed>/``
(:func:`~sparse_rl.run_names.run_name`) holds ``config.yaml`` (the effective config), TensorBoard
events (``tb_1/``), ``evaluations.npz`` (SB3's EvalCallback, with a final evaluation at the last
step), ``checkpoint/`` (model, replay buffer, FLOP counters, wall-clock), and at the end
``model.zip`` and ``summary.json`` (:class:`~sparse_rl.rundir.RunDir` names, writes and reads them).

Faults: SIGINT and SIGTERM stop a run at the next step boundary, write the checkpoint and raise
:class:`RunInterrupted` (a resumed run then reaches exactly the env and gradient steps of an
uninterrupted one); a non-finite loss or weight raises :class:`RunDiverged` and leaves the last
checkpoint, written while everything was finite, in place.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.vec_env import VecEnv

from sparse_rl.algorithms import get_algorithm
from sparse_rl.backends import kernels
from sparse_rl.backends.auto import auto_rule
from sparse_rl.buffer_io import load_buffer
from sparse_rl.flops import active_weights
from sparse_rl.machine import TIMING_EPOCH, cpu_model
from sparse_rl.masks import sparse_layers
from sparse_rl.quiet import mujoco_log_to
from sparse_rl.run_callbacks import (
    RunCallback,
    RunInterrupted,
    RunProgressBar,
    checkpoint_state,
    final_evaluation,
    linear_layers,
    make_eval_callback,
    network_densities,
    stop_on_signals,
)
from sparse_rl.run_config import ConfigError, algo_classes, build_config, check_device, sparsity_of, validate
from sparse_rl.run_names import run_name
from sparse_rl.rundir import TENSORBOARD_NAME, RunDir
from sparse_rl.sb3 import SparseMetricsCallback
from sparse_rl.sb3.algorithms import sparse_policy
from sparse_rl.sb3.flops import inference_flops
from sparse_rl.sb3.matched import matched_net_arch
from sparse_rl.sb3.rlx2 import rlx2_replay_buffer

if TYPE_CHECKING:
    from sparse_rl.ledger import Ledger

CHECKPOINT_EVERY = 10_000
"""Env steps between checkpoints when the config does not say (``checkpoint_freq``)."""
OPTION_PATHS = {"seed": "seed", "total_steps": "total_steps", "n_envs": "n_envs", "eval_freq": "eval_freq",
                "eval_episodes": "eval_episodes", "threads": "threads", "device": "device",
                "param_matched": "param_matched", "density": "sparsity.density",
                "actor_density": "sparsity.actor_density", "critic_density": "sparsity.critic_density",
                "method": "sparsity.method", "width_multiplier": "sparsity.width_multiplier",
                "iso_params": "sparsity.iso_params", "backend": "sparsity.backend",
                "learning_starts": "algo_kwargs.learning_starts"}
"""Run options (the train CLI's flags, a sweep trial's keys) and the config path each one sets."""
OPTION_KEYS = ("algo", "env", "config", "set", *OPTION_PATHS)


def make_config(options: Mapping[str, Any]) -> dict[str, Any]:
    """The validated effective config of the run that ``options`` describe (keys: :data:`OPTION_KEYS`;
    ``set`` maps config paths to values, ``config`` names a YAML file); nothing is written."""
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ConfigError(f"unknown run option(s) {unknown}; valid: {', '.join(OPTION_KEYS)}")
    if not options.get("env"):
        raise ConfigError("a run needs an env")
    config_file = options.get("config")
    cli = {path: options.get(key) for key, path in OPTION_PATHS.items()}
    cli["seed"] = 0 if cli["seed"] is None else cli["seed"]
    return build_config(options.get("algo") or "sac", options["env"], Path(config_file) if config_file else None,
                        cli, options.get("set") or {}, env_check=check_env)


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


def run_dir_of(config: Mapping[str, Any], logdir: Path) -> Path:
    """Where the run of ``config`` lives under ``logdir``: ``<logdir>/<env>/<run name>``."""
    return Path(logdir) / str(config["env"]) / run_name(config)


def matched_policy_kwargs(config: Mapping[str, Any], env: VecEnv) -> dict[str, Any]:
    """``policy_kwargs`` of the run, narrowed to the sparse weight count when ``param_matched`` is set."""
    policy_kwargs = dict(config.get("policy_kwargs", {}))
    if config.get("param_matched") is not None:
        observation, action = env.observation_space, env.action_space
        if not isinstance(observation, gym.spaces.Box) or not isinstance(action, gym.spaces.Box):
            raise ConfigError("param_matched needs Box observation and action spaces")
        sparse = {**config.get("sparsity", {}), "density": config["param_matched"], "method": "static"}
        use_sde = bool((config.get("algo_kwargs") or {}).get("use_sde", False))
        policy_class = sparse_policy(config["algo"])
        net_arch = policy_kwargs.get("net_arch", policy_class._default_net_arch)
        others = {key: value for key, value in policy_kwargs.items() if key != "net_arch"}
        policy_kwargs["net_arch"] = matched_net_arch(policy_class, observation, action, net_arch, {**others, **sparse},
                                                     use_sde)
    return policy_kwargs


def build_model(config: Mapping[str, Any], run_dir: Path) -> OffPolicyAlgorithm:
    """The SB3 model a config describes (the policy checks its sparsity settings here, before any file exists)."""
    env = make_vec_env(config["env"], n_envs=config.get("n_envs", 1), seed=config["seed"])
    sparsity = sparsity_of(config)
    gamma = config.get("algo_kwargs", {}).get("gamma", 0.99)
    kwargs = {**config.get("algo_kwargs", {}), **rlx2_replay_buffer(sparsity, gamma, config["total_steps"])}
    if get_algorithm(config["algo"]).action_noise and config.get("action_noise_std"):
        n_actions = get_action_dim(env.action_space)
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n_actions), config["action_noise_std"] * np.ones(n_actions))
    policy_kwargs = {**matched_policy_kwargs(config, env), "sparsity": sparsity}
    model = algo_classes(config["algo"])[0](sparse_policy(config["algo"]), env, policy_kwargs=policy_kwargs,
                                            seed=config["seed"], device=config.get("device", "cpu"),
                                            tensorboard_log=str(run_dir), **kwargs)
    attach_replay_buffer(model)
    return model


def attach_replay_buffer(model: OffPolicyAlgorithm) -> None:
    """Give a replay buffer that needs its model (RLx2's) the model, as SB3 gives ``HerReplayBuffer`` its env."""
    attach = getattr(model.replay_buffer, "attach", None)
    if attach is not None:
        attach(model)


def load_checkpoint(run_dir: Path, config: Mapping[str, Any]) -> OffPolicyAlgorithm:
    """The model and replay buffer of ``run_dir``'s checkpoint, on a fresh env."""
    checkpoint = RunDir(run_dir).checkpoint
    if not checkpoint.exists():
        raise ConfigError(f"{run_dir} has no checkpoint to resume from")
    env = make_vec_env(config["env"], n_envs=config.get("n_envs", 1), seed=config["seed"] + 1000)
    model = algo_classes(config["algo"])[0].load(checkpoint.model_file, env=env, device=config.get("device", "cpu"),
                                                 tensorboard_log=str(run_dir))
    load_buffer(model, checkpoint.replay_buffer_file)
    attach_replay_buffer(model)
    return model


def summarize(model: OffPolicyAlgorithm, metrics: SparseMetricsCallback, evaluation: EvalCallback,
              wall_clock_s: float, cpu_s: float) -> dict[str, Any]:
    """``summary.json``: final return, steps, weights, FLOPs (each with its dense count), wall-clock and CPU
    time, machine."""
    rule, rule_source = auto_rule()
    linears = linear_layers(model, "actor") + linear_layers(model, "critic")
    returns = evaluation.evaluations_results[-1] if evaluation.evaluations_results else []
    return {
        "final_return": float(np.mean(returns)) if len(returns) else None,
        "env_steps": int(model.num_timesteps), "gradient_steps": int(model._n_updates),
        "params": sum(active_weights(layer) for layer in linears),
        "dense_params": sum(active_weights(layer, dense=True) for layer in linears),
        "network_density": network_densities(model),
        "inference_flops": inference_flops(model), "dense_inference_flops": inference_flops(model, dense=True),
        "train_flops": metrics.train_flops, "dense_train_flops": metrics.dense_train_flops,
        "wall_clock_s": wall_clock_s, "wall_clock_s_per_1k_steps": 1000 * wall_clock_s / max(1, model.num_timesteps),
        "cpu_s": cpu_s, "cpu_s_per_1k_steps": 1000 * cpu_s / max(1, model.num_timesteps),
        "cpu": cpu_model(), "threads": torch.get_num_threads(), "timing_epoch": TIMING_EPOCH,
        "auto_rule": {"source": "built-in" if rule_source == "built-in" else "calibrated",
                      "rows": [list(row) for row in rule]},
        "backends": backend_counts(model), "simd": kernels.simd_level(),
    }


def backend_counts(model: OffPolicyAlgorithm) -> dict[str, int]:
    """How many of the policy's sparse layers (online and target) compute with each backend."""
    counts: dict[str, int] = {}
    for layer in sparse_layers(model.policy).values():
        counts[layer.resolved_backend] = counts.get(layer.resolved_backend, 0) + 1
    return counts


def summary_text(summary: Mapping[str, Any], run_dir: Path) -> str:
    """The lines a finished run prints."""
    def ratio(key: str) -> str:
        dense = summary[f"dense_{key}"]
        return f"{summary[key]:.4g} ({summary[key] / dense:.3f}x dense)" if dense else f"{summary[key]:.4g}"

    final = summary["final_return"]
    return "\n".join([
        f"run: {run_dir}",
        f"  env steps              {summary['env_steps']}",
        f"  final eval return      {'n/a' if final is None else f'{final:.1f}'}",
        f"  weights (actor+critic) {ratio('params')}",
        f"  inference FLOPs/action {ratio('inference_flops')}",
        f"  training FLOPs total   {ratio('train_flops')}",
        f"  wall-clock             {summary['wall_clock_s'] / 60:.1f} min "
        f"({summary['wall_clock_s_per_1k_steps']:.1f} s per 1,000 steps, {summary['threads']} thread(s))",
        f"  CPU time               {summary['cpu_s'] / 60:.1f} min "
        f"({summary['cpu_s_per_1k_steps']:.1f} s per 1,000 steps)",
    ])


def start_run(config: dict[str, Any], logdir: Path, progress_bar: bool = False, ledger: Ledger | None = None,
              stop_file: Path | None = None) -> Path:
    """Train the run of ``config`` (from :func:`make_config`) into a new directory under ``logdir``; return it.
    The run stops as on SIGINT (``RunInterrupted``, checkpoint written) once ``stop_file`` exists."""
    validate(config)
    check_device(config)
    run_dir = run_dir_of(config, logdir)
    if run_dir.exists():
        raise ConfigError(f"{run_dir} exists; continue it with --resume {run_dir} or choose another --logdir/--seed")
    torch.set_num_threads(config.get("threads", 1))
    model = build_model(config, run_dir)
    run_dir.mkdir(parents=True)
    mujoco_log_to(run_dir)
    RunDir(run_dir).write_config(config)
    print(start_text(run_dir, config, 0), flush=True)
    return _train(model, config, run_dir, progress_bar, ledger, stop_file=stop_file)


def resume_run(run_dir: Path, progress_bar: bool = False, ledger: Ledger | None = None,
               stop_file: Path | None = None) -> Path:
    """Continue the interrupted run in ``run_dir`` from its checkpoint to its ``total_steps``; return it
    (``stop_file`` as in :func:`start_run`)."""
    run = RunDir(run_dir)
    if not run.is_run():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    if run.is_finished():
        raise ConfigError(f"{run_dir} is finished (it has summary.json); there is nothing to resume")
    config = run.read_config()
    validate(config)
    check_device(config)
    torch.set_num_threads(config.get("threads", 1))
    mujoco_log_to(run_dir)
    model = load_checkpoint(run_dir, config)
    print(start_text(run_dir, config, model.num_timesteps), flush=True)
    return _train(model, config, run_dir, progress_bar, ledger, resumed=True, stop_file=stop_file)


def start_text(run_dir: Path, config: Mapping[str, Any], step: int) -> str:
    """What a run prints first: its directory, the step it starts from, and how to stop and resume it."""
    steps = f"resuming from step {step:,} of {config['total_steps']:,}" if step else \
        f"training {config['total_steps']:,} env steps"
    return (f"run directory: {run_dir} ({steps}; checkpoint every {config.get('checkpoint_freq', CHECKPOINT_EVERY):,} "
            f"steps)\nCtrl-C stops it safely (a checkpoint is written); continue with:\n"
            f"  python -m sparse_rl.train --resume {run_dir}")


def _train(model: OffPolicyAlgorithm, config: Mapping[str, Any], run_dir: Path, progress_bar: bool,
           ledger: Ledger | None, resumed: bool = False, stop_file: Path | None = None) -> Path:
    metrics = SparseMetricsCallback()
    state = checkpoint_state(run_dir) if resumed else {}
    if state:
        metrics.load_flops_state(state)
    evaluation = make_eval_callback(config, run_dir, model.num_timesteps)
    run_callback = RunCallback(run_dir, config.get("checkpoint_freq", CHECKPOINT_EVERY), metrics,
                               float(state.get("wall_clock_s", 0.0)), float(state.get("cpu_s", 0.0)), stop_file)
    try:
        with stop_on_signals(run_callback):
            model.learn(max(0, config["total_steps"] - model.num_timesteps), tb_log_name=TENSORBOARD_NAME,
                        callback=CallbackList([metrics, evaluation, run_callback,
                                               *([RunProgressBar(config["total_steps"])] if progress_bar else [])]),
                        reset_num_timesteps=not resumed)
            run_callback.check_finite()
    except RunInterrupted:
        run_callback.save()
        raise
    except FloatingPointError as error:  # a topology update refused non-finite scores (inside the optimizer step)
        raise run_callback.diverged(str(error).splitlines()[0] if str(error) else "non-finite scores") from None
    except KeyboardInterrupt:  # a second signal, or one raised inside a step: save what there is
        run_callback.save()
        raise RunInterrupted(run_dir, model.num_timesteps, signal.SIGINT) from None
    final_evaluation(evaluation)
    run_callback.record()  # the last counts, densities and wall-clock, written at the last step
    model.logger.dump(model.num_timesteps)
    run_callback.save()
    model.save(RunDir(run_dir).model_file)
    summary = summarize(model, metrics, evaluation, run_callback.wall_clock_s, run_callback.cpu_s)
    RunDir(run_dir).write_summary(summary)
    print(summary_text(summary, run_dir))
    if ledger is not None:
        ledger.add(run_dir)
    return run_dir
