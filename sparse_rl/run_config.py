"""The effective configuration of a training run: a YAML file's defaults and per-env section,
then CLI flags, then ``--set key=value`` overrides, validated against what SB3 accepts (a run's
name is :mod:`sparse_rl.run_names`).

Stable-Baselines3 is imported only by :func:`algo_classes` and :func:`allowed_keys`, so naming
a run (what ``sparse_rl.report`` needs) does not load it.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sparse_rl.algorithms import ALGO_NAMES
from sparse_rl.checks import in_range, is_int
from sparse_rl.sparsity import SparsityConfig

if TYPE_CHECKING:
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
    from stable_baselines3.common.policies import BasePolicy

TOP_LEVEL_KEYS = ("algo", "env", "seed", "total_steps", "n_envs", "eval_freq", "eval_episodes", "checkpoint_freq",
                  "action_noise_std", "threads", "device", "param_matched", "algo_kwargs", "policy_kwargs", "sparsity")
SECTION_KEYS = ("algo_kwargs", "policy_kwargs", "sparsity")
SET_BY_CLI = ("policy", "env", "policy_kwargs", "tensorboard_log", "seed", "device", "verbose", "action_noise",
              "_init_setup_model", "self", "replay_buffer_class", "replay_buffer_kwargs", "stats_window_size")


class ConfigError(ValueError):
    """A configuration that cannot describe a run."""


def algo_classes(algo: str) -> tuple[type[OffPolicyAlgorithm], type[BasePolicy]]:
    """(algorithm class, its policy base class) of ``--algo algo`` (:data:`sparse_rl.algorithms.ALGORITHMS`)."""
    from sparse_rl.sb3.algorithms import algo_class, policy_base

    if algo not in ALGO_NAMES:
        raise ConfigError(f"unknown algo {algo!r}; allowed: {', '.join(ALGO_NAMES)}")
    return algo_class(algo), policy_base(algo)  # type: ignore[return-value]  # the table holds off-policy ones


def default_config_path(algo: str) -> Path:
    """The packaged YAML for ``algo``."""
    if algo not in ALGO_NAMES:
        raise ConfigError(f"unknown algo {algo!r}; allowed: {', '.join(ALGO_NAMES)}")
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


def merge_configs(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as this release writes it. Configs of 0.1.0 kept RLx2's buffer settings in a top-level
    ``rlx2`` section for every method: for method ``rlx2`` they join its sparsity settings, for another
    method the section is dropped if it holds 0.1.0's defaults (``ConfigError`` otherwise: they never applied)."""
    section = config.get("rlx2")
    if section is None:
        return config
    config = {key: value for key, value in config.items() if key != "rlx2"}
    sparsity = dict(config.get("sparsity") or {})
    if sparsity.get("method") == "rlx2":
        config["sparsity"] = {**section, **sparsity}
    elif section != LEGACY_RLX2_DEFAULTS:
        raise ConfigError(f"rlx2 settings {section!r} apply to method rlx2 only, not to "
                          f"{sparsity.get('method', 'rigl')!r}; give them as sparsity settings of an rlx2 run")
    return config


LEGACY_RLX2_DEFAULTS = {"n_steps": 3, "n_step_delay": 0.1, "check_interval": 10000, "check_size": 2048,
                        "distance_threshold": 0.2, "min_size": 50000, "shrink_fraction": 0.1}
"""The ``rlx2`` section every 0.1.0 config carried."""


def file_defaults(data: Mapping[str, Any], env: str) -> dict[str, Any]:
    """A config file's ``defaults`` with its section for ``env``'s family merged over them."""
    return merge_configs(data.get("defaults") or {}, (data.get("envs") or {}).get(env_family(env)) or {})


def env_family(env_id: str) -> str:
    """``HalfCheetah-v4`` -> ``HalfCheetah`` (the key of its section in a config file)."""
    return env_id.split("/")[-1].rsplit("-v", 1)[0]


def allowed_keys(algo: str) -> dict[str, tuple[str, ...]]:
    """Valid keys of each config section for ``algo``."""
    from sparse_rl.sparsity import SPARSITY_KEYS

    algo_class, policy_class = algo_classes(algo)
    algo_params = [p for p in inspect.signature(algo_class.__init__).parameters if p not in SET_BY_CLI]
    policy_params = [p for p in inspect.signature(policy_class.__init__).parameters
                     if p not in ("self", "observation_space", "action_space", "lr_schedule")]
    return {"": TOP_LEVEL_KEYS, "algo_kwargs": tuple(algo_params), "policy_kwargs": tuple(policy_params),
            "sparsity": SPARSITY_KEYS}


def _net_arch(value: Any) -> bool:
    def widths(item: Any) -> bool:
        return isinstance(item, list) and all(is_int(width, 1) for width in item)

    if isinstance(value, dict):
        return bool(value) and set(value) <= {"pi", "qf"} and all(widths(item) for item in value.values())
    return widths(value)


