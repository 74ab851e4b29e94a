"""``python -m sparse_rl.sweep SWEEP.yaml``: a grid of training runs on Ray Tune.

    python -m sparse_rl.sweep configs/sweeps/mujoco_100k.yaml --ledger results/ledger
    python -m sparse_rl.sweep configs/sweeps/methods_100k.yaml --address ray://head:10001 --ledger results/ledger
    python -m sparse_rl.report results/ledger/mujoco_100k --out results/mujoco_100k

A sweep file names the trials; each trial is exactly one run of :mod:`sparse_rl.runs`, given by
the train CLI's options (``algo``, ``env``, ``density``, ``method``, ``param_matched``, ``seed``, ...,
and ``set``, a mapping of config paths to values)::

    name: example                # default: the file name; run directories go to runs/sweeps/<name>
    max_failures: 2              # retries of a failing trial (default 2)
    reuse: [other_grid]          # ledger grids whose records of the same runs count as done
    base: {env: Pendulum-v1, total_steps: 20000}   # every trial
    grid: {density: [1.0, 0.1], seed: [0, 1, 2]}   # the cartesian product of these lists
    trials:                      # further trials; a list value is expanded as a grid too
      - {param_matched: 0.1, seed: [0, 1, 2]}

Run directories are ``<logdir>/<env>/<algo>-<method>-d<density>-s<seed>/`` as for a single run,
so ``sparse_rl.report`` reads a sweep directory unchanged. Running a sweep again resumes it: a
run with ``summary.json`` is finished and skipped, a run with a checkpoint continues from it, and
a run that died before its first checkpoint starts over. Ctrl-C (or SIGTERM) stops the sweep
safely: each running trial writes its checkpoint at its next step and ends, and no further trial
starts; a second Ctrl-C stops at once, losing each running trial's steps since its last checkpoint.

With ``--ledger DIR`` every finished trial is recorded in ``DIR/<name>/<env>/<run>/``
(:mod:`sparse_rl.ledger`), and a trial whose record is there (or in a ``reuse`` grid) is not run
at all, so a grid continues across sessions and machines from its committed records.

Locally each trial gets one CPU (and one torch thread; ``--threads N`` gives it N of each), so as many
trials run at once as the machine has cores (``--max-concurrent`` to lower it). ``--address`` (or ``RAY_ADDRESS``) sends
the trials to an existing Ray cluster (``ray start --head`` prints its address) whose nodes have
``sparse_rl`` installed with the same Ray and Python; give ``--logdir`` (and ``--ledger``) paths all
nodes share. A token in ``~/.ray/auth_token`` (or ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH``) is sent
to the cluster; a cluster that refuses is one line naming why (:mod:`sparse_rl.ray_cluster`). The
console shows one line per trial state change, trials named by their run label (``--verbose``: Ray's
own output). Needs the ``sweep`` extra: ``pip install -e ".[sweep]"``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparse_rl.cli import OneLineParser, at_least, fail, missing_extra
from sparse_rl.ledger import Ledger
from sparse_rl.run_callbacks import RunInterrupted, signals_handled_by
from sparse_rl.run_config import ConfigError, read_yaml
from sparse_rl.rundir import RunDir
from sparse_rl.runs import OPTION_KEYS, make_config, run_dir_of

PROG = "sparse_rl.sweep"
SWEEP_KEYS = ("name", "logdir", "max_failures", "reuse", "base", "grid", "trials")
TRIAL_KEYS = tuple(key for key in OPTION_KEYS if key not in ("threads", "device"))


class SweepError(ValueError):
    """A sweep file that cannot describe a set of runs."""


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: its effective config, the options that gave it, and its run directory."""

    config: dict[str, Any]
    options: dict[str, Any]
    run_dir: Path

    @property
    def name(self) -> str:
        """The run's name (its label and seed, :func:`~sparse_rl.run_names.run_name`): Ray's trial name."""
        return self.run_dir.name

    @property
    def finished(self) -> bool:
        return RunDir(self.run_dir).is_finished()


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


def plan_trials(sweep: dict[str, Any], logdir: Path, gpus_per_trial: float = 0.0, threads: int = 1) -> list[Trial]:
    """The sweep's trials, each config validated as ``sparse_rl.train`` would, before anything runs; each trains
    with ``threads`` torch threads (a setting the run's directory name and the ledger's matching leave out)."""
    trials: dict[Path, Trial] = {}
    for options in trial_options(sweep):
        run_options = {**options, "threads": threads, "device": "cuda" if gpus_per_trial > 0 else "cpu"}
        try:
            config = make_config(run_options)
        except ValueError as error:
            raise SweepError(f"trial {options}: {error}") from None
        run_dir = run_dir_of(config, logdir)
        if run_dir in trials:
            raise SweepError(f"two trials write {run_dir}; vary seed, density, method or param_matched")
        trials[run_dir] = Trial(config, options, run_dir)
    return list(trials.values())


