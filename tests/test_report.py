import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import trim_mean
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from sparse_rl.report import COLUMNS, PAIR_COLUMNS, improvement_probability, iqm_with_ci, main, write_report

ROOT = Path(__file__).resolve().parents[1]
ENV, ALGO, STEPS, REPS = "Pendulum-v1", "sac", 20_000, 200  # Pendulum's default budget: no settings
DENSE_FINALS, SPARSE_FINALS = [100.0, 120.0, 200.0], [80.0, 90.0, 130.0]
SPARSE_TRAIN_FLOPS = 0.3
"""Sparse training FLOPs as a fraction of dense in the fabricated runs."""
EVAL_STEPS = np.arange(2_000, STEPS + 1, 2_000)
RATIO_COLUMNS = ("params vs dense", "inference FLOPs vs dense", "training FLOPs vs dense")


def write_scalars(logdir: Path, tag: str, points: list[tuple[int, float]]) -> None:
    """Write TensorBoard scalar events as SB3's SummaryWriter does, without torch."""
    writer = EventFileWriter(str(logdir))
    for step, value in points:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
        writer.add_event(event_pb2.Event(step=step, wall_time=0.0, summary=summary))
    writer.close()


def make_run(root: Path, method: str, density: float, seed: int, final: float,
             evaluations: bool = True, summary: bool = True, sparse_init: bool = False) -> Path:
    """A run directory laid out like ``python -m sparse_rl.train`` writes it."""
    run = root / ENV / ALGO / f"{method}{'+sparse-init' * sparse_init}_d{density}" / f"seed{seed}"
    run.mkdir(parents=True)
    config = dict(algo=ALGO, env=ENV, seed=seed, total_steps=STEPS,
                  sparsity=dict(density=density, method="rigl" if method == "dense" else method))
    if sparse_init:
        config["sparsity"]["sparse_init"] = True
    if method == "matched":  # a narrow dense network with the weight count of ``density``
        config.update(param_matched=density, sparsity=dict(density=1.0))
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    flops_fraction = 1.0 if density == 1.0 else SPARSE_TRAIN_FLOPS
    if summary:
        (run / "summary.json").write_text(json.dumps(dict(
            params=round(10_000 * density), dense_params=10_000,
            network_density=dict(actor=density, critic=density / 2 if density < 1 else 1.0),
            inference_flops=20_000 * density, dense_inference_flops=20_000.0,
            train_flops=1e6 * STEPS * flops_fraction, dense_train_flops=1e6 * STEPS)))
    if evaluations:
        curve = np.linspace(-500.0, final, len(EVAL_STEPS))
        results = curve[:, None] + np.array([-2.0, -1.0, 1.0, 2.0])
        np.savez(run / "evaluations.npz", timesteps=EVAL_STEPS, results=results,
                 ep_lengths=np.full(results.shape, 200))
    steps = range(0, STEPS + 1, 1_000)
    write_scalars(run / "SAC_1", "flops/train_cumulative", [(s, 1e6 * s * flops_fraction) for s in steps])
    write_scalars(run / "SAC_1", "eval/mean_reward", [(int(s), float(r)) for s, r in zip(EVAL_STEPS, curve)]
                  if evaluations else [])
    return run


def make_runs(root: Path, dense_finals=DENSE_FINALS, sparse_finals=SPARSE_FINALS, **sparse_options) -> Path:
    """Three dense and three RigL (density 0.1) seeds under ``root / "runs"``."""
    runs = root / "runs"
    for seed, (dense, sparse) in enumerate(zip(dense_finals, sparse_finals)):
        make_run(runs, "dense", 1.0, seed, dense)
        make_run(runs, "rigl", 0.1, seed, sparse, **sparse_options)
    return runs


def table_rows(results: Path, columns: tuple[str, ...] = COLUMNS) -> list[dict[str, str]]:
    """The rows of the results table with these columns, as dicts keyed by column."""
    text = results.read_text()
    header = "| " + " | ".join(columns) + " |"
    assert header in text
    lines = text[text.index(header):].split("\n\n")[0].splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return [dict(zip(columns, row)) for row in cells]


