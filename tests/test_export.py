"""``python -m sparse_rl.export``: parity with ``model.predict`` for every target, compaction, bad input."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from gymnasium import spaces
from stable_baselines3 import DQN, PPO, SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sparse_rl import SparseSACPolicy, SparseTD3Policy
from sparse_rl.deploy import ExportedPolicy, Layer
from sparse_rl.export import (
    c_layer_layout,
    c_layer_uses_csr,
    c_sources,
    compact,
    condensed,
    constant_fan_in,
    export_policy,
    load_model,
    main,
    write_c,
    write_onnx,
)
from sparse_rl.export.compaction import condensed_nbytes

ROOT = Path(__file__).resolve().parents[1]
ALGOS = {"sac": (SAC, SparseSACPolicy), "td3": (TD3, SparseTD3Policy)}
CASES = [(algo, method, density) for algo in ALGOS for method in ("rigl", "thresholds", "halo")
         for density in (1.0, 0.5, 0.1)] + [("sac", "mlp", 1.0), ("td3", "mlp", 1.0), ("sac", "gsde", 0.5),
                                            ("sac", "sparse-backend", 0.1), ("td3", "wide", 0.1)]
RIGL_VARIANTS = {"sparse-backend": dict(backend="sparse"), "wide": dict(width_multiplier=2)}
"""RigL models whose layers compute with the sparse backend, or are twice as wide."""
TARGETS = ("npz", "onnx", "c")
COMPILER = shutil.which("cc")
ATOL = 1e-5


def case_id(case: tuple) -> str:
    return f"{case[0]}-{case[1]}-d{case[2]:g}"


def actor_linears(model) -> list[torch.nn.Linear]:
    return [m for m in model.policy.actor.modules() if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def make_sparse(model, method: str, density: float, rng: np.random.Generator) -> None:
    """Random biases; masks at ``density`` the way ``method`` makes them (ERK masks from the policy for
    rigl, per-neuron thresholds for thresholds, a global magnitude prune for halo); then, below
    density 1, dead units (rows emptied) in the first layer and orphan units (columns emptied) in the
    output layer, so that compaction has work to do."""
    layers = actor_linears(model)
    for layer in layers:
        layer.bias.copy_(torch.as_tensor(rng.uniform(-0.5, 0.5, layer.out_features), dtype=torch.float32))
    if density == 1.0:
        return
    if method == "thresholds":
        for layer in layers:
            quantile = np.quantile(layer.weight.abs().numpy(), 1 - density, axis=1)
            layer.threshold.copy_(torch.as_tensor(quantile, dtype=torch.float32))
    elif method == "halo":
        magnitudes = torch.cat([layer.weight.abs().flatten() for layer in layers])
        cut = torch.quantile(magnitudes, 1 - density)
        for layer in layers:
            layer.set_mask(layer.weight.abs() > cut)
    mu = model.policy.actor.mu  # SAC's output layer (the first module of a Sequential with gSDE); TD3's last Linear
    first, last = layers[0], layers[-1] if isinstance(model, TD3) else mu[0] if isinstance(mu, torch.nn.Sequential) \
        else mu
    if method == "thresholds":
        first.threshold[:3] = float("inf")
        last.weight[:, :5] = 0
    else:
        mask = first.mask.clone()
        mask[:3] = False
        first.set_mask(mask)
        mask = last.mask.clone()
        mask[:, :5] = False
        last.set_mask(mask)


def build_model(algo: str, method: str, density: float, path: Path, rng: np.random.Generator):
    algo_class, policy_class = ALGOS[algo]
    if method == "mlp":
        model = algo_class("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[64, 64]), buffer_size=1000, seed=0)
    elif method in RIGL_VARIANTS:
        model = algo_class(policy_class, "Pendulum-v1", buffer_size=1000, seed=0,
                           policy_kwargs=dict(net_arch=[64, 64], density=density, **RIGL_VARIANTS[method]))
        make_sparse(model, "rigl", density, rng)
    elif method == "gsde":  # SAC with gSDE: deterministic action tanh(Hardtanh(mu)), mu's bias pushed into the clip
        model = algo_class(policy_class, "Pendulum-v1", use_sde=True, buffer_size=1000, seed=0,
                           policy_kwargs=dict(net_arch=[64, 64], density=density))
        make_sparse(model, "rigl", density, rng)
        with torch.no_grad():
            model.policy.actor.mu[0].bias.fill_(1.9)
    else:
        # thresholds learns its density: built dense, its thresholds set by make_sparse; halo needs a target
        # below 1 and is dense until its prune starts: density 1.0 is that dense phase
        target = {"thresholds": 1.0, "halo": min(density, 0.5)}.get(method, density)
        kwargs = dict(net_arch=[64, 64], method=method, density=target)
        model = algo_class(policy_class, "Pendulum-v1", policy_kwargs=kwargs, buffer_size=1000, seed=0)
        make_sparse(model, method, density, rng)
    model.save(path)
    return load_model(path)


def compile_library(sources: list[Path], directory: Path) -> ctypes.CDLL:
    library = directory / "libpolicies.so"
    subprocess.run([COMPILER, "-O1", "-std=c99", "-shared", "-fPIC", "-o", str(library), *map(str, sources), "-lm"],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(library))


def run_c(library: ctypes.CDLL, name: str, obs: np.ndarray, action_dim: int) -> np.ndarray:
    function = getattr(library, name)
    obs = np.ascontiguousarray(obs, dtype=np.float32)
    actions = np.zeros((len(obs), action_dim), np.float32)
    for row, action in zip(obs, actions):
        function(row.ctypes.data_as(ctypes.c_void_p), action.ctypes.data_as(ctypes.c_void_p))
    return actions


def save_vecnormalize(path: Path, rng: np.random.Generator) -> VecNormalize:
    vecnormalize = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), clip_obs=2.5)
    vecnormalize.obs_rms.mean = rng.normal(0, 0.5, 3)
    vecnormalize.obs_rms.var = rng.uniform(0.05, 4.0, 3)
    vecnormalize.save(str(path))
    return vecnormalize


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    space = gym.make("Pendulum-v1").observation_space
    return np.random.default_rng(1).uniform(space.low, space.high, (1000, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, observations) -> dict:
    """For every case, with and without VecNormalize: model.predict's actions and every target's."""
    directory = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    vecnormalize = save_vecnormalize(directory / "vecnormalize.pkl", rng)
    results: dict = {}
    c_sources, c_pending = [], []
    for case in CASES:
        model = build_model(*case, directory / f"{case_id(case)}.zip", rng)
        for normalized in (False, True):
            key = (case, normalized)
            obs = vecnormalize.normalize_obs(observations) if normalized else observations
            policy = export_policy(model, directory / "vecnormalize.pkl" if normalized else None)
            stem = f"{case_id(case)}-{'vn' if normalized else 'raw'}".replace("-", "_").replace(".", "_")
            policy.save(directory / f"{stem}.npz")
            write_onnx(policy, directory / f"{stem}.onnx")
            c_sources.append(write_c(policy, directory / f"{stem}.c", name=stem)[0])
            c_pending.append((key, stem, policy.action_dim))
            results[key] = {
                "reference": model.predict(obs, deterministic=True)[0],
                "npz": ExportedPolicy.load(directory / f"{stem}.npz").predict(observations),
                "onnx": ort.InferenceSession(str(directory / f"{stem}.onnx")).run(None, {"obs": observations})[0],
                "policy": policy,
            }
    if COMPILER:
        library = compile_library(c_sources, directory)
        for key, stem, action_dim in c_pending:
            results[key]["c"] = run_c(library, stem, observations, action_dim)
    return results


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("normalized", [False, True], ids=["raw", "vecnormalize"])
@pytest.mark.parametrize("case", CASES, ids=[case_id(case) for case in CASES])
def test_exported_actions_match_model_predict(exported, case, normalized, target):
    if target == "c" and not COMPILER:
        pytest.skip("no C compiler (cc) on this machine")
    result = exported[(case, normalized)]
    np.testing.assert_allclose(result[target], result["reference"], rtol=0, atol=ATOL)


def test_sparse_exports_are_compacted_and_smaller(exported, tmp_path):
    for case in CASES:
        policy = exported[(case, False)]["policy"]
        before, after = policy.metadata["widths_before"], policy.metadata["widths_after"]
        if case[2] < 1.0:  # 3 dead units in the first layer, 5 orphans feeding the output layer
            assert after[0] <= before[0] - 3 and after[1] <= before[1] - 5, case
        else:
            assert after == before, case
    sizes = {}
    for density in (1.0, 0.1):
        exported[(("sac", "rigl", density), False)]["policy"].save(tmp_path / f"{density}.npz")
        sizes[density] = (tmp_path / f"{density}.npz").stat().st_size
    assert sizes[0.1] < sizes[1.0] / 2


def test_single_observation_and_csr_compute_path(exported, observations):
    policy = exported[(("td3", "halo", 0.1), True)]["policy"]
    batch = policy.predict(observations[:5])
    assert policy.predict(observations[0]).shape == (1,)
    np.testing.assert_array_equal(policy.predict(observations[0]), batch[0])
    as_csr = ExportedPolicy(policy.obs_shape, policy.layers, policy.action_low, policy.action_high,
                          policy.obs_normalization, csr_max_density=1.0)
    np.testing.assert_allclose(as_csr.predict(observations), policy.predict(observations), rtol=0, atol=1e-6)


@pytest.mark.skipif(not COMPILER, reason="no C compiler (cc) on this machine")
def test_c_csr_and_dense_loops_both_match(exported, observations, tmp_path):
    key = (("td3", "halo", 0.1), True)
    policy, reference = exported[key]["policy"], exported[key]["reference"]
    sources = []
    for layout in ("csr", "dense"):
        code, header = c_sources(policy, f"predict_{layout}", f"{layout}.h", layout=layout)
        (tmp_path / f"{layout}.h").write_text(header)
        (tmp_path / f"{layout}.c").write_text(code)
        sources.append(tmp_path / f"{layout}.c")
    library = compile_library(sources, tmp_path)
    for layout in ("csr", "dense"):
        actions = run_c(library, f"predict_{layout}", observations, policy.action_dim)
        np.testing.assert_allclose(actions, reference, rtol=0, atol=ATOL)


def test_c_picks_csr_where_its_cost_model_says_it_is_faster():
    rng = np.random.default_rng(0)

    def layer(rows: int, cols: int, density: float) -> Layer:
        weight = rng.standard_normal((rows, cols)) * (rng.random((rows, cols)) < density)
        return Layer(weight, np.zeros(rows))

    assert c_layer_uses_csr(layer(256, 256, 0.05)) and c_layer_uses_csr(layer(256, 256, 0.15))
    assert not c_layer_uses_csr(layer(256, 256, 0.3)) and not c_layer_uses_csr(layer(256, 256, 1.0))
    assert not c_layer_uses_csr(layer(256, 17, 0.35))  # HalfCheetah's first layer at ERK density 0.1
    assert not c_layer_uses_csr(layer(6, 256, 0.95))


def fan_in_layer(rows: int, cols: int, k: int, rng: np.random.Generator, activation: str = "relu") -> Layer:
    """A layer whose every row holds exactly ``k`` nonzero weights at random columns."""
    weight = np.zeros((rows, cols), np.float32)
    for row in weight:
        row[rng.choice(cols, k, replace=False)] = rng.uniform(0.1, 1.0, k) * rng.choice([-1, 1], k)
    return Layer(weight, rng.uniform(-0.5, 0.5, rows), activation)


def test_constant_fan_in_is_recognised_and_condensed_in_row_order():
    rng = np.random.default_rng(0)
    layer = fan_in_layer(8, 20, 3, rng)
    assert constant_fan_in(layer) == 3
    data, indices = condensed(layer)
    assert data.shape == indices.shape == (8, 3) and indices.dtype == np.uint8
    csr_data, csr_indices, _ = layer.csr()
    np.testing.assert_array_equal(data.ravel(), csr_data)
    np.testing.assert_array_equal(indices.ravel(), csr_indices)
    np.testing.assert_array_equal(np.take_along_axis(layer.weight, indices.astype(np.int64), axis=1), data)
    layer.weight[2, indices[2, 0]] = 0
    assert constant_fan_in(layer) is None
    with pytest.raises(ValueError, match="different numbers of weights"):
        condensed(layer)
    assert constant_fan_in(Layer(np.zeros((3, 4)), np.zeros(3))) is None


def test_c_condenses_constant_fan_in_layers_where_csr_would_be_picked():
    rng = np.random.default_rng(0)
    for k in (3, 13, 26):
        uniform = fan_in_layer(256, 256, k, rng)
        assert c_layer_uses_csr(uniform) and c_layer_layout(uniform) == "condensed", k
        uniform.weight[0, np.flatnonzero(uniform.weight[0])[0]] = 0  # one row one weight short: CSR
        assert c_layer_layout(uniform) == "csr", k
    assert c_layer_layout(fan_in_layer(256, 256, 128, rng)) == "dense"
    assert c_layer_layout(fan_in_layer(256, 17, 6, rng)) == "dense"  # CSR and condensed loops are slower there
    assert c_layer_layout(fan_in_layer(256, 17, 1, rng)) == "condensed"  # k <= 2: unrolled, faster than dense


def fan_in_policy(rng: np.random.Generator, uniform: bool = True) -> ExportedPolicy:
    """5 inputs -> 64 ReLU (fan-in 2) -> 64 ReLU (fan-in 6) -> 2 tanh (dense): the hidden layers condensed;
    with ``uniform=False`` the second layer's rows hold 5, 6 or 7 weights."""
    second = fan_in_layer(64, 64, 6, rng)
    if not uniform:
        for row in range(0, 63, 3):
            second.weight[row, np.flatnonzero(second.weight[row])[0]] = 0
            second.weight[row + 1, np.flatnonzero(second.weight[row + 1] == 0)[0]] = 0.25
    layers = [fan_in_layer(64, 5, 2, rng), second, fan_in_layer(2, 64, 64, rng, "tanh")]
    return ExportedPolicy((5,), layers, np.array([-2.0, 0.0]), np.array([2.0, 1.0]))


