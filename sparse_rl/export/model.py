"""Reading a saved SB3 model for export: load it (a ``model.zip`` or a run directory), check that it is a
supported SAC, TD3, TQC or CrossQ model, read a saved ``VecNormalize``, and read the actor into plain
:class:`Layer` objects."""

from __future__ import annotations

import json
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sparse_rl.deploy import ACTIVATIONS, Layer, ObsNormalization
from sparse_rl.export.errors import ExportError
from sparse_rl.rundir import RunDir

SUPPORTED = ("supported: SAC, TD3, TQC or CrossQ models (SparseSACPolicy, SparseTD3Policy, SparseTQCPolicy, "
             "SparseCrossQPolicy or MlpPolicy) with a continuous Box action space and a flat Box observation space, "
             "given as a model.zip or a sparse_rl.train run directory")


# ---------------------------------------------------------------------------------------------
# Reading SB3 models


def _zip_data(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError):
        raise ExportError(f"{path} is not a model: {SUPPORTED}") from None


def _algorithm_name(policy_class: type, data: dict[str, Any]) -> str:
    """The SB3 algorithm that saved a model, from its policy class (and data for PPO/A2C)."""
    from sb3_contrib.crossq.policies import CrossQPolicy
    from sb3_contrib.tqc.policies import TQCPolicy
    from stable_baselines3.sac.policies import SACPolicy
    from stable_baselines3.td3.policies import TD3Policy

    for base, name in ((SACPolicy, "SAC"), (TD3Policy, "TD3"), (TQCPolicy, "TQC"), (CrossQPolicy, "CROSSQ")):
        if issubclass(policy_class, base):
            return name
    parts = policy_class.__module__.split(".")
    if parts[0] == "stable_baselines3" and parts[1] not in ("common",):
        return parts[1].upper()
    if "clip_range" in data:
        return "PPO"
    return "A2C" if "normalize_advantage" in data else f"a {policy_class.__name__}"


def model_zip_path(path: str | Path) -> Path:
    """The ``model.zip`` of ``path``: the path itself, the one inside a ``sparse_rl.train`` run directory or,
    for a run that has not finished, its checkpoint's (saying so on stderr)."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        if run.model_file.is_file():
            return run.model_file
        checkpoint = run.checkpoint.model_file
        if not checkpoint.is_file():
            raise ExportError(f"{path} is a directory without model.zip or checkpoint/model.zip; {SUPPORTED}")
        print(f"sparse_rl.export: {path} has no model.zip (the run has not finished); exporting its last "
              f"checkpoint, {checkpoint}", file=sys.stderr)
        return checkpoint
    if not path.exists():
        raise ExportError(f"{path} does not exist; {SUPPORTED}")
    return path


def load_model(path: str | Path) -> Any:
    """The SAC, TD3, TQC or CrossQ model saved at ``path`` (a ``model.zip`` or a ``sparse_rl.train`` run directory),
    loaded on the CPU; :class:`ExportError` for anything else."""
    from gymnasium import spaces
    from sb3_contrib import TQC, CrossQ
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.preprocessing import is_image_space
    from stable_baselines3.common.save_util import json_to_data

    zip_path = model_zip_path(path)
    data = _zip_data(zip_path)
    keys = ("policy_class", "observation_space", "action_space")
    if any(key not in data for key in keys):
        raise ExportError(f"{zip_path} is not a model: {SUPPORTED}")
    header = json_to_data(json.dumps({key: data[key] for key in keys}))
    policy_class, obs_space, action_space = (header[key] for key in keys)
    if not isinstance(policy_class, type):
        raise ExportError(f"{zip_path}: cannot read its policy class; {SUPPORTED}")
    algo = _algorithm_name(policy_class, data)
    classes: dict[str, Any] = {"SAC": SAC, "TD3": TD3, "TQC": TQC, "CROSSQ": CrossQ}
    if algo not in classes:
        raise ExportError(f"{zip_path} is a {algo} model ({policy_class.__name__}, {action_space} action space); "
                          f"{SUPPORTED}")
    if not isinstance(action_space, spaces.Box):
        raise ExportError(f"{zip_path} has a discrete action space {action_space}; {SUPPORTED}")
    if not isinstance(obs_space, spaces.Box) or is_image_space(obs_space, check_channels=False):
        kind = "an image" if isinstance(obs_space, spaces.Box) else "a non-Box"
        raise ExportError(f"{zip_path} has {kind} observation space {obs_space}; {SUPPORTED}")
    configured = _run_config_algo(Path(path))
    if configured is not None and configured.upper() != algo:
        raise ExportError(f"{path}: config.yaml says algo {configured!r} but model.zip holds a {algo} model")
    return classes[algo].load(zip_path, device="cpu")


def _run_config_algo(path: Path) -> str | None:
    """The ``algo`` of a run directory's ``config.yaml`` (None for a model.zip or a directory without one)."""
    import yaml

    run = RunDir(path)
    if not (path.is_dir() and run.is_run()):
        return None
    try:
        config = run.parse_config()
    except yaml.YAMLError as error:
        raise ExportError(f"{run.config_file} is not valid YAML ({str(error).splitlines()[0]})") from None
    algo = config.get("algo") if isinstance(config, dict) else None
    return str(algo) if algo is not None else None


