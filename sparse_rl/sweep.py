"""``python -m sparse_rl.sweep SWEEP.yaml``: a grid of ``sparse_rl.train`` runs on Ray Tune.

    python -m sparse_rl.sweep configs/sweeps/halfcheetah_density_short.yaml
    python -m sparse_rl.sweep configs/sweeps/methods.yaml --address ray://head:10001
    python -m sparse_rl.report runs/sweeps/halfcheetah_density_short --out report/

A sweep file names the trials; each trial is exactly one ``sparse_rl.train`` run, given by the
train CLI's options (``algo``, ``env``, ``density``, ``method``, ``param_matched``, ``seed``, ...,
and ``set``, a mapping of ``--set`` overrides)::

    name: example                # default: the file name; run directories go to runs/sweeps/<name>
    max_failures: 2              # retries of a failing trial (default 2)
    base: {env: Pendulum-v1, total_steps: 20000}   # every trial
    grid: {density: [1.0, 0.1], seed: [0, 1, 2]}   # the cartesian product of these lists
    trials:                      # further trials; a list value is expanded as a grid too
      - {param_matched: 0.1, seed: [0, 1, 2]}

Run directories are ``<logdir>/<env>/<algo>-<method>-d<density>-s<seed>/`` as for a single run,
so ``sparse_rl.report`` reads a sweep directory unchanged. Running a sweep again resumes it: a
run with ``summary.json`` is finished and skipped, a run with a checkpoint continues from it
(``--resume``), and a run that died before its first checkpoint starts over. Ctrl-C stops the
sweep and leaves every finished run intact.

Locally each trial gets one CPU (and one torch thread), so as many trials run at once as the
machine has cores (``--max-concurrent`` to lower it). ``--address`` (or ``RAY_ADDRESS``) sends
the trials to an existing Ray cluster whose nodes have ``sparse_rl`` installed; give ``--logdir``
a path all nodes share. Needs the ``sweep`` extra: ``pip install -e ".[sweep]"``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparse_rl.run_config import ConfigError, read_yaml
from sparse_rl.train import CHECKPOINT, parse_args, plan_run, train

PROG = "sparse_rl.sweep"
SWEEP_KEYS = ("name", "logdir", "max_failures", "base", "grid", "trials")
TRIAL_KEYS = ("algo", "env", "seed", "density", "actor_density", "critic_density", "method", "param_matched",
              "total_steps", "n_envs", "eval_freq", "eval_episodes", "config", "set")


class SweepError(ValueError):
    """A sweep file that cannot describe a set of runs."""


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: its ``sparse_rl.train`` arguments and the run directory they make."""

    argv: tuple[str, ...]
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.run_dir.parent.name}_{self.run_dir.name}"

    @property
    def finished(self) -> bool:
        return (self.run_dir / "summary.json").is_file()