def write_sources(policy: ExportedPolicy, name: str, directory: Path, layout: str = "auto") -> Path:
    code, header = c_sources(policy, name, f"{name}.h", layout=layout)
    (directory / f"{name}.h").write_text(header)
    (directory / f"{name}.c").write_text(code)
    return directory / f"{name}.c"


def test_c_writes_constant_fan_in_layers_condensed_smaller_and_exact(tmp_path):
    rng = np.random.default_rng(0)
    policy, ragged = fan_in_policy(rng), fan_in_policy(rng, uniform=False)
    assert [c_layer_layout(layer) for layer in policy.layers] == ["condensed", "condensed", "dense"]
    assert [c_layer_layout(layer) for layer in ragged.layers] == ["condensed", "csr", "dense"]
    code = c_sources(policy, "fan_in", "fan_in.h")[0]
    assert "condensed: 6 per output" in code and "condensed: 2 per output" in code and "indptr" not in code
    assert "for (k = 0; k < 6; k++) acc += l1_data[o * 6 + k] * buf_a[l1_indices[o * 6 + k]];" in code
    as_csr = c_sources(policy, "fan_in", "fan_in.h", layout="csr")[0]
    assert "static const uint16_t l1_indptr[65]" in as_csr and len(code) < len(as_csr)
    for layer in policy.layers[:2]:  # the weight arrays: CSR's less its 65 row pointers
        assert condensed_nbytes(layer) == layer.csr_nbytes() - layer.csr()[2].nbytes
    ragged_code = c_sources(ragged, "ragged", "ragged.h", layout="condensed")[0]
    assert "l1_indptr" in ragged_code and "condensed: 2 per output" in ragged_code  # no condensed layout: CSR
    if not COMPILER:
        pytest.skip("no C compiler (cc) on this machine")
    sources = [write_sources(policy, f"fan_in_{layout}", tmp_path, layout)
               for layout in ("auto", "condensed", "csr", "dense")]
    sources.append(write_sources(ragged, "ragged", tmp_path))
    library = compile_library(sources, tmp_path)
    obs = np.random.default_rng(1).normal(size=(300, 5)).astype(np.float32)
    actions = {layout: run_c(library, f"fan_in_{layout}", obs, 2) for layout in ("auto", "condensed", "csr", "dense")}
    np.testing.assert_allclose(actions["auto"], policy.predict(obs), rtol=0, atol=ATOL)
    np.testing.assert_array_equal(actions["auto"], actions["csr"])  # the same sums in the same order
    np.testing.assert_array_equal(actions["condensed"], actions["csr"])
    np.testing.assert_allclose(actions["dense"], actions["auto"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(run_c(library, "ragged", obs, 2), ragged.predict(obs), rtol=0, atol=ATOL)


def hand_made_network() -> list[Layer]:
    """4 inputs -> 5 ReLU -> 4 tanh -> 2 tanh. Hidden units 1 and 3 of the first layer have no
    inputs (constants relu(0.7) and relu(-0.2)); unit 4 feeds nothing. In the second layer, unit 1
    reads only dead units (so it dies in turn, a constant folded into the output's bias) and unit 0
    feeds nothing; after it goes, nothing is left to read unit 4."""
    w0 = np.array([[1, -1, 0, 0.5], [0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0.3, 0, 0, 0]], np.float32)
    w1 = np.array([[0.5, 0, 0.1, 0, 0], [0, 1.5, 0, 0.4, 0], [0.2, 0, -0.7, 0, 0], [1.0, -0.5, 0, 0, 0]], np.float32)
    w2 = np.array([[0, 0.3, 0.6, -0.4], [0, -0.8, 0.2, 0.9]], np.float32)
    return [Layer(w0, np.array([0.1, 0.7, -0.3, -0.2, 0.2]), "relu"),
            Layer(w1, np.array([0.05, 0.3, -0.1, 0.2]), "tanh"),
            Layer(w2, np.array([0.1, -0.2]), "tanh")]


def test_compaction_removes_dead_and_orphan_units_and_keeps_the_outputs():
    layers = hand_made_network()
    compacted = compact(layers)
    assert [layer.weight.shape for layer in compacted] == [(2, 4), (2, 2), (2, 2)]
    np.testing.assert_array_equal(compacted[0].weight, layers[0].weight[[0, 2]])
    np.testing.assert_array_equal(compacted[1].weight, layers[1].weight[[2, 3]][:, [0, 2]])
    # the dead second-layer unit 1 outputs tanh(0.3 + 1.5 * relu(0.7) + 0.4 * relu(-0.2))
    constant = np.tanh(0.3 + 1.5 * 0.7)
    np.testing.assert_allclose(compacted[2].bias, [0.1 + 0.3 * constant, -0.2 - 0.8 * constant], rtol=1e-6)
    bounds = -np.ones(2, np.float32), np.ones(2, np.float32)
    obs = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    np.testing.assert_allclose(ExportedPolicy((4,), compacted, *bounds).predict(obs),
                               ExportedPolicy((4,), layers, *bounds).predict(obs), rtol=0, atol=1e-6)


def test_every_target_handles_empty_rows_an_all_zero_layer_and_a_single_output(tmp_path):
    """Uncompacted on purpose: CSR weights with empty rows, one without any weight, one with a single row."""
    layers = hand_made_network()
    layers[1].weight[:] = 0
    layers[2] = Layer(np.array([[0, 0.5, 0, 0]]), np.array([0.1]), "tanh")
    policy = ExportedPolicy((4,), layers, np.array([-2.0]), np.array([3.0]))
    assert all(layer.store_as_csr() for layer in layers)
    obs = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    expected = policy.predict(obs)
    write_onnx(policy, tmp_path / "p.onnx")
    onnx_actions = ort.InferenceSession(str(tmp_path / "p.onnx")).run(None, {"obs": obs})[0]
    np.testing.assert_allclose(onnx_actions, expected, rtol=0, atol=1e-6)
    policy.save(tmp_path / "p.npz")
    np.testing.assert_allclose(ExportedPolicy.load(tmp_path / "p.npz").predict(obs), expected, rtol=0, atol=1e-6)
    if COMPILER:
        for layout in ("csr", "dense"):
            code, header = c_sources(policy, f"edge_{layout}", f"edge_{layout}.h", layout=layout)
            (tmp_path / f"edge_{layout}.h").write_text(header)
            (tmp_path / f"edge_{layout}.c").write_text(code)
        library = compile_library([tmp_path / "edge_csr.c", tmp_path / "edge_dense.c"], tmp_path)
        for layout in ("csr", "dense"):
            np.testing.assert_allclose(run_c(library, f"edge_{layout}", obs, 1), expected, rtol=0, atol=1e-6)


def test_onnx_runtime_folds_the_csr_rebuild_into_dense_gemms_at_load(exported, tmp_path):
    import onnx

    policy = exported[(("sac", "rigl", 0.1), False)]["policy"]
    assert any(layer.store_as_csr() for layer in policy.layers)
    write_onnx(policy, tmp_path / "p.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "p.onnx"), options)
    operators = {node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert not operators & {"ScatterND", "ScatterElements", "CumSum", "ConstantOfShape"}, operators


def test_a_hidden_layer_with_no_active_weight_keeps_one_zero_unit():
    layers = hand_made_network()
    layers[1].weight[:] = 0
    compacted = compact(layers)
    assert [layer.weight.shape for layer in compacted] == [(1, 4), (1, 1), (2, 1)]
    assert not compacted[1].weight.any() and not compacted[2].weight.any()
    bounds = -np.ones(2, np.float32), np.ones(2, np.float32)
    obs = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    np.testing.assert_allclose(ExportedPolicy((4,), compacted, *bounds).predict(obs),
                               ExportedPolicy((4,), layers, *bounds).predict(obs), rtol=0, atol=1e-6)


def test_cli_exports_a_trained_run_directory(tmp_path, observations):
    """A SAC agent trained for a few hundred steps (RigL updates included), as a sparse_rl.train run
    directory; every format through the command line."""
    run_dir = tmp_path / "Pendulum-v1" / "sac-rigl-d0.2-s0"
    run_dir.mkdir(parents=True)
    model = SAC(SparseSACPolicy, "Pendulum-v1", learning_starts=100, batch_size=64, seed=0,
                policy_kwargs=dict(net_arch=[64, 64], density=0.2, update_interval=50))
    model.learn(300)
    model.save(run_dir / "model.zip")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"algo": "sac", "env": "Pendulum-v1"}))
    reference = model.predict(observations, deterministic=True)[0]
    for fmt, name in (("npz", "actor.npz"), ("onnx", "actor.onnx"), ("c", "actor.c")):
        main([str(run_dir), "--format", fmt, "--out", str(tmp_path / name)])
    np.testing.assert_allclose(ExportedPolicy.load(tmp_path / "actor.npz").predict(observations), reference,
                               rtol=0, atol=ATOL)
    onnx_actions = ort.InferenceSession(str(tmp_path / "actor.onnx")).run(None, {"obs": observations})[0]
    np.testing.assert_allclose(onnx_actions, reference, rtol=0, atol=ATOL)
    assert "void predict(const float *obs, float *action);" in (tmp_path / "actor.h").read_text()
    if COMPILER:
        library = compile_library([tmp_path / "actor.c"], tmp_path)
        np.testing.assert_allclose(run_c(library, "predict", observations, 1), reference, rtol=0, atol=ATOL)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"algo": "td3"}))
    assert "config.yaml says algo 'td3' but model.zip holds a SAC model" in export_error(str(run_dir))