def estimate_with_ci(cell: str) -> tuple[float, ...]:
    """``(point, low, high)`` of a table cell written as ``point [low, high]``."""
    return tuple(float(x) for x in cell.replace("[", "").replace(",", "").replace("]", "").split())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report")
    runs = make_runs(root)
    return runs, write_report([runs], root / "out", reps=REPS)


def test_table_has_one_row_per_group_sorted_by_density(report):
    rows = table_rows(report[1])
    assert [(r["env"], r["algo"], r["method"], r["density"], r["seeds"]) for r in rows] == [
        (ENV, ALGO, "dense", "1.0", "3"), (ENV, ALGO, "rigl", "0.1", "3")]


def test_iqm_and_ci_follow_rliable(report):
    dense, sparse = table_rows(report[1])
    for row, finals in ((dense, DENSE_FINALS), (sparse, SPARSE_FINALS)):
        iqm, low, high = estimate_with_ci(row["final return IQM [95% CI]"])
        assert iqm == pytest.approx(trim_mean(finals, 0.25), abs=0.05)
        assert min(finals) <= low <= iqm <= high <= max(finals)
    assert dense["% of dense"] == "100.0" and dense["IQM − dense IQM"] == "+0.0"
    assert sparse["IQM − dense IQM"] == f"{trim_mean(SPARSE_FINALS, 0.25) - trim_mean(DENSE_FINALS, 0.25):+.1f}"
    assert sparse["% of dense"] == f"{100 * trim_mean(SPARSE_FINALS, 0.25) / trim_mean(DENSE_FINALS, 0.25):.1f}"


def test_confidence_intervals_are_the_same_on_every_call_and_leave_numpys_generator_alone():
    np.random.seed(123)
    expected_draw = np.random.rand()
    np.random.seed(123)
    first = iqm_with_ci([4954.8, 5747.7, 5467.3, 5142.8, 5060.2], 500)
    assert np.random.rand() == expected_draw
    assert iqm_with_ci([4954.8, 5747.7, 5467.3, 5142.8, 5060.2], 500) == first
    pair = improvement_probability([1.0, 5.0, 3.0], [2.0, 4.0, 0.5], 500)
    assert improvement_probability([1.0, 5.0, 3.0], [2.0, 4.0, 0.5], 500) == pair


def test_pairs_table_gives_the_share_of_run_pairs_won_against_dense_and_against_matched(tmp_path):
    finals = {("dense", 1.0): [100.0, 120.0, 200.0], ("rigl", 0.1): [80.0, 90.0, 130.0],
              ("matched", 0.1): [10.0, 20.0, 30.0]}
    # rigl beats dense in 2 of 9 run pairs (130 > 100, 130 > 120), and every matched run in all 9
    expected = {("rigl 0.1", "dense 1.0"): 2 / 9, ("rigl 0.1", "matched 0.1"): 1.0, ("matched 0.1", "dense 1.0"): 0.0}
    runs = tmp_path / "runs"
    for (method, density), values in finals.items():
        for seed, final in enumerate(values):
            make_run(runs, method, density, seed, final)
    rows = table_rows(write_report([runs], tmp_path / "out", reps=REPS), PAIR_COLUMNS)
    got = {(row["X"], row["Y"]): row for row in rows}
    assert set(got) == set(expected)
    for pair, probability in expected.items():
        point, low, high = estimate_with_ci(got[pair]["P(X > Y) [95% CI]"])
        assert point == pytest.approx(probability, abs=0.005)
        assert 0.0 <= low <= point <= high <= 1.0
        assert got[pair]["seeds X / Y"] == "3 / 3"


def test_a_method_variant_is_compared_with_its_method(tmp_path):
    runs = tmp_path / "runs"
    for seed, (dense, rigl, variant) in enumerate(zip([100.0, 120.0, 200.0], [80.0, 90.0, 130.0],
                                                      [85.0, 95.0, 70.0])):
        make_run(runs, "dense", 1.0, seed, dense)
        make_run(runs, "rigl", 0.1, seed, rigl)
        make_run(runs, "rigl", 0.1, seed, variant, sparse_init=True)
    rows = table_rows(write_report([runs], tmp_path / "out", reps=REPS), PAIR_COLUMNS)
    got = {(row["X"], row["Y"]): row["P(X > Y) [95% CI]"] for row in rows}
    assert set(got) == {("rigl 0.1", "dense 1.0"), ("rigl+sparse-init 0.1", "dense 1.0"),
                        ("rigl+sparse-init 0.1", "rigl 0.1")}
    # 85 > 80, 95 > 80 and 95 > 90: the variant wins 3 of the 9 run pairs against rigl
    assert estimate_with_ci(got["rigl+sparse-init 0.1", "rigl 0.1"])[0] == pytest.approx(3 / 9, abs=0.005)


