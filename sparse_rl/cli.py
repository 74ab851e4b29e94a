"""What every command line of this package shares: bad input is one line on stderr and exit status 2, help is
plain text with every default shown, and numbers are checked by one argparse type."""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

USAGE_ERROR = 2
"""Exit status of a command given bad input (argparse's own)."""

COMMAND = "sparse-rl"
"""The console script that runs every command line as a subcommand (:mod:`sparse_rl.command`)."""

_under_command = False
_MODULE_PROG = re.compile(r"^(?:python -m )?sparse_rl\.([a-z_]+)(?=\s|$)")
_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|obj|exc):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


@contextlib.contextmanager
def command_prog() -> Iterator[None]:
    """Inside, name a command ``sparse-rl NAME`` (as :mod:`sparse_rl.command` runs it), not ``python -m
    sparse_rl.NAME``, in its usage, help and one-line errors."""
    global _under_command
    before, _under_command = _under_command, True
    try:
        yield
    finally:
        _under_command = before


def shown_prog(prog: str) -> str:
    """``prog`` as this process was started: ``python -m sparse_rl.train`` becomes ``sparse-rl train`` under the
    ``sparse-rl`` command and stays itself otherwise."""
    return _MODULE_PROG.sub(rf"{COMMAND} \1", prog) if _under_command else prog


def plain(text: str) -> str:
    """reST inline markup as plain text: ````x```` and ``:mod:`x``` (any role; ``~a.b`` as ``b``) become ``x``, and a
    paragraph's closing ``::`` (a literal block follows) becomes ``:``."""
    text = _ROLE.sub(lambda match: match[2].rsplit(".", 1)[-1] if match[1] else match[2], text)
    text = _LITERAL.sub(r"\1", text)
    text = re.sub(r"(?m)(?<=\S)::$", ":", text)
    return re.sub(r"(?m)[ \t]*::$", "", text)


class PlainHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help as plain text: the description's and epilog's line breaks kept, reST markup removed (:func:`plain`),
    and ``(default: X)`` after every option whose default is set and whose help does not already state one."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain(super()._expand_help(action))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if shows_default(action) and "default" not in text.lower():
            text = f"{text} (default: %(default)s)" if text else "(default: %(default)s)"
        return text


def shows_default(action: argparse.Action) -> bool:
    """Whether ``action``'s help should name its default: an option (or optional positional) with a default other
    than None, SUPPRESS or an empty list, that takes a value (a flag's False says nothing)."""
    default = action.default
    if default is None or default is argparse.SUPPRESS or action.nargs == 0:
        return False
    if isinstance(default, (list, tuple, dict, str)) and not default:
        return False
    return bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``prog: error: ...; see --help``), not the usage block, and
    whose help is plain text with defaults shown (:class:`PlainHelpFormatter`, the default ``formatter_class``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", PlainHelpFormatter)
        super().__init__(*args, **kwargs)
        self.prog = shown_prog(self.prog)

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see --help)")


def fail(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` (its first line) on stderr and exit with :data:`USAGE_ERROR`."""
    print(f"{shown_prog(prog)}: error: {str(message).splitlines()[0] if message else 'bad input'}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def missing_extra(prog: str, error: ImportError, extra: str) -> NoReturn:
    """One line for a missing optional dependency: the module and the ``pip install`` that brings it."""
    print(f"{shown_prog(prog)}: error: {error.name or 'a module'} is not installed; it comes with the {extra!r} "
          f"extra: pip install -e \".[{extra}]\"", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


NumberT = TypeVar("NumberT", int, float)


def number(convert: Callable[[str], NumberT], low: NumberT, high: NumberT | None = None,
           low_open: bool = False) -> Callable[[str], NumberT]:
    """An argparse ``type``: a finite ``int`` or ``float`` (as ``convert`` reads it) >= ``low`` (> ``low`` with
    ``low_open``) and, with ``high``, <= ``high``; else a one-line error naming the allowed values."""
    what = "an integer" if convert is int else "a number"
    allowed = (f"in {'(' if low_open else '['}{low:g}, {high:g}]" if high is not None
               else f"{'>' if low_open else '>='} {low:g}")

    def parse(text: str) -> NumberT:
        try:
            value: NumberT | None = convert(text)
        except ValueError:
            value = None
        if (value is None or not math.isfinite(value) or (value <= low if low_open else value < low)
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"must be {what} {allowed}, got {text!r}")
        return value
    return parse


def at_least(convert: Callable[[str], NumberT], low: NumberT) -> Callable[[str], NumberT]:
    """An argparse ``type``: a finite number >= ``low`` (:func:`number`)."""
    return number(convert, low)


fraction = number(float, 0.0, 1.0, low_open=True)
"""An argparse ``type``: a number in (0, 1]."""