def test_an_srigl_trained_sac_actor_exports_compacted_to_every_target(tmp_path, observations):
    """SRigL (constant fan-in) trained long enough to ablate actor neurons: compaction removes them, every
    target matches model.predict, and the C target lays out each layer as its cost rule says (condensed where
    the rows hold equal numbers of nonzero weights; a grown weight whose gradient stayed 0 is absent, so a
    trained layer's rows need not be uniform)."""
    model = SAC(SparseSACPolicy, "Pendulum-v1", learning_starts=50, batch_size=64, seed=0,
                policy_kwargs=dict(method="srigl", density=0.1, update_interval=50, net_arch=[64, 64]))
    model.learn(330)
    masks = [m.mask for m in actor_linears(model)]
    live = [int(mask.any(dim=1).sum()) for mask in masks[:2]]
    assert model.policy.actor_controller.log_values()["ablated"] > 0 and min(live) < 64
    model.save(tmp_path / "model.zip")
    reference = model.predict(observations, deterministic=True)[0]
    policy = export_policy(model)
    assert policy.metadata["widths_before"] == [64, 64, 1]
    assert all(after <= kept for after, kept in zip(policy.metadata["widths_after"], live))
    for fmt, name in (("npz", "actor.npz"), ("onnx", "actor.onnx"), ("c", "actor.c")):
        main([str(tmp_path / "model.zip"), "--format", fmt, "--out", str(tmp_path / name)])
    np.testing.assert_allclose(ExportedPolicy.load(tmp_path / "actor.npz").predict(observations), reference,
                               rtol=0, atol=ATOL)
    onnx_actions = ort.InferenceSession(str(tmp_path / "actor.onnx")).run(None, {"obs": observations})[0]
    np.testing.assert_allclose(onnx_actions, reference, rtol=0, atol=ATOL)
    code = (tmp_path / "actor.c").read_text()
    for i, layer in enumerate(policy.layers):
        layout = c_layer_layout(layer)
        assert ("condensed: " if layout == "condensed" else "CSR */" if layout == "csr" else "dense (") in \
            code.split(f"/* layer {i}: ")[1].split("\n")[0], (i, layout)
    if COMPILER:
        sources = [tmp_path / "actor.c", write_sources(policy, "forced", tmp_path, "condensed")]
        library = compile_library(sources, tmp_path)
        for name in ("predict", "forced"):
            np.testing.assert_allclose(run_c(library, name, observations, 1), reference, rtol=0, atol=ATOL)