def load_vecnormalize(path: str | Path, obs_shape: tuple[int, ...]) -> ObsNormalization | None:
    """The observation transform of an SB3 ``VecNormalize`` saved with ``.save(path)`` (None if it
    does not normalise observations)."""
    from stable_baselines3.common.running_mean_std import RunningMeanStd
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        with open(path, "rb") as file:
            vecnormalize = pickle.load(file)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ExportError(f"cannot read {path} as a saved VecNormalize ({error})") from None
    if not isinstance(vecnormalize, VecNormalize):
        raise ExportError(f"{path} holds a {type(vecnormalize).__name__}, not a VecNormalize")
    if not vecnormalize.norm_obs:
        return None
    rms = vecnormalize.obs_rms
    if not isinstance(rms, RunningMeanStd) or tuple(rms.mean.shape) != tuple(obs_shape):
        raise ExportError(f"{path}: its observation statistics do not match the model's observation shape {obs_shape}")
    return ObsNormalization(rms.mean, np.sqrt(rms.var + vecnormalize.epsilon), vecnormalize.clip_obs)


# ---------------------------------------------------------------------------------------------
# The actor as a list of layers


def effective_weight(linear: Any) -> np.ndarray:
    """The weight a linear layer computes with: ``weight ⊙ mask`` for masked layers (``SparseLinear``,
    ``HaloLinear``, ``ThresholdLinear``'s ``|W| > t``), the weight itself for ``nn.Linear``."""
    import torch

    with torch.no_grad():
        weight = linear.weight.detach()
        mask = getattr(linear, "mask", None)
        if mask is not None:
            weight = weight * mask.to(weight.dtype)
        return weight.cpu().numpy().astype(np.float32)


def _activation(module: Any) -> tuple[str, float] | None:
    """(name, alpha) of a torch activation module in :data:`~sparse_rl.deploy.ACTIVATIONS`; None otherwise
    (a ``Hardtanh`` must clip symmetrically)."""
    from torch import nn

    for activation in ACTIVATIONS.values():
        module_class = getattr(nn, activation.torch_module) if activation.torch_module else None
        if module_class is not None and isinstance(module, module_class):
            if isinstance(module, nn.Hardtanh) and module.min_val != -module.max_val:
                return None
            alpha = float(getattr(module, activation.torch_alpha)) if activation.torch_alpha else 0.0
            return activation.name, alpha
    return None


