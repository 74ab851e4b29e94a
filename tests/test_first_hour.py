"""A new user's first hour (issue 25), as a user meets it: the command lines as subprocesses, a short
MuJoCo run interrupted and resumed, an export of the interrupted run, the report on deliberately mixed
runs, bad inputs, missing extras, and a sweep on a real ``ray start --head`` cluster with token auth."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sparse_rl import run_callbacks, runs
from sparse_rl.report import at_evaluations, load_run
from sparse_rl.run_names import run_name
from sparse_rl.sparsity import SparsityConfig

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": "1"}
SHORT = ["--total-steps", "2000", "--learning-starts", "100", "--eval-freq", "1000", "--eval-episodes", "1",
         "--set", "policy_kwargs.net_arch=[16]", "--set", "sparsity.update_interval=100", "--no-progress-bar"]


def cli(module, *args, cwd, env=ENV, timeout=180):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


BAD_INPUTS = [
    (["--total-steps", "2000"], "learning_starts (10000) must be below total_steps (2000)", "--learning-starts 200"),
    (["--density", "0"], "density must be a number in (0, 1], got 0.0", None),
    (["--density", "1.5", "--total-steps", "2000"], "density must be a number in (0, 1], got 1.5", None),
    (["--method", "nosuch", "--total-steps", "2000"], "unknown method 'nosuch'; allowed: rigl", None),
    (["--density", "0.5", "--total-steps", "2000", "--set", "sparsity.update_interval=-1"],
     "update_interval must be a positive integer, got -1", None),
    (["--set", "nosuch.key=1", "--total-steps", "2000"], "unknown config key 'nosuch'; valid: algo, env", None),
    (["--density", "abc"], "argument --density: invalid float value: 'abc'", None),
    (["--algo", "ppo"], "argument --algo: invalid choice: 'ppo'", None),
]


def test_every_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    processes = [subprocess.Popen([sys.executable, "-m", "sparse_rl.train", "--env", "HalfCheetah-v4", *args,
                                   "--logdir", "runs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=tmp_path, env=ENV) for args, _, _ in BAD_INPUTS]
    processes.append(subprocess.Popen([sys.executable, "-m", "sparse_rl.train", "--env", "NoSuchEnv-v0",
                                       "--total-steps", "2000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=tmp_path, env=ENV))
    expected = [(message, hint) for _, message, hint in BAD_INPUTS] + [("unknown env 'NoSuchEnv-v0'", None)]
    for process, (message, hint) in zip(processes, expected):
        out, err = process.communicate(timeout=180)
        assert process.returncode == 2, err
        assert len(err.strip().splitlines()) == 1 and not out, err
        assert err.startswith("python -m sparse_rl.train: error: ") and message in err, err
        assert hint is None or hint in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "MUJOCO_LOG.TXT").exists()


SETTINGS = st.fixed_dictionaries({"algo_kwargs.learning_starts": st.sampled_from([100, 1000])}, optional={
    "policy_kwargs.net_arch": st.sampled_from([[], [64, 64], [256, 256], [256, 256, 256], {"pi": [64], "qf": [256]}]),
    "policy_kwargs.n_critics": st.integers(1, 4),
    "algo_kwargs.learning_rate": st.sampled_from([3e-4, 1e-3, 1e-4]),
    "algo_kwargs.batch_size": st.sampled_from([64, 256]),
    "algo_kwargs.gamma": st.sampled_from([0.99, 0.98]),
    "algo_kwargs.tau": st.sampled_from([0.005, 0.01]),
    "action_noise_std": st.sampled_from([0.1, 0.2]),
    "sparsity.update_interval": st.sampled_from([1000, 500]),
})
RUN = st.tuples(SETTINGS, st.sampled_from([1.0, 0.1]), st.sampled_from([20_000, 4_000]))


def learned(config):
    """What a config trains: its sparsity as the settings it resolves to (a dense run has no schedule)."""
    sparsity = SparsityConfig.from_kwargs(**config["sparsity"])
    return {**config, "sparsity": sparsity.as_kwargs() if sparsity.density < 1 else sparsity.density}


@settings(max_examples=40)
@given(RUN, RUN)
def test_runs_that_differ_in_a_setting_never_share_a_directory(one, other):
    configs = [runs.make_config({"env": "Pendulum-v1", "density": density, "total_steps": total, "set": changed})
               for changed, density, total in (one, other)]
    assert (run_name(configs[0]) == run_name(configs[1])) == (learned(configs[0]) == learned(configs[1]))


def readme_tags():
    """The tag patterns of the TensorBoard table (docs/training.md, linked from the README), as regular expressions."""
    readme = (ROOT / "docs" / "training.md").read_text()
    table = readme[readme.index("\n## TensorBoard tags\n"):].split("\n## ")[1]
    patterns = []
    for line in table.splitlines():
        if line.startswith("| `"):
            for tag in re.findall(r"`([^`]+)`", line.split("|")[1]):
                patterns.append(re.escape(tag).replace(r"\*", ".+").replace("<net>", "(actor|critic)")
                                .replace("<layer>", "[^/]+").replace(r"\|", "|"))
    return patterns


def logged_tags(run_dir):
    tags = set()
    for path in run_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


@pytest.mark.slow
def test_first_run_interrupted_exported_resumed_and_documented(tmp_path):
    """The Run command's first screen, Ctrl-C, the export of the interrupted run, resume, the tag table."""
    process = subprocess.Popen([sys.executable, "-m", "sparse_rl.train", "--env", "HalfCheetah-v4", "--density", "0.5",
                                *SHORT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               env=ENV)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("runs/HalfCheetah-v4/*/tb_1/events*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # well before the end (2,000 steps), even on an idle machine
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    (run_dir,) = (tmp_path / "runs" / "HalfCheetah-v4").iterdir()
    assert run_dir.name == "sac-rigl-d0.5-t2k-ls100-arch16-update_interval100-s0"
    first = out.splitlines()
    assert first[0].startswith(f"run directory: runs/HalfCheetah-v4/{run_dir.name} (training 2,000 env steps")
    assert f"python -m sparse_rl.train --resume runs/HalfCheetah-v4/{run_dir.name}" in first[2]
    assert "out of date" not in err + out and "settotalmass" not in err + out and "Warning" not in err
    assert "settotalmass" in (run_dir / "MUJOCO_LOG.TXT").read_text() and not (tmp_path / "MUJOCO_LOG.TXT").exists()
    step = json.loads((run_dir / "checkpoint" / "state.json").read_text())["env_steps"]
    assert (run_dir / "checkpoint" / "replay_buffer.pkl").stat().st_size < 308 * step + 100_000  # filled rows only

    exported = cli("sparse_rl.export", run_dir, "--format", "npz", "--out", "actor.npz", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert f"exporting its last checkpoint, {run_dir / 'checkpoint' / 'model.zip'}" in exported.stderr
    assert (tmp_path / "actor.npz").is_file()

    resumed = cli("sparse_rl.train", "--resume", run_dir.relative_to(tmp_path), "--no-progress-bar", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {step:,} of 2,000" in resumed.stdout.splitlines()[0]
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] == 2000

    patterns, tags = readme_tags(), logged_tags(run_dir)
    undocumented = [tag for tag in tags if not any(re.fullmatch(p, tag) for p in patterns)]
    assert not undocumented, f"logged but not in docs/training.md's tag table: {undocumented}"
    # tags of other methods or settings (recycled: recycle_dormant; ablated: srigl), and rollout/*, logged after the
    # first finished episode (1,000 steps)
    method_only = ("threshold_resets", "rlx2", "rollout", "recycled", "ablated")
    unlogged = [p for p in patterns
                if not any(re.fullmatch(p, t) for t in tags) and not any(m in p for m in method_only)]
    assert not unlogged, f"in docs/training.md's tag table but not logged: {unlogged}"


def test_progress_bar_of_a_resumed_run_starts_at_the_step_reached():
    bar = run_callbacks.RunProgressBar(1_000_000)
    bar.model = SimpleNamespace(num_timesteps=15_170)
    bar._on_training_start()
    assert (bar.pbar.n, bar.pbar.total) == (15_170, 1_000_000)
    bar.pbar.close()


def fake_run(root, name, config, summary=True, final=100.0, flops_from=0):
    """A run directory as ``sparse_rl.train`` writes it (config, evaluations, summary, series)."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"algo": "sac", "env": "Pendulum-v1", "seed": 0, **config}))
    steps = np.array([0, 10_000, 20_000])
    np.savez(run / "evaluations.npz", timesteps=steps, results=np.array([[-500.0], [0.0], [final]]),
             ep_lengths=np.full((3, 1), 200))
    params = 1000 * (config.get("sparsity") or {}).get("density", 1.0)
    if summary:
        (run / "summary.json").write_text(json.dumps(dict(
            params=params, dense_params=1000, inference_flops=2 * params, dense_inference_flops=2000,
            train_flops=params * 1e6, dense_train_flops=1e9, wall_clock_s_per_1k_steps=5.0, cpu="a CPU", threads=1)))
    return run


def test_report_never_mixes_unlike_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    fake_run(runs_dir, "dense", {"total_steps": 20_000, "sparsity": {"density": 1.0}}, final=200.0)
    fake_run(runs_dir, "dense-noarch", {"total_steps": 20_000, "sparsity": {"density": 1.0},
                                        "policy_kwargs": {"net_arch": []}}, final=50.0)
    fake_run(runs_dir, "dense-4k", {"total_steps": 4_000, "sparsity": {"density": 1.0}}, final=10.0)
    fake_run(runs_dir, "rigl", {"total_steps": 20_000, "sparsity": {"density": 0.1}}, final=150.0)
    fake_run(runs_dir, "rigl-eval", {"total_steps": 20_000, "eval_episodes": 3, "sparsity": {"density": 0.1}})
    fake_run(runs_dir, "unfinished", {"total_steps": 1_000_000, "sparsity": {"density": 0.1}}, summary=False)
    result = cli("sparse_rl.report", "runs", "--out", "report", "--reps", "50", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "leaving out 1 unfinished run(s)" in result.stderr and "unfinished" in result.stderr
    text = (tmp_path / "report" / "results.md").read_text()
    rows = [line for line in text.split("Probability of improvement")[0].splitlines() if line.startswith("| Pendulum")]
    assert len(rows) == 5, text  # the runs differ in more than the seed: no row holds two
    assert "| dense | 1.0 | net_arch [] | 1 |" in text and "| dense | 1.0 | total_steps 4000 | 1 |" in text
    assert "| rigl | 0.1 | eval_episodes 3 (vs None) | 1 |" in text
    rigl = next(row for row in rows if "| rigl | 0.1 | default |" in row)
    assert "| 75.0 | -50.0 | 0.10× |" in rigl  # against the dense run of the same architecture and budget
    noarch = next(row for row in rows if "net_arch []" in row)
    assert "no dense baseline" not in noarch  # it is its own dense baseline
    assert "Machines: a CPU, 1 thread(s) (5 of 5 runs)." in text
    assert not (ROOT / "report").exists()

    included = cli("sparse_rl.report", "runs", "--out", "all", "--reps", "50", "--include-unfinished", cwd=tmp_path)
    assert included.returncode == 0, included.stderr
    row = next(line for line in (tmp_path / "all" / "results.md").read_text().splitlines()
               if line.startswith("| Pendulum") and "total_steps 1000000" in line)
    assert "| 1 (1 unfinished) |" in row and "no dense baseline" in row


def test_flops_plot_starts_at_the_first_evaluation_with_flops(tmp_path):
    run = load_run(fake_run(tmp_path, "rigl", {"total_steps": 20_000, "sparsity": {"density": 0.1}}))
    series = dict(run.series)
    series.update(env_steps=np.array([0.0, 10_000, 20_000]), train_flops=np.array([0.0, 1e9, 2e9]))
    x, y = at_evaluations(SimpleNamespace(curve=lambda c: (series["env_steps"], series[c]),
                                          eval_steps=run.eval_steps, eval_returns=run.eval_returns), "train_flops")
    assert list(x) == [1e9, 2e9] and list(y) == [0.0, 100.0]


@pytest.mark.parametrize("module, blocked, args, extra", [
    ("sparse_rl.sweep", "ray", ["configs/sweeps/mujoco_100k.yaml", "--dry-run"], "sweep"),
    ("sparse_rl.export", "onnx", ["model.zip", "--format", "onnx", "--out", "a.onnx"], "export"),
])
def test_a_missing_extra_is_one_line_naming_the_install(module, blocked, args, extra, tmp_path):
    if extra == "export":
        from stable_baselines3 import SAC

        SAC("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [8]}, device="cpu").save(tmp_path / "model.zip")
    code = (f"import sys, runpy; sys.modules[{blocked!r}] = None; sys.argv = ['x', *{args!r}]; "
            f"runpy.run_module({module!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT if extra == "sweep"
                            else tmp_path, env=ENV, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f'pip install -e ".[{extra}]"' in result.stderr


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path):
    """A ``ray start --head`` cluster on the loopback address with token auth (its token in a file of its own)."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray is None:
        pytest.skip("the ray command is not installed (the sweep extra)")
    token = tmp_path / "auth_token"
    token.write_text("0123456789abcdef" * 4)
    env = {**ENV, "RAY_AUTH_TOKEN_PATH": str(token), "RAY_AUTH_MODE": "token", "HOME": str(tmp_path),  # Ray writes
           # a token of its own to ~/.ray/auth_token: the test's home, not the user's
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # on SIGTERM the head stops at once instead of first
    # draining the node for up to 30 s (for Serve replicas; this cluster has none)
    port = free_port()
    # --block keeps `ray start` in the foreground, in a process group of its own: stopping that group stops this
    # cluster only (`ray stop` would stop every Ray cluster on the machine, a user's running sweep included)
    head = subprocess.Popen([ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        if not wait_for_port(port, head, seconds=120):
            output = head.communicate(timeout=30)[0] if head.poll() is not None else ""
            pytest.skip(f"ray start --head could not start a cluster here: {output.strip()[-300:]}")
        yield f"127.0.0.1:{port}", token
    finally:
        stop_group(head)


def wait_for_port(port: int, process: subprocess.Popen, seconds: float) -> bool:
    """Whether something listens on the loopback ``port`` within ``seconds`` (false once ``process`` has exited)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(2)  # the head's other services come up right after the GCS port
                return True
        time.sleep(0.5)
    return False


def stop_group(process: subprocess.Popen) -> None:
    """Stop ``process`` and everything it started (its process group), politely first."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.slow
def test_sweep_on_a_ray_start_cluster_with_token_auth(ray_cluster, tmp_path):
    address, token = ray_cluster
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump({"name": "tiny", "base": {
        "env": "Pendulum-v1", "total_steps": 300, "eval_freq": 300, "eval_episodes": 1,
        "set": {"algo_kwargs.learning_starts": 100, "policy_kwargs.net_arch": [16]}}, "grid": {"density": [1.0, 0.5]}}))
    env = {key: value for key, value in ENV.items() if key != "RAY_AUTH_MODE"}
    result = cli("sparse_rl.sweep", sweep_file, "--address", address, "--logdir", tmp_path / "out", cwd=tmp_path,
                 env={**env, "RAY_AUTH_TOKEN_PATH": str(token), "HOME": str(tmp_path)}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    names = ["sac-dense-d1-t300-ls100-arch16-s0", "sac-rigl-d0.5-t300-ls100-arch16-s0"]
    for name in names:  # the trial's name is its run label; one line per state change
        assert sum(line.endswith(f" {name} started") for line in lines) == 1, result.stdout
        assert sum(line.endswith(f" {name} finished") for line in lines) == 1, result.stdout
        assert (tmp_path / "out" / "Pendulum-v1" / name / "summary.json").is_file()
    assert len(lines) == 1 + 2 * len(names) + 1 + len(names), result.stdout  # plan, states, status table
    assert "Traceback" not in result.stderr and "InvalidAuthToken" not in result.stderr


def test_nothing_listening_is_one_line(tmp_path):
    result = cli("sparse_rl.sweep", ROOT / "configs" / "sweeps" / "mujoco_100k.yaml", "--address",
                 f"127.0.0.1:{free_port()}", "--logdir", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "nothing listening" in result.stderr and "ray start --head" in result.stderr
    assert not (tmp_path / "out").exists()