def recorded(trials: list[Trial], ledgers: list[Ledger]) -> dict[Path, Path]:
    """The ledger record of each trial that has one, by run directory (``SweepError`` for a record
    of the same name but another config)."""
    found = {}
    for trial in trials:
        for ledger in ledgers:
            try:
                record = ledger.find(trial.config)
            except ConfigError as error:
                raise SweepError(str(error)) from None
            if record is not None:
                found[trial.run_dir] = record
                break
    return found


def run_trial(params: dict[str, Any]) -> None:
    """Ray Tune trainable: one run, resumed from its checkpoint if it has one, recorded in the ledger if given."""
    from ray import tune

    from sparse_rl import runs
    from sparse_rl.quiet import filter_known_warnings

    filter_known_warnings()  # in the worker too: MuJoCo's log goes to the run directory
    spec = params["trial"]
    run_dir, stop = Path(spec["run_dir"]), Path(spec["stop_file"])
    if stop.exists():  # the sweep is stopping: a trial that has not started does not start
        return
    ledger = Ledger(Path(spec["ledger"]), spec["grid"]) if spec["ledger"] else None
    try:
        if RunDir(run_dir).checkpoint.model_file.is_file():
            runs.resume_run(run_dir, ledger=ledger, stop_file=stop)
        else:
            if run_dir.exists():  # an earlier attempt died before its first checkpoint
                shutil.rmtree(run_dir)
            runs.start_run(spec["config"], run_dir.parent.parent, ledger=ledger, stop_file=stop)
    except RunInterrupted:  # stopped by the sweep, its checkpoint written: the sweep's next run resumes it
        return
    summary = RunDir(run_dir).read_summary()
    final = summary["final_return"]
    tune.report({"final_return": math.nan if final is None else final, "env_steps": summary["env_steps"]})


def run_on_ray(trials: list[Trial], logdir: Path, name: str, options: argparse.Namespace,
               ledger: Ledger | None) -> dict[Path, str]:
    """Run ``trials`` on Ray Tune; the error text of each trial that failed, by run directory."""
    import ray

    from sparse_rl.ray_cluster import ClusterError, connect, tune_trials

    try:
        cpus = options.max_concurrent * options.threads if options.max_concurrent else None  # a local Ray's
        connect(options.address or os.environ.get("RAY_ADDRESS"), cpus, options.verbose)
    except ClusterError as error:
        raise SweepError(str(error)) from None
    stop = logdir / f".stop-{name}"
    specs = [{"config": t.config, "run_dir": str(t.run_dir), "name": t.name, "dirname": f"{t.config['env']}_{t.name}",
              "ledger": str(ledger.root.resolve()) if ledger else None, "grid": ledger.grid if ledger else name,
              "stop_file": str(stop)} for t in trials]
    try:
        with stop_trials_on_signals(stop):
            return tune_trials(run_trial, specs, logdir, name, options, stop)
    finally:
        ray.shutdown()


@contextmanager
def stop_trials_on_signals(stop: Path) -> Iterator[None]:
    """While Tune runs the trials, SIGINT or SIGTERM creates ``stop``: each running trial then writes its checkpoint
    at its next step and ends, and a trial not yet started does not start (trials run in Ray's workers, which the
    driver's signals do not reach). A second signal stops at once (``KeyboardInterrupt``; Tune's own SIGINT handler
    is off meanwhile). ``stop`` is removed before and after."""
    def request_stop(signum: int, frame: Any) -> None:
        if stop.exists():
            raise KeyboardInterrupt
        stop.touch()
        print(f"{PROG}: stopping: each running trial writes its checkpoint at its next step (run the sweep again to "
              "resume); Ctrl-C again stops at once, losing the steps since each one's last checkpoint", flush=True)

    stop.parent.mkdir(parents=True, exist_ok=True)
    stop.unlink(missing_ok=True)
    previous_tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        with signals_handled_by(request_stop):
            yield
    finally:
        if previous_tune_handler is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER")
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous_tune_handler
        stop.unlink(missing_ok=True)


def status_table(trials: list[Trial], records: dict[Path, Path], skipped: set[Path], errors: dict[Path, str]) -> str:
    """One line per trial: recorded in the ledger, finished earlier, finished, failed (with the error's
    last line), or unfinished."""
    lines = []
    for trial in trials:
        if trial.run_dir in records and trial.run_dir in skipped:
            status = f"recorded in {records[trial.run_dir]} (skipped)"
        elif trial.run_dir in skipped:
            status = "finished earlier (skipped)"
        elif trial.run_dir in errors:
            status = "FAILED: " + (errors[trial.run_dir].splitlines() or ["unknown error"])[-1]
        elif trial.finished:
            final = RunDir(trial.run_dir).read_summary()["final_return"]
            status = "finished" + ("" if final is None else f", final return {final:.1f}")
        else:
            status = "unfinished (run the sweep again to resume it)"
        lines.append(f"  {trial.run_dir}  {status}")
    return "\n".join(lines)


