"""Ray for ``sparse_rl.sweep``: connecting to a cluster, one console line per trial state change, and
running the trials on Ray Tune. Imported only when the ``sweep`` extra (``ray[tune]``) is installed.

A cluster started with ``ray start --head`` on a machine that has a Ray token (``~/.ray/auth_token``,
``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``) requires it; ``sparse_rl.sweep`` sends it
(:func:`sparse_rl.sweep.send_token`) and :func:`connect` names the cause in one line when a cluster
refuses: a token that is missing or not the cluster's, a Ray or Python version other than the
cluster's, or nothing listening at the address.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sparse_rl.rundir import RunDir

PROG = "sparse_rl.sweep"


class ClusterError(ValueError):
    """A Ray cluster that cannot be reached or refuses this machine."""


def check_listening(address: str) -> None:
    """``ClusterError`` naming ``address`` and how a cluster is started, unless something listens there."""
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if host_port == "auto" or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as error:
        raise ClusterError(f"cannot reach a Ray cluster at {address}: nothing listening "
                           f"({error.strerror or error}); start one with `ray start --head` and pass the address "
                           "it prints, or leave out --address to run locally") from None


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (where Ray's C++ core writes its retries) to a buffer; yields a list that
    receives the captured text when the block ends."""
    text: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            text.append(buffer.read().decode(errors="replace"))


def refusal(address: str, error: Exception, log: str) -> str:
    """The one line naming why the cluster at ``address`` refused this machine."""
    text = f"{type(error).__name__} {error} {log}"
    if "InvalidAuthToken" in text or "AuthenticationError" in text or "Unauthenticated" in text:
        return (f"the Ray cluster at {address} refused this machine's auth token (missing or not the cluster's): "
                "copy the head node's `ray get-auth-token` output to ~/.ray/auth_token (or RAY_AUTH_TOKEN) here")
    if "version mismatch" in text.lower():
        return (f"the Ray cluster at {address} runs another Ray or Python version than this machine (Ray "
                f"{ray.__version__}, Python {sys.version.split()[0]}): install the same on every node, "
                "e.g. pip install -e \".[sweep]\" (which pins Ray)")
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"cannot connect to the Ray cluster at {address} ({type(error).__name__}: {first})"


def connect(address: str | None, num_cpus: int | None, verbose: bool) -> None:
    """``ray.init`` locally (``address`` None) or on the cluster at ``address``; ``ClusterError`` in one line.

    Locally means a Ray instance of this sweep's own (``address="local"``): without it ``ray.init`` joins whatever
    cluster another process started on this machine, with that cluster's CPUs and lifetime."""
    if address is None:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 configure_logging=verbose, log_to_driver=verbose)
        return
    check_listening(address)
    with captured_stderr() as log:
        try:
            ray.init(address=address, configure_logging=verbose, log_to_driver=verbose)
            error: Exception | None = None
        except Exception as raised:  # ConnectionError, RuntimeError or Ray's own, depending on the cause
            error = raised
    if error is not None:
        raise ClusterError(refusal(address, error, "".join(log)))
    if verbose:
        sys.stderr.write("".join(log))


class TrialLines(tune.Callback):
    """One console line per trial state change: started, finished, failed (with the attempt), retried."""

    def _line(self, trial: Any, what: str) -> None:
        print(f"{PROG}: {time.strftime('%H:%M:%S')} {trial.trial_id} {trial} {what}", flush=True)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._line(trial, "started")

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        finished = RunDir(Path(trial.config["trial"]["run_dir"])).is_finished()
        self._line(trial, "finished" if finished else "stopped (unfinished)")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._line(trial, "failed")

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._line(trial, f"failed (attempt {trial.run_metadata.num_failures}); retrying")


class StopWhenIdle(tune.Stopper, tune.Callback):
    """Ends the experiment once ``stop`` exists and no trial is running, so that no further trial starts after a
    sweep was asked to stop (its running trials checkpoint and end on their own: :func:`sparse_rl.sweep.run_trial`)."""

    def __init__(self, stop: Path) -> None:
        self.stop, self.running = stop, set[str]()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)

    on_trial_error = on_trial_recover = on_trial_complete

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return not self.running and self.stop.exists()


def tune_trials(trainable: Any, specs: list[dict[str, Any]], logdir: Path, name: str,
                options: argparse.Namespace, stop: Path) -> dict[Path, str]:
    """Run one Tune trial per spec (named by its run label); the error text of each failed one, by run directory.
    Once ``stop`` exists, no further trial starts."""
    stopper = StopWhenIdle(stop)
    if not options.verbose:  # Tune's own reporter and its per-failure tracebacks: TrialLines says it in one line
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": options.threads, "gpu": options.gpus_per_trial}),
        param_space={"trial": tune.grid_search(specs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=options.max_concurrent,
                                    trial_name_creator=lambda trial: trial.config["trial"]["name"],
                                    trial_dirname_creator=lambda trial: trial.config["trial"]["dirname"]),
        run_config=tune.RunConfig(name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str(logdir / "ray_results"),
                                  failure_config=tune.FailureConfig(max_failures=options.max_failures),
                                  verbose=2 if options.verbose else 0, stop=stopper,
                                  callbacks=[stopper] if options.verbose else [stopper, TrialLines()]),
    )
    results = tuner.fit()
    failed = [results[index] for index in range(len(results)) if results[index].error is not None]
    return {Path((result.config or {})["trial"]["run_dir"]): str(result.error).strip() for result in failed}