def _train_freq(value: Any) -> bool:
    if isinstance(value, list):
        return len(value) == 2 and is_int(value[0], 1) and value[1] in ("step", "episode")
    return is_int(value, 1)


def _ent_coef(value: Any) -> bool:
    if isinstance(value, str):
        return value == "auto" or (value.startswith("auto_") and in_range(_float(value[5:]), 0, math.inf, True))
    return in_range(value, 0, math.inf, low_open=True)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


INF = math.inf
NUMERIC_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: is_int(v, 0), "an integer >= 0"),
    "total_steps": (lambda v: is_int(v, 1), "a positive integer"),
    "n_envs": (lambda v: is_int(v, 1), "a positive integer"),
    "eval_freq": (lambda v: is_int(v, 1), "a positive integer"),
    "eval_episodes": (lambda v: is_int(v, 1), "a positive integer"),
    "checkpoint_freq": (lambda v: is_int(v, 0), "an integer >= 0 (0: checkpoint only at the end)"),
    "threads": (lambda v: is_int(v, 1), "a positive integer"),
    "action_noise_std": (lambda v: in_range(v, 0, INF), "a number >= 0"),
    "algo_kwargs.learning_rate": (lambda v: in_range(v, 0, INF, low_open=True), "a number > 0"),
    "algo_kwargs.buffer_size": (lambda v: is_int(v, 1), "a positive integer"),
    "algo_kwargs.learning_starts": (lambda v: is_int(v, 0), "an integer >= 0"),
    "algo_kwargs.batch_size": (lambda v: is_int(v, 1), "a positive integer"),
    "algo_kwargs.tau": (lambda v: in_range(v, 0, 1, low_open=True), "a number in (0, 1]"),
    "algo_kwargs.gamma": (lambda v: in_range(v, 0, 1), "a number in [0, 1]"),
    "algo_kwargs.train_freq": (_train_freq, "a positive integer or [n, 'step' | 'episode']"),
    "algo_kwargs.gradient_steps": (lambda v: is_int(v, 1) or v == -1, "a positive integer or -1"),
    "algo_kwargs.n_steps": (lambda v: is_int(v, 1), "a positive integer"),
    "algo_kwargs.target_update_interval": (lambda v: is_int(v, 1), "a positive integer"),
    "algo_kwargs.sde_sample_freq": (lambda v: is_int(v, -1), "an integer >= -1"),
    "algo_kwargs.ent_coef": (_ent_coef, "a number > 0, 'auto' or 'auto_<initial value>'"),
    "algo_kwargs.target_entropy": (lambda v: v == "auto" or in_range(v, -INF, INF), "a number or 'auto'"),
    "algo_kwargs.policy_delay": (lambda v: is_int(v, 1), "a positive integer"),
    "algo_kwargs.target_policy_noise": (lambda v: in_range(v, 0, INF), "a number >= 0"),
    "algo_kwargs.target_noise_clip": (lambda v: in_range(v, 0, INF), "a number >= 0"),
    "policy_kwargs.net_arch": (_net_arch, "a list of positive layer widths (or {pi: [...], qf: [...]})"),
    "policy_kwargs.n_critics": (lambda v: is_int(v, 1), "a positive integer"),
    "policy_kwargs.log_std_init": (lambda v: in_range(v, -INF, INF), "a finite number"),
    "policy_kwargs.n_quantiles": (lambda v: is_int(v, 1), "a positive integer"),
    "algo_kwargs.top_quantiles_to_drop_per_net": (lambda v: is_int(v, 0), "an integer >= 0"),
    "policy_kwargs.batch_norm_momentum": (lambda v: in_range(v, 0, 1, low_open=True), "a number in (0, 1]"),
    "policy_kwargs.renorm_warmup_steps": (lambda v: is_int(v, 0), "an integer >= 0"),
}
"""Every numeric config field SB3 or this package reads: (check, what a valid value is)."""