def parse_sweep_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="sweep YAML file (see configs/sweeps/)")
    parser.add_argument("--logdir", type=Path, help="root of the run directories (default: the file's logdir, "
                                                    "else runs/sweeps/<name>)")
    parser.add_argument("--ledger", type=Path, metavar="DIR",
                        help="record finished trials in DIR/<name>/ and skip trials recorded there (or in the "
                             "file's reuse grids), e.g. results/ledger")
    parser.add_argument("--address", help="address of an existing Ray cluster (default: $RAY_ADDRESS, else local)")
    parser.add_argument("--max-concurrent", type=at_least(int, 1), help="trials at a time (default: one per CPU)")
    parser.add_argument("--threads", type=at_least(int, 1), default=1,
                        help="torch threads, and CPUs reserved, per trial: more for a run that would not finish "
                             "on one core in the time there is (default: 1)")
    parser.add_argument("--gpus-per-trial", type=at_least(float, 0), default=0.0,
                        help="GPUs per trial; > 0 trains on cuda")
    parser.add_argument("--max-failures", type=at_least(int, 0),
                        help="retries of a failing trial (default: the file's, else 2)")
    parser.add_argument("--dry-run", action="store_true", help="list the trials and what is done, and exit")
    parser.add_argument("--verbose", action="store_true",
                        help="Ray's own console output (its trial tables, worker logs) instead of one line per trial "
                             "state change")
    return parser.parse_args(argv)


def send_token(address: str | None) -> None:
    """Send this machine's Ray auth token to the cluster at ``address``: set ``RAY_AUTH_MODE=token`` (before
    Ray is imported, which reads it) when a token is where Ray looks for one and the variable is unset."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if address and "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or path.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def main(argv: list[str] | None = None) -> None:
    """Plan, run and summarise a sweep; bad input is one line and exit status 2."""
    args = parse_sweep_args(argv)
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address is None and args.threads > (os.cpu_count() or 1):
        fail(PROG, f"--threads {args.threads}: this machine has {os.cpu_count()} CPUs, so a trial could never start; "
                   f"give at most {os.cpu_count()} (or --address of a cluster with larger nodes)")
    send_token(address)
    try:
        import ray  # noqa: F401  (the sweep extra)
    except ImportError as error:
        missing_extra(PROG, error, "sweep")
    from sparse_rl.quiet import filter_known_warnings

    filter_known_warnings()
    try:
        sweep = read_yaml(args.sweep)
        name = str(sweep.get("name") or args.sweep.stem)
        logdir = args.logdir or Path(sweep.get("logdir") or Path("runs") / "sweeps" / name)
        trials = plan_trials(sweep, logdir.resolve(), args.gpus_per_trial, args.threads)  # in Ray's own cwd
        ledger = Ledger(args.ledger, name) if args.ledger is not None else None
        ledgers = [ledger, *(Ledger(args.ledger, str(grid)) for grid in sweep.get("reuse") or [])] if ledger else []
        records = recorded(trials, ledgers)
        for trial in trials:  # finished before the ledger was given: record them instead of rerunning
            if ledger is not None and not args.dry_run and trial.finished and trial.run_dir not in records:
                records[trial.run_dir] = ledger.add(trial.run_dir)
    except ValueError as error:  # SweepError, ConfigError
        fail(PROG, str(error))
    args.max_failures = args.max_failures if args.max_failures is not None else int(sweep.get("max_failures", 2))
    skipped = {trial.run_dir for trial in trials if trial.finished or trial.run_dir in records}
    pending = [trial for trial in trials if trial.run_dir not in skipped]
    print(f"{PROG}: {name}: {len(trials)} trials, {len(records)} recorded in the ledger, "
          f"{len(skipped - set(records))} finished earlier, {len(pending)} to run; run directories under {logdir}")
    if args.dry_run:
        print("\n".join(f"  {trial.run_dir}: {'done' if trial.run_dir in skipped else 'to run'}: "
                        f"{json.dumps(trial.options)}" for trial in trials))
        return
    try:
        errors = run_on_ray(pending, logdir.resolve(), name, args, ledger) if pending else {}
    except SweepError as error:
        fail(PROG, str(error))
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        print(f"\n{PROG}: {name}: stopped at once:\n{status_table(trials, records, skipped, {})}", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"\n{PROG}: {name}:\n{status_table(trials, records, skipped, errors)}")
    unfinished = [trial for trial in trials if not (trial.finished or trial.run_dir in records)]
    if unfinished:
        print(f"{PROG}: {len(unfinished)} of {len(trials)} trials did not finish", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