def batch_renorm_affine(module: Any) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) with ``module(x) = s * x + t`` in eval mode: a BatchRenorm (CrossQ) normalises with its
    running statistics, ``scale * (x - ra_mean) / sqrt(ra_var + eps) + bias``."""
    import torch

    with torch.no_grad():
        s = 1.0 / torch.sqrt(module.ra_var.double() + module.eps)
        t = -module.ra_mean.double() * s
        if module.affine:
            s, t = module.scale.double() * s, module.scale.double() * t + module.bias.double()
    return s.cpu().numpy(), t.cpu().numpy()


def folded_linear(module: Any, affine: tuple[np.ndarray, np.ndarray] | None) -> Layer:
    """A linear layer as a :class:`Layer`, with an element-wise affine map ``s * x + t`` of its input
    (a BatchRenorm before it) folded in: ``W' = W diag(s)`` (same zeros as ``W``), ``b' = b + W t``."""
    weight = effective_weight(module)
    bias = module.bias.detach().cpu().numpy() if module.bias is not None else np.zeros(module.out_features)
    if affine is None:
        return Layer(weight, bias)
    s, t = affine
    return Layer((weight * s[None, :]).astype(np.float32), (bias + weight.astype(np.float64) @ t).astype(np.float32))


def mlp_layers(modules: list[Any]) -> list[Layer]:
    """``Linear``/activation modules in order as :class:`Layer` objects; a BatchRenorm (eval mode, its
    running statistics) is folded into the linear layer after it."""
    from sb3_contrib.common.torch_layers import BatchRenorm
    from torch import nn

    layers: list[Layer] = []
    affine: tuple[np.ndarray, np.ndarray] | None = None
    for module in modules:
        activation = _activation(module)
        if isinstance(module, BatchRenorm):
            if affine is not None:
                raise ExportError("cannot export two BatchRenorm layers in a row in the actor")
            affine = batch_renorm_affine(module)
        elif isinstance(module, nn.Linear):
            layers.append(folded_linear(module, affine))
            affine = None
        elif activation is not None and affine is None and layers and layers[-1].activation == "identity":
            layers[-1].activation, layers[-1].alpha = activation
        elif activation is None or activation[0] != "identity":
            raise ExportError(f"cannot export a {type(module).__name__} in the actor; supported: Linear layers "
                              "with ReLU, Tanh, ELU, LeakyReLU or symmetric Hardtanh activations, and BatchRenorm "
                              "before a Linear layer")
    if affine is not None:
        raise ExportError("cannot export a BatchRenorm with no Linear layer after it in the actor")
    return layers


def actor_layers(model: Any) -> list[Layer]:
    """The actor of a SAC, TD3, TQC or CrossQ ``model`` as layers whose last activation is the tanh squash."""
    from sb3_contrib import TQC, CrossQ
    from stable_baselines3 import SAC
    from stable_baselines3.common.torch_layers import FlattenExtractor
    from torch import nn

    actor = model.policy.actor
    if not isinstance(actor.features_extractor, FlattenExtractor):
        raise ExportError(f"cannot export an actor with a {type(actor.features_extractor).__name__} features "
                          f"extractor; {SUPPORTED}")
    if isinstance(model, (SAC, TQC, CrossQ)):  # squashed Gaussian actors: latent_pi, then mu
        # with gSDE, mu is Sequential(Linear, Hardtanh(-clip_mean, clip_mean)) and the squash is tanh of that
        layers = mlp_layers([*actor.latent_pi, *(actor.mu if isinstance(actor.mu, nn.Sequential) else [actor.mu])])
        squash = {"identity": "tanh", "hardtanh": "clipped_tanh"}.get(layers[-1].activation)
        if squash is None:
            raise ExportError(f"the {type(model).__name__} actor's mu layer ends in {layers[-1].activation}; "
                              "cannot reproduce its squash")
        layers[-1].activation = squash
    else:
        layers = mlp_layers(list(actor.mu))
        if layers[-1].activation != "tanh":
            raise ExportError("the TD3 actor does not end in tanh; cannot reproduce its output")
    return layers