def lookup_path(config: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    *sections, key = path.split(".")
    target: Any = config
    for section in sections:
        target = target.get(section) or {}
    return key in target, target.get(key)


def check_device(config: Mapping[str, Any]) -> None:
    """``ConfigError`` unless the config's ``device`` is a torch device this machine has (SB3 would
    quietly train on the CPU instead of a missing GPU). ``auto`` is SB3's: the GPU where there is one.
    Checked where the run trains (:mod:`sparse_rl.runs`), not where a sweep plans it: a cluster's
    head node may have no GPU its workers have."""
    error = _device_error(config.get("device", "cpu"))
    if error is not None:
        raise ConfigError(error)


def _device_error(value: Any) -> str | None:
    import torch

    has_mps = torch.backends.mps.is_available()
    here = ", ".join(["auto", "cpu", *(["cuda"] if torch.cuda.is_available() else []), *(["mps"] if has_mps else [])])
    if value == "auto":
        return None
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        return f"device must be a torch device; allowed here: {here}; got {value!r}"
    has_cuda = torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "cpu" or (device.type == "cuda" and has_cuda) or (device.type == "mps" and has_mps):
        return None
    return f"device {value!r} is not available on this machine; allowed here: {here}"


def check_values(config: Mapping[str, Any]) -> None:
    """``ConfigError`` for sparsity settings the policy would refuse or a numeric field out of its range
    (each field on its own; :func:`check_cross_fields` checks the rules between fields)."""
    sparsity_of(config)
    for path, (check, expected) in NUMERIC_RULES.items():
        present, value = lookup_path(config, path)
        if present and not check(value):
            raise ConfigError(f"{path} must be {expected}, got {value!r}")
    matched = config.get("param_matched")
    if matched is not None and (isinstance(matched, bool) or not isinstance(matched, (int, float))
                                or not 0 < matched < 1):
        raise ConfigError(f"param_matched must be a density in (0, 1), got {matched!r}")


def sparsity_of(config: Mapping[str, Any]) -> SparsityConfig:
    """The one :class:`SparsityConfig` of a config's ``sparsity`` section (``ConfigError`` if it is invalid). Built
    once per distinct section and shared (it is frozen): validation, the run's name, its policy and the ledger's
    comparison all read the same object instead of re-parsing the section."""
    return _sparsity_of(json.dumps(dict(config.get("sparsity") or {}), sort_keys=True, default=list))


@functools.lru_cache(maxsize=256)
def _sparsity_of(section: str) -> SparsityConfig:
    try:
        return SparsityConfig.from_kwargs(**json.loads(section))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"sparsity: {error}") from None


def check_cross_fields(config: Mapping[str, Any]) -> None:
    """``ConfigError`` for fields valid on their own that do not fit together: a parameter-matched run
    that is not dense, a learning start at or past the end."""
    if config.get("param_matched") is not None and (config.get("sparsity") or {}).get("density", 1.0) != 1.0:
        raise ConfigError("param_matched trains a narrower dense network; it needs density 1.0")
    starts = (config.get("algo_kwargs") or {}).get("learning_starts", 100)
    total = config.get("total_steps", 1)
    if starts >= total:
        raise ConfigError(f"algo_kwargs.learning_starts ({starts}) must be below total_steps ({total}): the run "
                          f"would never train; for a short run lower it too, e.g. --learning-starts {total // 10}")


def check_keys(config: Mapping[str, Any]) -> None:
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


def validate(config: dict[str, Any], env_check: Callable[[str], None] | None = None) -> None:
    """``ConfigError`` for the first bad field in the order a user reads them: unknown keys, each
    field's own value (density, method, numeric ranges), the env (``env_check``, when given), and
    only then the rules between fields."""
    check_keys(config)
    check_values(config)
    if env_check is not None:
        env_check(str(config["env"]))
    check_cross_fields(config)


EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
"""``1e-3``: a number in exponent notation, which YAML 1.1 (PyYAML) reads as a string when it has no dot."""


def with_numbers(value: Any) -> Any:
    """``value`` with every string in exponent notation read as the number it means (``"1e-3"``: 0.001,
    ``"2e4"``: 20000), nested too."""
    if isinstance(value, str) and EXPONENT_NUMBER.fullmatch(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and "." not in value else number  # 2e4 steps: an int
    if isinstance(value, dict):
        return {key: with_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_numbers(item) for item in value]
    return value


def parse_override(assignment: str) -> tuple[str, Any]:
    """``section.key=value`` (one ``--set``) as (path, value), the value parsed as YAML (``1e-3`` a float)."""
    if "=" not in assignment:
        raise ConfigError(f"--set needs key=value, got {assignment!r}")
    path, raw = assignment.split("=", 1)
    try:
        return path, with_numbers(yaml.safe_load(raw))
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot parse value of --set {path}: {error}") from None


def set_path(config: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted ``section.key`` in ``config``."""
    *sections, key = path.split(".")
    target = config
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{path}: {section!r} is not a section")
    target[key] = value


def build_config(algo: str, env: str, config_file: Path | None, cli: Mapping[str, Any],
                 overrides: Mapping[str, Any], env_check: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The effective run config: file defaults < env section < CLI flags < ``--set`` overrides (path: value),
    validated (:func:`validate`, with ``env_check``)."""
    data = with_numbers(read_yaml(config_file or default_config_path(algo)))
    unknown = set(data) - {"defaults", "envs"}
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in config file; valid: defaults, envs")
    config = file_defaults(data, env)
    config = upgrade_config(merge_configs(config, {"algo": algo, "env": env}))
    for path, value in cli.items():
        if value is not None:
            set_path(config, path, with_numbers(value))
    for path, value in overrides.items():
        set_path(config, path, with_numbers(copy.deepcopy(value)))
    validate(config, env_check)
    return config
