"""``sparse-rl NAME ARGS...`` (``sparse_rl.command``): one command for every command line, with plain-text help."""

import importlib
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import pytest

from sparse_rl.command import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
NAMES = ("train", "sweep", "report", "ledger", "calibrate", "export")
MODULES = {"export": "sparse_rl.export"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)


def test_help_lists_every_subcommand_with_one_line_each():
    result = run("-m", "sparse_rl.command", "--help")
    assert result.returncode == 0, result.stderr
    assert tuple(COMMANDS) == NAMES
    lines = result.stdout.splitlines()
    for name in NAMES:
        (line,) = [line for line in lines if line.startswith(f"  {name} ")]
        assert len(line.split(maxsplit=1)) == 2, line


@pytest.mark.parametrize("args", [["nosuch"], [], ["--nosuch"]])
def test_a_bad_or_missing_subcommand_is_one_line_and_exit_2(args):
    result = run("-m", "sparse_rl.command", *args)
    assert result.returncode == 2
    assert not result.stdout and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("sparse-rl: error: ")


def command_help(name: str) -> subprocess.CompletedProcess[str]:
    """``sparse-rl NAME --help`` run by ``sparse_rl.command.main`` in this process, as a process would end: its exit
    status and output (help is as wide as in a process whose output is a pipe: $COLUMNS, else 80)."""
    from sparse_rl import command

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, {"COLUMNS": os.environ.get("COLUMNS", "80")}), redirect_stdout(out), \
            redirect_stderr(err), pytest.raises(SystemExit) as stop:
        command.main([name, "--help"])
    return subprocess.CompletedProcess(["sparse-rl", name, "--help"], stop.value.code or 0, out.getvalue(),
                                       err.getvalue())


@pytest.fixture(scope="module")
def helps():
    """Each subcommand's help through sparse-rl and through python -m, side by side: python -m in a process of its
    own (as a user runs it), sparse-rl's in this process (its dispatch in a process of its own is tested above and
    by test_a_subcommand_errs_under_its_own_name; another process would spend ~2 s importing torch first)."""
    return {name: (command_help(name), run("-m", MODULES.get(name, f"sparse_rl.{name}"), "--help")) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_a_subcommand_is_its_module_named_sparse_rl_name(helps, name):
    command, module = helps[name]
    assert command.returncode == module.returncode == 0, command.stderr + module.stderr
    usage, rest = module.stdout.split("\n\n", 1)
    prog = usage.removeprefix("usage: ").split(" [")[0]
    assert prog.endswith(f"sparse_rl.{name}"), usage
    command_usage, command_rest = command.stdout.split("\n\n", 1)
    assert command_usage.split() == usage.replace(prog, f"sparse-rl {name}", 1).split()
    assert command_rest == rest


@pytest.mark.parametrize("name", NAMES)
def test_help_is_plain_text(helps, name):
    text = helps[name][1].stdout
    assert "``" not in text and ":mod:" not in text and ":func:" not in text and ":class:" not in text, text


def test_train_help_states_the_defaults_the_config_supplies(helps):
    text = " ".join(helps["train"][1].stdout.split("\noptions:\n")[1].split())
    for flag, default in [("--total-steps", "1,000,000"), ("--eval-freq", "10,000"), ("--eval-episodes", "10"),
                          ("--learning-starts", "10,000")]:
        help_text = text.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert "default" in help_text and default in help_text, (flag, help_text)
    assert "(default: runs)" in text and "(default: sac)" in text


def test_a_subcommand_errs_under_its_own_name():
    result = run("-m", "sparse_rl.command", "train", "--env", "Pendulum-v1", "--density", "abc")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("sparse-rl train: error: argument --density")


def test_the_console_script_is_an_importable_callable():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for target in scripts.values():
        module, _, attribute = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attribute)), target
    assert scripts["sparse-rl"] == "sparse_rl.command:main"


def test_in_process_the_command_names_itself_only_while_it_runs(capsys):
    from sparse_rl import command, ledger

    with pytest.raises(SystemExit) as stop:
        command.main(["ledger", "add"])
    assert stop.value.code == 2 and capsys.readouterr().err.startswith("sparse-rl ledger add: error: ")
    with pytest.raises(SystemExit):
        ledger.main(["add"])
    assert capsys.readouterr().err.startswith("python -m sparse_rl.ledger add: error: ")
