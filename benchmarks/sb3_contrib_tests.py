"""sb3-contrib's own TQC and CrossQ tests with the sparse policies standing in for ``"MlpPolicy"``.

::

    python benchmarks/sb3_contrib_tests.py [--version 2.9.2] [--workdir DIR] [-- extra pytest args]

Fetches sb3-contrib's sdist with pip (``pip download --no-binary :all: --no-deps``), and runs the tests
of its ``tests/`` directory whose names mention TQC or CrossQ against the *installed* sb3-contrib, with
this file as a pytest plugin: it maps ``"MlpPolicy"`` of ``TQC`` and ``CrossQ`` to
:class:`HalfDenseTQCPolicy` / :class:`HalfDenseCrossQPolicy` (density 0.5, a topology update every 10
optimizer steps, so the tests' short ``learn()`` calls rewire), and TQC's ``"MultiInputPolicy"`` too (the
sparse policies take Dict observations; ``test_consistency`` compares it with ``"MlpPolicy"``). ``CnnPolicy``
stays sb3-contrib's (CrossQ has none). The exit code is pytest's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from sb3_contrib import TQC, CrossQ

from sparse_rl import SparseCrossQPolicy, SparseTQCPolicy

STAND_IN = {"density": 0.5, "update_interval": 10}
"""The sparsity settings the stand-in policies add unless a test's ``policy_kwargs`` set them."""
SELECT = "TQC or CrossQ or tqc or crossq"


class HalfDenseTQCPolicy(SparseTQCPolicy):
    """``SparseTQCPolicy`` with :data:`STAND_IN` as defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**STAND_IN, **kwargs})


class HalfDenseCrossQPolicy(SparseCrossQPolicy):
    """``SparseCrossQPolicy`` with :data:`STAND_IN` as defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**STAND_IN, **kwargs})


TQC.policy_aliases = {**TQC.policy_aliases, "MlpPolicy": HalfDenseTQCPolicy, "MultiInputPolicy": HalfDenseTQCPolicy}
CrossQ.policy_aliases = {**CrossQ.policy_aliases, "MlpPolicy": HalfDenseCrossQPolicy}


def fetch_tests(version: str, workdir: Path, package: str = "sb3-contrib") -> Path:
    """The ``tests/`` directory of ``package`` ``version``'s sdist, downloaded with pip into ``workdir``."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q",
                    f"{package}=={version}", "-d", str(workdir)], check=True)
    stem = f"{package.replace('-', '_')}-{version}"
    archive = next(workdir.glob(f"{stem}.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / stem / "tests"


def run_upstream_tests(package: str, plugin: str, select: str, argv: list[str] | None = None) -> int:
    """Fetch ``package``'s tests and run those matching ``select`` with the module ``plugin`` (a file beside this
    one) as a pytest plugin; pytest's exit code."""
    parser = argparse.ArgumentParser(description=f"{package}'s own tests with the sparse policies standing in")
    parser.add_argument("--version", default="2.9.2", help=f"{package} version whose tests to run (default: 2.9.2)")
    parser.add_argument("--workdir", type=Path, help="where to download and unpack (default: a temporary directory)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"{plugin}_"))
    workdir.mkdir(parents=True, exist_ok=True)
    tests = fetch_tests(args.version, workdir, package)
    here = Path(__file__).resolve().parent
    env = {**__import__("os").environ}
    env["PYTHONPATH"] = f"{here}:{here.parent}:{env.get('PYTHONPATH', '')}"
    # run from tests/ so that the installed package is imported, not the sdist's copy
    command = [sys.executable, "-m", "pytest", "-p", plugin, "-p", "no:cacheprovider", "-q",
               "-k", select, "-rfEs", ".", *args.pytest_args]
    return subprocess.run(command, cwd=tests, env=env).returncode


if __name__ == "__main__":
    sys.exit(run_upstream_tests("sb3-contrib", "sb3_contrib_tests", SELECT))
