"""What every command line of this package shares: bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

USAGE_ERROR = 2
"""Exit status of a command given bad input (argparse's own)."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``prog: error: ...; see --help``), not the usage block."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see --help)")


def fail(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` (its first line) on stderr and exit with :data:`USAGE_ERROR`."""
    print(f"{prog}: error: {str(message).splitlines()[0] if message else 'bad input'}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def missing_extra(prog: str, error: ImportError, extra: str) -> NoReturn:
    """One line for a missing optional dependency: the module and the ``pip install`` that brings it."""
    print(f"{prog}: error: {error.name or 'a module'} is not installed; it comes with the {extra!r} extra: "
          f"pip install -e \".[{extra}]\"", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)