def test_deploy_imports_numpy_only():
    """The numpy runtime needs neither torch nor SB3: as a file copied alone, and as ``sparse_rl.deploy``."""
    probe = "import sys; {}; print(json.dumps([m for m in ('torch', 'stable_baselines3') if m in sys.modules]))"
    standalone = ("import importlib.util, json; spec = importlib.util.spec_from_file_location('deploy', "
                  f"{str(ROOT / 'sparse_rl' / 'deploy.py')!r}); module = importlib.util.module_from_spec(spec); "
                  "sys.modules['deploy'] = module; spec.loader.exec_module(module)")
    for code in (standalone, "import json, sparse_rl.deploy"):
        result = subprocess.run([sys.executable, "-c", probe.format(code)], cwd=ROOT, check=True,
                                capture_output=True, text=True)
        imported = json.loads(result.stdout)
        assert imported == [], code


class ImageEnv(gym.Env):
    observation_space = spaces.Box(0, 255, (36, 36, 3), np.uint8)
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def export_error(*argv: str) -> str:
    with pytest.raises(SystemExit) as raised:
        main([*argv, "--format", "npz", "--out", "unused.npz"])
    message = str(raised.value.code)
    assert message.startswith("sparse_rl.export: error: ") and "\n" not in message
    return message


@pytest.mark.parametrize("kind", ["ppo", "dqn", "image", "text file", "directory", "missing"])
def test_bad_input_is_a_one_line_error_naming_what_is_supported(tmp_path, kind):
    path = tmp_path / "model.zip"
    if kind == "ppo":
        PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64).save(path)
        expected = "PPO"
    elif kind == "dqn":
        DQN("MlpPolicy", "CartPole-v1", learning_starts=0, buffer_size=100).save(path)
        expected = "Discrete(2) action space"
    elif kind == "image":
        SAC("CnnPolicy", ImageEnv(), buffer_size=10).save(path)
        expected = "image observation space"
    elif kind == "text file":
        path.write_text("not a model")
        expected = "is not a model"
    elif kind == "directory":
        path = tmp_path
        expected = "without model.zip"
    else:
        path = tmp_path / "nothing.zip"
        expected = "does not exist"
    message = export_error(str(path))
    assert expected in message and "supported: SAC, TD3, TQC or CrossQ" in message


def test_cli_error_has_no_traceback(tmp_path):
    (tmp_path / "model.zip").write_text("not a model")
    result = subprocess.run([sys.executable, "-m", "sparse_rl.export", str(tmp_path / "model.zip"), "--format", "c",
                             "--out", str(tmp_path / "a.c")], cwd=ROOT, capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"sparse_rl.export: error: {tmp_path / 'model.zip'} is not a model: supported: ")


def test_docs_quote_the_committed_export_results_verbatim():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from readme_results import quoted_readme
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    docs = (ROOT / "docs" / "export.md").read_text()
    assert "<!-- BEGIN results/export.md -->" in docs
    assert quoted_readme(docs, ROOT) == docs
