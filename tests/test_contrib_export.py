"""Export of TQC and CrossQ actors: ONNX, npz and C match ``model.predict(obs, deterministic=True)``."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sb3_contrib import TQC, CrossQ
from sb3_contrib.common.torch_layers import BatchRenorm

from sparse_rl import SparseCrossQPolicy, SparseTQCPolicy
from sparse_rl.deploy import ExportedPolicy
from sparse_rl.export import export
from tests.test_export import ATOL, COMPILER, compile_library, run_c

CASES = {"tqc-rigl-d0.1": (TQC, SparseTQCPolicy, dict(density=0.1)),
         "tqc-mlp": (TQC, "MlpPolicy", {}),
         "crossq-rigl-d0.1": (CrossQ, SparseCrossQPolicy, dict(density=0.1)),
         "crossq-gsde-d0.3": (CrossQ, SparseCrossQPolicy, dict(density=0.3, use_sde=True)),
         "crossq-mlp": (CrossQ, "MlpPolicy", {})}


@torch.no_grad()
def randomize_batch_renorms(model, rng):
    """Running statistics and affine parameters far from their initial values, so folding is tested."""
    for module in model.policy.actor.modules():
        if isinstance(module, BatchRenorm):
            n = module.num_features
            for name, low, high in (("ra_mean", -2, 2), ("ra_var", 0.1, 4), ("scale", 0.5, 2), ("bias", -1, 1)):
                getattr(module, name).copy_(torch.as_tensor(rng.uniform(low, high, n), dtype=torch.float32))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    rng = np.random.default_rng(0)
    saved = {}
    for case, (cls, policy, kwargs) in CASES.items():
        model = cls(policy, "HalfCheetah-v4", policy_kwargs=dict(net_arch=[64, 64], **kwargs), device="cpu", seed=0)
        randomize_batch_renorms(model, rng)
        path = tmp_path_factory.mktemp(case) / "model.zip"
        model.save(path)
        saved[case] = (model, path)
    return saved


@pytest.mark.parametrize("target", ["npz", "onnx", "c"])
@pytest.mark.parametrize("case", CASES)
def test_exported_actor_matches_predict(models, case, target, tmp_path):
    model, path = models[case]
    obs = np.random.default_rng(1).normal(size=(32, 17)).astype(np.float32)
    expected = model.predict(obs, deterministic=True)[0]
    out = tmp_path / {"npz": "actor.npz", "onnx": "actor.onnx", "c": "actor.c"}[target]
    if target == "c" and not COMPILER:
        pytest.skip("no C compiler (cc) on this machine")
    files = export(path, target, out)
    if target == "npz":
        actions = ExportedPolicy.load(out).predict(obs)
    elif target == "onnx":
        session = ort.InferenceSession(str(out))
        actions = session.run(None, {session.get_inputs()[0].name: obs})[0]
    else:
        actions = run_c(compile_library([f for f in files if f.suffix == ".c"], tmp_path), "predict", obs,
                        expected.shape[1])
    np.testing.assert_allclose(actions, expected, atol=ATOL)


def test_crossq_batch_renorm_is_folded_not_exported(models):
    from sparse_rl.export.model import actor_layers

    model, _ = models["crossq-rigl-d0.1"]
    layers = actor_layers(model)
    assert len(layers) == 3  # two hidden layers and mu: the three BatchRenorm layers are folded into them
    linears = [m for m in model.policy.actor.modules() if isinstance(m, torch.nn.Linear)][:2]
    for layer, linear in zip(layers, linears):
        assert np.array_equal(layer.weight != 0, (linear.weight * linear.mask).detach().numpy() != 0)