def _expand(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The cartesian product of an entry's list values (``set`` is a mapping, never expanded)."""
    keys = [key for key, value in entry.items() if isinstance(value, list)]
    for key in keys:
        if not entry[key]:
            raise SweepError(f"{key}: an empty list gives no trials")
    combos = itertools.product(*(entry[key] for key in keys))
    return [{**entry, **dict(zip(keys, combo))} for combo in combos]


def _check_keys(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise SweepError(f"{where} must be a mapping of train options")
    unknown = sorted(set(entry) - set(TRIAL_KEYS))
    if unknown:
        raise SweepError(f"unknown trial option(s) {unknown} in {where}; valid: {', '.join(TRIAL_KEYS)}")
    if not isinstance(entry.get("set", {}), dict):
        raise SweepError(f"{where}: 'set' must be a mapping of config paths to values")
    return entry


def trial_options(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Every trial's train options: ``base`` merged with each grid point and each ``trials`` entry."""
    unknown = sorted(set(sweep) - set(SWEEP_KEYS))
    if unknown:
        raise SweepError(f"unknown sweep key(s) {unknown}; valid: {', '.join(SWEEP_KEYS)}")
    base = _check_keys(sweep.get("base") or {}, "base")
    entries = []
    if "grid" in sweep:
        grid = _check_keys(sweep["grid"], "grid")
        if not all(isinstance(value, list) for value in grid.values()):
            raise SweepError("every value under 'grid' must be a list")
        entries.extend(_expand(grid))
    for index, entry in enumerate(sweep.get("trials") or []):
        entries.extend(_expand(_check_keys(entry, f"trials[{index}]")))
    if not entries:
        entries = [{}]
    return [{**base, **entry, "set": {**base.get("set", {}), **entry.get("set", {})}} for entry in entries]


def train_argv(options: dict[str, Any], logdir: Path, gpus_per_trial: float) -> list[str]:
    """The ``sparse_rl.train`` command line of one trial."""
    argv = ["--logdir", str(logdir), "--threads", "1", "--no-progress-bar"]
    if gpus_per_trial > 0:
        argv += ["--device", "cuda"]
    for key, value in options.items():
        if key == "set":
            argv += [arg for path, item in value.items() for arg in ("--set", f"{path}={json.dumps(item)}")]
        else:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def plan_trials(sweep: dict[str, Any], logdir: Path, gpus_per_trial: float = 0.0) -> list[Trial]:
    """The sweep's trials, each config validated as ``sparse_rl.train`` would, before anything runs."""
    trials: dict[Path, Trial] = {}
    for options in trial_options(sweep):
        argv = train_argv(options, logdir, gpus_per_trial)
        try:
            _, run_dir = plan_run(parse_args(argv))
        except (ConfigError, ValueError) as error:
            raise SweepError(f"trial {options}: {error}") from None
        if run_dir in trials:
            raise SweepError(f"two trials write {run_dir}; vary seed, density, method or param_matched")
        trials[run_dir] = Trial(tuple(argv), run_dir)
    return list(trials.values())


def run_trial(params: dict[str, Any]) -> None:
    """Ray Tune trainable: one ``sparse_rl.train`` run, resumed from its checkpoint if it has one."""
    from ray import tune

    run_dir, argv = Path(params["trial"]["run_dir"]), list(params["trial"]["argv"])
    if (run_dir / CHECKPOINT / "model.zip").is_file():
        argv = ["--resume", str(run_dir), "--no-progress-bar"]
    elif run_dir.exists():  # an earlier attempt died before its first checkpoint
        shutil.rmtree(run_dir)
    train(parse_args(argv))
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary["final_return"]
    tune.report({"final_return": math.nan if final is None else final, "env_steps": summary["env_steps"]})


def run_on_ray(trials: list[Trial], logdir: Path, name: str, max_failures: int, max_concurrent: int | None,
               gpus_per_trial: float, address: str | None) -> dict[Path, str]:
    """Run ``trials`` on Ray Tune; the error text of each trial that failed, by run directory."""
    import ray
    from ray import tune

    if address is None and "RAY_ADDRESS" not in os.environ:
        ray.init(num_cpus=max_concurrent or os.cpu_count(), include_dashboard=False, configure_logging=False)
    else:
        ray.init(address=address, configure_logging=False)
    try:
        trainable = tune.with_resources(run_trial, {"cpu": 1, "gpu": gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([{"argv": list(t.argv), "run_dir": str(t.run_dir), "name": t.name}
                                                    for t in trials])},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent,
                                        trial_name_creator=lambda trial: trial.config["trial"]["name"],
                                        trial_dirname_creator=lambda trial: trial.config["trial"]["name"]),
            run_config=tune.RunConfig(name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(logdir / "ray_results"),
                                      failure_config=tune.FailureConfig(max_failures=max_failures), verbose=1),
        )
        results = tuner.fit()
        return {Path(result.config["trial"]["run_dir"]): str(result.error).strip()
                for result in results if result.error is not None}
    finally:
        ray.shutdown()


def status_table(trials: list[Trial], skipped: set[Path], errors: dict[Path, str]) -> str:
    """One line per trial: finished earlier, finished, failed (with the error's last line), or unfinished."""
    lines = []
    for trial in trials:
        if trial.run_dir in skipped:
            status = "finished earlier (skipped)"
        elif trial.run_dir in errors:
            status = "FAILED: " + (errors[trial.run_dir].splitlines() or ["unknown error"])[-1]
        elif trial.finished:
            final = json.loads((trial.run_dir / "summary.json").read_text())["final_return"]
            status = "finished" + ("" if final is None else f", final return {final:.1f}")
        else:
            status = "unfinished (run the sweep again to resume it)"
        lines.append(f"  {trial.run_dir}  {status}")
    return "\n".join(lines)


def parse_sweep_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="sweep YAML file (see configs/sweeps/)")
    parser.add_argument("--logdir", type=Path, help="root of the run directories (default: the file's logdir, "
                                                    "else runs/sweeps/<name>)")
    parser.add_argument("--address", help="address of an existing Ray cluster (default: $RAY_ADDRESS, else local)")
    parser.add_argument("--max-concurrent", type=int, help="trials at a time (default: one per CPU)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial; > 0 trains on cuda")
    parser.add_argument("--max-failures", type=int, help="retries of a failing trial (default: the file's, else 2)")
    parser.add_argument("--dry-run", action="store_true", help="list the trials and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_sweep_args(argv)
    try:
        sweep = read_yaml(args.sweep)
        name = str(sweep.get("name") or args.sweep.stem)
        logdir = args.logdir or Path(sweep.get("logdir") or Path("runs") / "sweeps" / name)
        trials = plan_trials(sweep, logdir.resolve(), args.gpus_per_trial)  # trials run in Ray's own cwd
    except (SweepError, ConfigError) as error:
        raise SystemExit(f"{PROG}: error: {error}") from None
    max_failures = args.max_failures if args.max_failures is not None else int(sweep.get("max_failures", 2))
    skipped = {trial.run_dir for trial in trials if trial.finished}
    pending = [trial for trial in trials if trial.run_dir not in skipped]
    print(f"{PROG}: {name}: {len(trials)} trials, {len(skipped)} finished earlier, {len(pending)} to run; "
          f"run directories under {logdir}")
    if args.dry_run:
        print("\n".join(f"  {trial.run_dir}: {' '.join(trial.argv)}" for trial in trials))
        return
    errors = run_on_ray(pending, logdir.resolve(), name, max_failures, args.max_concurrent, args.gpus_per_trial,
                        args.address) if pending else {}
    print(f"\n{PROG}: {name}:\n{status_table(trials, skipped, errors)}")
    unfinished = [trial for trial in trials if not trial.finished]
    if unfinished:
        print(f"{PROG}: {len(unfinished)} of {len(trials)} trials did not finish", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
