"""``python -m sparse_rl.train``: train a sparse (or dense) SAC/TD3 agent into a run directory.

    python -m sparse_rl.train --env HalfCheetah-v4 --density 0.5
    python -m sparse_rl.train --algo td3 --env Hopper-v4 --density 0.1 --method set --seed 3
    python -m sparse_rl.train --resume runs/HalfCheetah-v4/sac-rigl-d0.5-s0
    python -m sparse_rl.train --env HalfCheetah-v4 --density 0.1 --ledger results/ledger --grid mine

A short run needs a learning start below its budget: ``--total-steps 2000 --learning-starts 200``.
Bad input is one line on stderr and exit status 2, before any env is built or file written.

A run directory ``<logdir>/<env>/<algo>-<method>-d<density>[-<settings>]-s<seed>/`` holds ``config.yaml``
(the effective config), TensorBoard events (``tb_1/``), ``evaluations.npz`` (SB3's
EvalCallback, always with an evaluation at the last step), ``checkpoint/`` (model, replay
buffer, FLOP counters, wall-clock; for ``--resume``), ``model.zip`` and ``summary.json`` at the
end. Ctrl-C or SIGTERM writes the checkpoint and prints the command that resumes the run; a
diverging run (non-finite loss or weights) stops with the step and the network and keeps its
last finite checkpoint. The work is done by :mod:`sparse_rl.runs`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sparse_rl.backends import BACKENDS, auto, masked
from sparse_rl.cli import OneLineParser, fail
from sparse_rl.methods import METHODS
from sparse_rl.run_config import ALGO_NAMES, parse_override

PROG = "sparse_rl.train"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments; one line on stderr and exit status 2 for bad ones."""
    parser = OneLineParser(prog=f"python -m {PROG}", description=__doc__)
    add_agent_arguments(parser)
    add_budget_arguments(parser)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.resume is None and args.env is None:
        parser.error("--env is required (or --resume RUN_DIR)")
    return args


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """What is trained: algorithm, env, densities, method, width, backend."""
    parser.add_argument("--algo", choices=list(ALGO_NAMES), default="sac", help="SB3 algorithm (default: sac)")
    parser.add_argument("--env", help="gymnasium env id with a Box action space, e.g. HalfCheetah-v4")
    parser.add_argument("--density", type=float, help="global fraction of active weights in (0, 1]; 1.0 = dense "
                                                                   "(default from sparse_rl/configs/<algo>.yaml: 1.0)")
    parser.add_argument("--actor-density", type=float, help="the actor's own density (default: --density)")
    parser.add_argument("--critic-density", type=float, help="the critics' density (default: --density)")
    parser.add_argument("--param-matched", type=float, metavar="DENSITY",
                        help="train a dense network narrowed to the weight count of a sparse one at DENSITY "
                             "(the parameter-matched baseline of Graesser et al.)")
    parser.add_argument("--method",
                        help=f"DST method: {', '.join(METHODS)} (default from sparse_rl/configs/<algo>.yaml: rigl)")
    parser.add_argument("--width-multiplier", type=int, metavar="K",
                        help="multiply every hidden width by K (a wide sparse network; default 1)")
    parser.add_argument("--iso-params", action="store_const", const=True,
                        help="with --width-multiplier: the density that keeps the dense K=1 weight count")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="how sparse layers store and compute: compact (active values only, this package's "
                             "kernels), masked (dense kernels on masked weights), sparse (MKL's CSR on masked "
                             "weights) or auto (per layer: compact for a CPU layer of a fixed-count method with at "
                             f"least {auto.COMPACT_MIN_WEIGHTS:,} weights at density <= {auto.COMPACT_MAX_DENSITY:g} "
                             f"(<= {auto.COMPACT_NARROW_MAX_DENSITY:g} for an input layer: at most "
                             f"{masked.INPUT_LAYER_MAX_IN} inputs, at least {masked.INPUT_LAYER_MIN_FANOUT}x as many "
                             f"outputs) or for a head of such a network (at most {auto.NARROW_OUTPUT_MAX_OUT} outputs "
                             f"from at least {auto.NARROW_OUTPUT_MIN_IN} inputs) at any density, else masked; where "
                             "the compiled kernels are missing, this machine's table "
                             "from python -m sparse_rl.calibrate; the default)")


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """How long and how it is measured: steps, learning start, seed, envs, evaluation."""
    parser.add_argument("--total-steps", type=int,
                        help="environment steps to train for (default from sparse_rl/configs/<algo>.yaml: 1,000,000, "
                             "hours of training (the README's Run section); 2,000,000 for Humanoid with sac and tqc; "
                             "20,000 for Pendulum and, with sac and td3, InvertedPendulum); a short run also needs "
                             "--learning-starts")
    parser.add_argument("--learning-starts", type=int, metavar="N",
                        help="random-action steps before learning starts (default from sparse_rl/configs/<algo>.yaml: "
                             "10,000; 5,000 with crossq; 1,000 for Pendulum and InvertedPendulum); must be below "
                             "--total-steps, so a short run is e.g. --total-steps 2000 --learning-starts 200")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--n-envs", type=int,
                        help="parallel environments (default from sparse_rl/configs/<algo>.yaml: 1)")
    parser.add_argument("--eval-freq", type=int,
                        help="evaluate every this many environment steps, and at the end (default from "
                             "sparse_rl/configs/<algo>.yaml: 10,000; 2,000 for Pendulum and InvertedPendulum)")
    parser.add_argument("--eval-episodes", type=int,
                        help="episodes per evaluation (default from sparse_rl/configs/<algo>.yaml: 10)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how the run goes: config file and overrides, directories, threads, device, resume, ledger."""
    parser.add_argument("--config", type=Path, help="YAML config file (default: the packaged configs/<algo>.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set algo_kwargs.batch_size=128 "
                             "or --set sparsity.update_interval=500 (repeatable)")
    parser.add_argument("--logdir", type=Path, default=Path("runs"), help="root of run directories (default: runs)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads, which the compact kernels use too (default 1: two 2-thread runs on a "
                             "2-core machine run 3x slower)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--ledger", type=Path, metavar="DIR",
                        help="record the finished run in this ledger (e.g. results/ledger), under --grid")
    parser.add_argument("--grid", default="single", help="the ledger grid the run belongs to (default: single)")
    parser.add_argument("--no-progress-bar", action="store_true", help="hide SB3's progress bar")


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run options (:data:`sparse_rl.runs.OPTION_KEYS`) the command line gives."""
    options = {key: getattr(args, key) for key in (
        "algo", "env", "seed", "density", "actor_density", "critic_density", "method", "param_matched",
        "width_multiplier", "iso_params", "backend", "total_steps", "n_envs", "eval_freq", "eval_episodes", "threads",
        "device", "config", "learning_starts")}
    options["set"] = dict(parse_override(assignment) for assignment in args.overrides)
    return options


def train(args: argparse.Namespace) -> Path:
    """Build or resume the run, train it, and return its directory."""
    from sparse_rl import runs
    from sparse_rl.ledger import Ledger

    ledger = Ledger(args.ledger, args.grid) if args.ledger is not None else None
    progress_bar = not args.no_progress_bar
    if args.resume is not None:
        return runs.resume_run(args.resume, progress_bar=progress_bar, ledger=ledger)
    return runs.start_run(runs.make_config(run_options(args)), args.logdir, progress_bar=progress_bar, ledger=ledger)


def main(argv: list[str] | None = None) -> None:
    """Train; bad input (a flag, a config value, an existing run directory) is one line and exit status 2."""
    args = parse_args(argv)
    from sparse_rl.quiet import filter_known_warnings

    filter_known_warnings()
    from sparse_rl.run_callbacks import RunDiverged, RunInterrupted

    try:
        train(args)
    except RunInterrupted as stop:
        print(f"\n{stop}", file=sys.stderr)
        raise SystemExit(stop.exit_code) from None
    except RunDiverged as error:
        raise SystemExit(f"{PROG}: error: {error}") from None
    except ValueError as error:  # ConfigError, the policy's own checks
        fail(f"python -m {PROG}", str(error))


if __name__ == "__main__":
    main()
