"""``sparse-rl NAME ARGS...``: every command line of this package under one command.

    sparse-rl train --env HalfCheetah-v4 --density 0.5      # the same as python -m sparse_rl.train ...
    sparse-rl sweep configs/sweeps/mujoco_100k.yaml --ledger results/ledger
    sparse-rl train --help

``sparse-rl NAME ARGS...`` runs exactly what ``python -m sparse_rl.NAME ARGS...`` runs (its ``main(ARGS)``), named
``sparse-rl NAME`` in its usage and errors. A subcommand's module is imported only when it runs, so ``--help`` is
fast and ``sweep`` needs Ray only when it is used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sparse_rl.cli import COMMAND, OneLineParser, command_prog

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("sparse_rl.train", "train a sparse (or dense) SAC/TD3/TQC/CrossQ agent into a run directory"),
    "sweep": ("sparse_rl.sweep", "run a grid of training runs on Ray Tune (the sweep extra)"),
    "report": ("sparse_rl.report", "tables and plots comparing runs or ledger records"),
    "ledger": ("sparse_rl.ledger", "record finished runs in the run ledger"),
    "calibrate": ("sparse_rl.calibrate", "measure where the sparse backend beats masked on this machine"),
    "export": ("sparse_rl.export.cli", "export a trained actor as ONNX, numpy (npz) or C99"),
}
"""Subcommand: (the module whose ``main(argv)`` runs it, its one line of help)."""


def parser() -> OneLineParser:
    """The top-level parser: its help lists the subcommands; it parses only what names none (help, bad input)."""
    listing = "\n".join(f"  {name:<11}{summary}" for name, (_, summary) in COMMANDS.items())
    top = OneLineParser(prog=COMMAND, description="\n\n".join(__doc__.split("\n\n")[:2]),
                        epilog=f"subcommands:\n{listing}\n\n{COMMAND} NAME --help describes a subcommand; "
                               f"python -m sparse_rl.NAME ARGS... works too.")
    top.add_argument("name", metavar="NAME", choices=list(COMMANDS), help="the subcommand (below)")
    top.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER, help="its arguments")
    return top


def subcommand(name: str) -> Callable[[Sequence[str] | None], Any]:
    """The ``main`` of subcommand ``name``, imported now."""
    return importlib.import_module(COMMANDS[name][0]).main


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``sparse-rl`` on ``argv`` (default ``sys.argv[1:]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        with command_prog():
            subcommand(args[0])(args[1:])
        return
    parser().parse_args(args)  # --help, or one line naming the bad input and exit status 2
    raise AssertionError("unreachable: a known subcommand is dispatched above")


if __name__ == "__main__":
    main()
