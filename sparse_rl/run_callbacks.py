"""The callbacks a run trains with, besides SB3's and the metrics: :class:`RunCallback` (signals, divergence
checks, periodic checkpoints, wall-clock and CPU time), the evaluation that continues a resumed run's grid, and the
progress bar over the whole budget; and the two ways a run stops early, :class:`RunInterrupted` and
:class:`RunDiverged`."""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback, ProgressBarCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sparse_rl.buffer_io import save_buffer
from sparse_rl.flops import active_weights
from sparse_rl.rundir import Checkpoint, RunDir
from sparse_rl.sb3 import SparseMetricsCallback


class RunInterrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after writing its checkpoint."""

    def __init__(self, run_dir: Path, step: int, signum: int) -> None:
        self.run_dir, self.step, self.signum = run_dir, step, signum
        super().__init__(f"interrupted ({signal.Signals(signum).name}) at step {step}; checkpoint written. "
                         f"Continue with:\n  python -m sparse_rl.train --resume {run_dir}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by it."""
        return 128 + self.signum


class RunDiverged(RuntimeError):
    """A run whose loss or weights became non-finite."""


def checkpoint_state(run_dir: Path) -> dict[str, Any]:
    """What the checkpoint records besides model and replay buffer (FLOP counters, wall-clock); {} if none."""
    return RunDir(run_dir).checkpoint.read_state()


def nonfinite_parameter(model: OffPolicyAlgorithm) -> str | None:
    """The first parameter of the model (``critic.qf0.0.weight``, ``log_ent_coef``) holding NaN or inf."""
    named: list[tuple[str, torch.Tensor]] = [(f"policy.{name}", p) for name, p in model.policy.named_parameters()]
    log_ent_coef = getattr(model, "log_ent_coef", None)  # SAC's, when the coefficient is learned
    if isinstance(log_ent_coef, torch.Tensor):
        named.append(("log_ent_coef", log_ent_coef))
    return next((name.removeprefix("policy.") for name, p in named if not bool(torch.isfinite(p).all())), None)


LOSSES = {"train/critic_loss": "critic loss", "train/actor_loss": "actor loss", "train/ent_coef_loss":
          "entropy coefficient loss", "train/ent_coef": "entropy coefficient"}


def linear_layers(model: OffPolicyAlgorithm, net: str) -> list[torch.nn.Linear]:
    """The linear layers of the policy's ``"actor"`` or ``"critic"``."""
    network: torch.nn.Module = getattr(model.policy, net)
    return [m for m in network.modules() if isinstance(m, torch.nn.Linear)]


def network_densities(model: OffPolicyAlgorithm) -> dict[str, float]:
    """Active fraction of the weights of the actor and of the critics."""
    densities = {}
    for net in ("actor", "critic"):
        linears = linear_layers(model, net)
        densities[net] = (sum(active_weights(layer) for layer in linears)
                          / max(1, sum(active_weights(layer, dense=True) for layer in linears)))
    return densities