def test_time_columns_are_ratios_to_dense_and_blank_without_cpu_time(tmp_path):
    runs = make_runs(tmp_path)
    for path in runs.rglob("summary.json"):  # dense: 20 s wall, 18 s CPU per 1k steps; rigl: 15 s and 6 s
        summary = json.loads(path.read_text())
        dense = "dense" in str(path)
        summary.update(wall_clock_s_per_1k_steps=20.0 if dense else 15.0)
        if dense or "seed0" not in str(path):  # rigl seed 0 is a record from before CPU time was counted
            summary.update(cpu_s_per_1k_steps=18.0 if dense else 6.0)
        path.write_text(json.dumps(summary))
    dense, sparse = table_rows(write_report([runs], tmp_path / "out", reps=REPS))
    columns = ("s / 1k steps", "wall-clock vs dense", "CPU time vs dense")
    assert [dense[column] for column in columns] == ["20.0", "1.00×", "1.00×"]
    assert [sparse[column] for column in columns] == ["15.0", "0.75×", "0.33× (2 of 3)"]


@pytest.mark.parametrize("sparse_machines, seconds, wall_clock, cpu_time", [
    ([("CPU A", 1)] * 3, "15.0", "0.75×", "0.33×"),
    ([("CPU A", 1), ("CPU A", 1), ("CPU B", 1)], "15.0 (2 of 3)", "0.75× (2 of 3)", "0.33× (2 of 3)"),
    ([("CPU B", 1), ("CPU A", 1), ("CPU B", 1)], "99.0 (2 of 3)", "0.75× (1 of 3)", "0.33× (1 of 3)"),
    ([("CPU B", 1)] * 3, "99.0", "other machine", "other machine"),
    ([("CPU A", 2)] * 3, "99.0", "other machine", "other machine"),  # the same CPU on other thread counts
    ([("CPU A", 1, 1)] * 3, "99.0", "other machine", "other machine"),  # timed by code of a later timing epoch
    ([("CPU A", 1, 0)] * 3, "15.0", "0.75×", "0.33×"),  # epoch 0 named is epoch 0 unnamed
])
def test_time_columns_compare_runs_only_with_dense_runs_on_the_same_cpu_and_threads(tmp_path, sparse_machines,
                                                                                     seconds, wall_clock, cpu_time):
    runs = make_runs(tmp_path)
    for path in runs.rglob("summary.json"):  # dense: 20 s wall, 18 s CPU per 1k steps on CPU A, one thread
        summary = json.loads(path.read_text())
        dense = "dense" in str(path)
        cpu, threads, *epoch = ("CPU A", 1) if dense else sparse_machines[int(path.parent.name.removeprefix("seed"))]
        # a run on another machine (or timed by other code) takes other times, which must not enter the ratio
        other = (cpu, threads, *epoch) not in (("CPU A", 1), ("CPU A", 1, 0))
        summary.update(cpu=cpu, threads=threads, wall_clock_s_per_1k_steps=20.0 if dense else 99.0 if other else 15.0,
                       cpu_s_per_1k_steps=18.0 if dense else 99.0 if other else 6.0)
        summary.update({"timing_epoch": epoch[0]} if epoch else {})
        path.write_text(json.dumps(summary))
    results = write_report([runs], tmp_path / "out", reps=REPS)
    sparse = table_rows(results)[1]
    assert (sparse["s / 1k steps"], sparse["wall-clock vs dense"], sparse["CPU time vs dense"]) == (
        seconds, wall_clock, cpu_time)
    assert "on the same CPU model and thread count, timed by code of the same timing epoch, only" in results.read_text()


def test_final_network_densities_come_from_summary(report):
    dense, sparse = table_rows(report[1])
    assert dense["actor / critic density"] == "1.00 / 1.00"
    assert sparse["actor / critic density"] == "0.10 / 0.05"


