"""``python -m sparse_rl.calibrate`` and the calibrated rule ``auto`` follows."""

import json
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_rl import calibrate
from sparse_rl.backends.auto import AUTO_RULE, auto_backend, auto_rule, machine_key, read_rule, rule_path, write_rule

CPU = torch.device("cpu")


@given(st.dictionaries(st.floats(0.01, 1.0), st.floats(0.1, 3.0), min_size=1, max_size=8),
       st.floats(0.5, 1.0))
def test_max_sparse_density_is_the_top_of_the_run_of_wins_from_the_lowest_density(ratios, margin):
    best = calibrate.max_sparse_density(ratios, margin)
    below = [d for d in sorted(ratios) if d <= best]
    assert all(ratios[d] <= margin for d in below)
    above = [d for d in sorted(ratios) if d > best]
    if above:
        assert ratios[above[0]] > margin, "the run of wins stops at the first loss"
    assert best == 0.0 or best in ratios


def table_backend(*args):
    """``auto``'s choice for a layer that cannot be compact: the calibrated (or built-in) MKL table."""
    return auto_backend(*args, compact_capable=False)


def test_without_a_calibration_auto_follows_the_built_in_rule():
    assert not rule_path().exists()
    assert auto_rule() == (AUTO_RULE, "built-in")


def test_a_calibration_of_this_machine_decides_auto(tmp_path, monkeypatch):
    path = tmp_path / "rule.json"
    monkeypatch.setenv("SPARSE_RL_AUTO_RULE", str(path))
    write_rule(((65_536, 0.3), (1_000_000, 0.2)), path)
    auto_rule.cache_clear()
    rule, source = auto_rule()
    assert rule == ((1_000_000, 0.2), (65_536, 0.3)), "rows come back largest layer first"
    assert source == f"calibrated {path}"
    assert table_backend(256, 256, 0.3, CPU) == "sparse"
    assert table_backend(256, 256, 0.31, CPU) == "masked"
    assert table_backend(1024, 1024, 0.25, CPU) == "masked", "the 1M-weight row decides for 1024x1024"
    assert table_backend(17, 256, 0.01, CPU) == "masked", "layers under the smallest row stay masked"
    assert table_backend(256, 256, 0.05, torch.device("meta")) == "masked", "non-CPU devices stay masked"


def test_a_calibration_from_another_cpu_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "rule.json"
    path.write_text(json.dumps({**machine_key(), "cpu": "Some Other CPU", "rule": [[65536, 0.3]]}))
    with pytest.warns(UserWarning, match="built-in rule"):
        assert read_rule(path) is None


@pytest.mark.parametrize("text", ["not json", "{}", '{"rule": [[1]], "cpu": "x", "torch": "y"}'])
def test_a_file_that_is_not_a_calibration_is_a_clear_error(tmp_path, text):
    path = tmp_path / "rule.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="is not an auto-backend calibration.*sparse_rl.calibrate"):
        read_rule(path)


def test_the_command_writes_the_rule_it_measured(tmp_path, capsys):
    path = tmp_path / "rule.json"
    calibrate.main(["--shapes", "32x32", "--densities", "0.5", "--repeats", "1", "--out", str(path)])
    record = json.loads(path.read_text())
    assert {key: record[key] for key in machine_key()} == machine_key()
    assert record["rule"][0][0] == 32 * 32 and record["rule"][0][1] in (0.0, 0.5)
    assert [(m["in"], m["out"], m["density"]) for m in record["measurements"]] == [(32, 32, 0.5)]
    assert f"wrote {path}" in capsys.readouterr().out


def test_dry_run_writes_nothing(tmp_path):
    path = tmp_path / "rule.json"
    calibrate.main(["--shapes", "32x32", "--densities", "0.5", "--repeats", "1", "--out", str(path), "--dry-run"])
    assert not path.exists()


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "3y3"], "INxOUT"), (["--shapes", "0x4"], "INxOUT"), (["--densities", "0"], r"\(0, 1\]"),
    (["--margin", "1.5"], r"\(0, 1\]"), (["--batch", "2"], ">= 4"), (["--repeats", "0"], ">= 1")])
def test_bad_arguments_stop_before_anything_is_timed(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit):
        calibrate.main([*argv, "--out", str(tmp_path / "rule.json")])
    assert re.search(message, capsys.readouterr().err), "the message names the allowed values"
    assert not (tmp_path / "rule.json").exists()
