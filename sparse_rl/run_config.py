"""The effective configuration of a training run: a YAML file's defaults and per-env section,
then CLI flags, then ``--set key=value`` overrides, validated against what SB3 accepts."""

from __future__ import annotations

import copy
import inspect
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3 import SAC, TD3
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy

from sparse_rl.sparsity import SPARSITY_KEYS
from sparse_rl.sb3.rlx2 import RLx2ReplayBuffer

RLX2_KEYS = tuple(p for p in inspect.signature(RLx2ReplayBuffer.__init__).parameters
                  if p not in ("self", "args", "kwargs", "gamma"))
"""Keys of the ``rlx2`` section: RLx2ReplayBuffer's own parameters (gamma comes from algo_kwargs)."""

ALGOS = {"sac": (SAC, SACPolicy), "td3": (TD3, TD3Policy)}
TOP_LEVEL_KEYS = ("algo", "env", "seed", "total_steps", "n_envs", "eval_freq", "eval_episodes", "checkpoint_freq",
                  "action_noise_std", "threads", "device", "param_matched", "algo_kwargs", "policy_kwargs", "sparsity", "rlx2")
SECTION_KEYS = ("algo_kwargs", "policy_kwargs", "sparsity", "rlx2")
SET_BY_CLI = ("policy", "env", "policy_kwargs", "tensorboard_log", "seed", "device", "verbose", "action_noise",
              "_init_setup_model", "self", "replay_buffer_class", "replay_buffer_kwargs", "stats_window_size")


class ConfigError(ValueError):
    """A configuration that cannot describe a run."""


def default_config_path(algo: str) -> Path:
    """The packaged YAML for ``algo``."""
    if algo not in ALGOS:
        raise ConfigError(f"unknown algo {algo!r}; allowed: {', '.join(ALGOS)}")
    return Path(str(resources.files("sparse_rl") / "configs" / f"{algo}.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; ``ConfigError`` if it cannot be read or is not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping with 'defaults' and 'envs'")
    return data


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def env_family(env_id: str) -> str:
    """``HalfCheetah-v4`` -> ``HalfCheetah`` (the key of its section in a config file)."""
    return env_id.split("/")[-1].rsplit("-v", 1)[0]


def allowed_keys(algo: str) -> dict[str, tuple[str, ...]]:
    """Valid keys of each config section for ``algo``."""
    algo_class, policy_class = ALGOS[algo]
    algo_params = [p for p in inspect.signature(algo_class.__init__).parameters if p not in SET_BY_CLI]
    policy_params = [p for p in inspect.signature(policy_class.__init__).parameters
                     if p not in ("self", "observation_space", "action_space", "lr_schedule")]
    return {"": TOP_LEVEL_KEYS, "algo_kwargs": tuple(algo_params), "policy_kwargs": tuple(policy_params),
            "sparsity": SPARSITY_KEYS, "rlx2": RLX2_KEYS}


def validate(config: dict[str, Any]) -> None:
    """``ConfigError`` naming the valid keys for any key that does not exist."""
    keys = allowed_keys(config["algo"])
    for key in config:
        if key not in keys[""]:
            raise ConfigError(f"unknown config key {key!r}; valid: {', '.join(keys[''])}")
    for section in SECTION_KEYS:
        if not isinstance(config.get(section, {}), dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        for key in config.get(section, {}):
            if key not in keys[section]:
                raise ConfigError(f"unknown config key {section}.{key}; valid: {', '.join(keys[section])}")
    matched = config.get("param_matched")
    if matched is not None:
        if not isinstance(matched, (int, float)) or not 0 < matched < 1:
            raise ConfigError(f"param_matched must be a density in (0, 1), got {matched!r}")
        if config.get("sparsity", {}).get("density", 1.0) != 1.0:
            raise ConfigError("param_matched trains a narrower dense network; it needs density 1.0")


def apply_override(config: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set section.key=value`` (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"--set needs key=value, got {assignment!r}")
    path, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot parse value of --set {path}: {error}") from None
    set_path(config, path, value)


def set_path(config: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted ``section.key`` in ``config``."""
    *sections, key = path.split(".")
    target = config
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{path}: {section!r} is not a section")
    target[key] = value


def build_config(algo: str, env: str, config_file: Path | None, cli: dict[str, Any],
                 overrides: list[str]) -> dict[str, Any]:
    """The effective run config: file defaults < env section < CLI flags < ``--set`` overrides."""
    data = read_yaml(config_file or default_config_path(algo))
    unknown = set(data) - {"defaults", "envs"}
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in config file; valid: defaults, envs")
    config = _merge(data.get("defaults") or {}, (data.get("envs") or {}).get(env_family(env)) or {})
    config = _merge(config, {"algo": algo, "env": env})
    for path, value in cli.items():
        if value is not None:
            set_path(config, path, value)
    for assignment in overrides:
        apply_override(config, assignment)
    validate(config)
    return config