def test_ratio_columns_come_from_summary(report):
    dense, sparse = table_rows(report[1])
    assert [dense[c] for c in RATIO_COLUMNS] == ["1.00×"] * 3
    assert [sparse[c] for c in RATIO_COLUMNS] == ["0.10×", "0.10×", "0.30×"]


def test_header_line_names_runs_and_budget(report):
    runs, results = report
    first = results.read_text().splitlines()[0]
    assert f"{STEPS} env steps per run" in first
    run_dirs = [config.parent for config in runs.rglob("config.yaml")]
    assert f"Runs read ({len(run_dirs)}): " in first and f" under {runs / ENV / ALGO}." in first
    assert all(str(run_dir.relative_to(runs / ENV / ALGO)) in first for run_dir in run_dirs)


def test_plots_are_written(report):
    for kind in ("steps", "flops"):
        png = report[1].parent / f"{ENV}_{ALGO}_return_vs_{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000


def test_main_finds_runs_recursively(report, tmp_path, capsys):
    main([str(report[0].parent), "--out", str(tmp_path / "out"), "--reps", "20"])
    results = tmp_path / "out" / "results.md"
    assert capsys.readouterr().out.strip() == str(results)
    assert [row["seeds"] for row in table_rows(results)] == ["3", "3"]


def test_no_runs_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no run directories \\(with config.yaml\\) under"):
        main([str(tmp_path), "--out", str(tmp_path / "out")])
    result = subprocess.run([sys.executable, "-m", "sparse_rl.report", str(tmp_path), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"sparse_rl.report: no run directories (with config.yaml) under {tmp_path}"]


def test_run_without_evaluations_is_skipped(report, tmp_path, capsys):
    runs = tmp_path / "runs"
    pending = make_run(runs, "rigl", 0.1, seed=7, final=0.0, evaluations=False)
    results = write_report([report[0], runs], tmp_path / "out", reps=REPS)
    assert f"skipping {pending}: no evaluations.npz yet" in capsys.readouterr().err
    assert [row["seeds"] for row in table_rows(results)] == ["3", "3"]


def test_training_flops_fall_back_to_tensorboard_without_summary(tmp_path):
    results = write_report([make_runs(tmp_path, summary=False)], tmp_path / "out", reps=REPS, include_unfinished=True)
    sparse = table_rows(results)[1]
    assert [sparse[c] for c in RATIO_COLUMNS] == ["—", "—", "0.30×"]


def test_percent_of_dense_is_blank_for_negative_dense_returns(tmp_path):
    dense_finals, sparse_finals = [-300.0, -200.0, -250.0], [-400.0, -350.0, -380.0]
    runs = make_runs(tmp_path, dense_finals=dense_finals, sparse_finals=sparse_finals)
    dense, sparse = table_rows(write_report([runs], tmp_path / "out", reps=REPS))
    assert dense["% of dense"] == sparse["% of dense"] == "—"
    assert sparse["IQM − dense IQM"] == f"{trim_mean(sparse_finals, 0.25) - trim_mean(dense_finals, 0.25):+.1f}"


def test_runs_differing_in_a_criterion_parameter_are_separate_rows(tmp_path):
    runs = make_runs(tmp_path)
    for seed, final in enumerate(SPARSE_FINALS):
        run = make_run(runs / "ablation", "rigl", 0.1, seed, final)
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["sparsity"].update(method="dst-ee", grow_kwargs={"c": 0.01})
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    results = write_report([runs], tmp_path / "out", reps=REPS).read_text()
    assert "| dst-ee+c0.01 | 0.1 | default | 3 |" in results and "| rigl | 0.1 | default | 3 |" in results


def test_report_and_ledger_import_without_stable_baselines3():
    code = "import sys, sparse_rl.report, sparse_rl.ledger; print('stable_baselines3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize("args, message", [
    (["--reps", "0"], "argument --reps: must be an integer >= 1, got '0'"),
    (["--grid", "missing.yaml"], "sparse_rl.report: error: cannot read config file missing.yaml"),
])
def test_bad_arguments_are_one_line_errors_before_anything_is_written(report, tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "sparse_rl.report", str(report[0]), "--out", str(tmp_path / "o"),
                             *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()