class RunCallback(BaseCallback):
    """Owns what makes a run a run, at each step boundary (rollout start, after the previous train step):
    a stop requested by a signal (or by the existence of ``stop_file``: a sweep asks its trials to stop so, since
    they run outside the main thread, where signals go), the divergence check, periodic checkpoints; and logs the run's
    wall-clock (``time/wall_clock_s``, resumes included) and ``sparsity/density/<net>``, and counts the
    process's CPU time (resumes included), which other processes on a shared machine do not inflate."""

    DENSITY_EVERY = 100
    WEIGHT_CHECK_EVERY = 1000
    model: OffPolicyAlgorithm

    def __init__(self, run_dir: Path, every: int, metrics: SparseMetricsCallback,
                 wall_clock_s: float = 0.0, cpu_s: float = 0.0, stop_file: Path | None = None) -> None:
        super().__init__()
        self.run_dir, self.every, self.metrics, self.stop_file = run_dir, every, metrics, stop_file
        self.stop_signal: int | None = None
        self._last_checkpoint = -1
        self._last_density = -self.DENSITY_EVERY
        self._wall_before, self._started = wall_clock_s, time.perf_counter()
        self._cpu_before, self._cpu_started = cpu_s, time.process_time()

    @property
    def wall_clock_s(self) -> float:
        """Seconds this run has spent training, summed over its processes (resumes included)."""
        return self._wall_before + time.perf_counter() - self._started

    @property
    def cpu_s(self) -> float:
        """CPU seconds this run has used (every thread of its processes, resumes included)."""
        return self._cpu_before + time.process_time() - self._cpu_started

    def _on_training_start(self) -> None:
        self._last_checkpoint = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        self.check_finite(weights=self.model.num_timesteps % self.WEIGHT_CHECK_EVERY == 0)
        if self.stop_signal is None and self.stop_file is not None and self.stop_file.exists():
            self.stop_signal = signal.SIGINT
        if self.stop_signal is not None:
            raise RunInterrupted(self.run_dir, self.model.num_timesteps, self.stop_signal)
        if self.every and self.model.num_timesteps - self._last_checkpoint >= self.every:
            self.save()

    def _on_rollout_end(self) -> None:
        self.record(densities=self.model.num_timesteps - self._last_density >= self.DENSITY_EVERY)

    def record(self, densities: bool = True) -> None:
        """Record the wall-clock (and the network densities) for SB3's logger's next write."""
        self.logger.record("time/wall_clock_s", self.wall_clock_s)
        if densities:
            for net, density in network_densities(self.model).items():
                self.logger.record(f"sparsity/density/{net}", density)
            self._last_density = self.model.num_timesteps

    def check_finite(self, weights: bool = True) -> None:
        """``RunDiverged`` naming the step and the network when a loss just logged, or a weight, is not finite."""
        values = self.model.logger.name_to_value
        what = next((name for key, name in LOSSES.items() if key in values and not math.isfinite(values[key])), None)
        if what is None and weights:
            parameter = nonfinite_parameter(self.model)
            what = None if parameter is None else f"weights in {parameter}"
        if what is not None:
            raise self.diverged(f"non-finite {what}")

    def diverged(self, what: str) -> RunDiverged:
        """The one-line error of a diverged run: the step, what was not finite, the checkpoint kept."""
        state, checkpoint = checkpoint_state(self.run_dir), RunDir(self.run_dir).checkpoint.path
        kept = (f"the last finite checkpoint (step {state['env_steps']}) is kept in {checkpoint}"
                if "env_steps" in state else "no checkpoint was written before it")
        return RunDiverged(f"diverged at env step {self.model.num_timesteps} (gradient step {self.model._n_updates}): "
                           f"{what}; {kept}; try a lower learning rate")

    def _write_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.model.save(checkpoint.model_file)
        save_buffer(self.model, checkpoint.replay_buffer_file)
        checkpoint.write_state({**self.metrics.flops_state(), "wall_clock_s": self.wall_clock_s, "cpu_s": self.cpu_s,
                                "env_steps": int(self.model.num_timesteps),
                                "gradient_steps": int(self.model._n_updates)})

    def save(self) -> None:
        """Write the checkpoint next to the old one, then swap, so a crash never leaves half of one (nor none);
        refuse (``RunDiverged``) to replace a finite checkpoint by a non-finite one."""
        self.check_finite()
        RunDir(self.run_dir).write_checkpoint(self._write_checkpoint)
        self._last_checkpoint = self.model.num_timesteps


@contextmanager
def stop_on_signals(callback: RunCallback) -> Iterator[None]:
    """SIGINT and SIGTERM ask ``callback`` to stop at the next step boundary; a second one stops at once
    (``KeyboardInterrupt``). Only in the main thread (Ray runs trials in others; they keep Ray's handling)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        if callback.stop_signal is not None:
            raise KeyboardInterrupt
        callback.stop_signal = signum

    with signals_handled_by(request_stop):
        yield


@contextmanager
def signals_handled_by(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` inside the block (main thread only); the previous handlers after it."""
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def make_eval_callback(config: Mapping[str, Any], run_dir: Path, num_timesteps: int) -> EvalCallback:
    """SB3's EvalCallback on its own env, continuing ``run_dir``'s evaluations and evaluation grid."""
    n_envs = config.get("n_envs", 1)
    eval_env = make_vec_env(config["env"], n_envs=1, seed=config["seed"] + 10_000)
    callback = EvalCallback(eval_env, n_eval_episodes=config.get("eval_episodes", 10),
                            eval_freq=max(1, config.get("eval_freq", 10_000) // n_envs), log_path=str(run_dir),
                            deterministic=True, verbose=0)
    previous = RunDir(run_dir).read_evaluations()
    if previous is not None:
        kept = previous["timesteps"] <= num_timesteps  # evaluations after the checkpoint are redone
        callback.evaluations_timesteps = list(previous["timesteps"][kept])
        callback.evaluations_results = [list(r) for r in previous["results"][kept]]
        callback.evaluations_length = [list(r) for r in previous["ep_lengths"][kept]]
    callback.n_calls = num_timesteps // n_envs
    return callback


def final_evaluation(evaluation: EvalCallback) -> None:
    """Evaluate at the run's last step unless the evaluation grid just did."""
    if evaluation.evaluations_timesteps and evaluation.evaluations_timesteps[-1] == evaluation.model.num_timesteps:
        return
    evaluation.eval_freq = 1  # EvalCallback evaluates when n_calls is a multiple of eval_freq
    evaluation.on_step()


class RunProgressBar(ProgressBarCallback):
    """SB3's progress bar over the run's whole budget, starting at the step a resumed run reached."""

    def __init__(self, total_steps: int) -> None:
        super().__init__()
        self.total_steps = total_steps

    def _on_training_start(self) -> None:
        from tqdm import TqdmExperimentalWarning
        from tqdm.rich import tqdm

        with warnings.catch_warnings():  # as SB3's own bar: tqdm calls its rich bar experimental
            warnings.simplefilter("ignore", TqdmExperimentalWarning)
            self.pbar = tqdm(total=self.total_steps, initial=self.model.num_timesteps)
