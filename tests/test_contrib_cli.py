"""``python -m sparse_rl.train --algo tqc|crossq``: short Pendulum-v1 runs, param-matched runs, config errors."""

import numpy as np
import pytest
from sb3_contrib import TQC, CrossQ

from sparse_rl import train
from sparse_rl.run_config import ConfigError, build_config
from sparse_rl.runs import make_config

SHORT = ["--env", "Pendulum-v1", "--total-steps", "2000", "--eval-freq", "1000", "--eval-episodes", "5",
         "--no-progress-bar", "--set", "algo_kwargs.learning_starts=200"]


def only_run(logdir, prefix):
    """The one run directory whose name starts with ``prefix`` (names carry every non-default setting)."""
    (run_dir,) = (logdir / "Pendulum-v1").glob(prefix + "*")
    return run_dir


def evaluations(run_dir):
    data = np.load(run_dir / "evaluations.npz")
    return data["results"].mean(axis=1)


@pytest.mark.slow
def test_sparse_tqc_learns_pendulum_in_2k_steps_from_the_cli(tmp_path):
    # RL Zoo's earlier tuned Pendulum TQC (gSDE, log_std_init -2, train_freq 64, [64, 64]) with 128 gradient
    # steps per 64 env steps; at the packaged settings (one gradient step per env step) 2k steps are not enough.
    # Batch 64: TQC's quantile loss grows with the batch and dominates a gradient step of these small networks; at
    # 64 the 3.6k gradient steps cost about a third of the default 256's and end as high (about -700 and -390 with
    # seeds 0 and 1, -860 at 256)
    train.main(["--algo", "tqc", "--density", "0.2", "--logdir", str(tmp_path), *SHORT,
                "--set", "policy_kwargs.net_arch=[64, 64]", "--set", "algo_kwargs.use_sde=true",
                "--set", "policy_kwargs.log_std_init=-2", "--set", "algo_kwargs.train_freq=64",
                "--set", "algo_kwargs.gradient_steps=128", "--set", "algo_kwargs.batch_size=64"])
    run_dir = only_run(tmp_path, "tqc-rigl-d0.2-")
    returns = evaluations(run_dir)
    assert returns[-1] > -1000 and returns[-1] > returns[0] + 300, (
        f"evaluation returns {returns}: random play scores about -1200 to -1500")
    assert int(TQC.load(run_dir / "model.zip").policy.critic_controller.num_updates) > 0


@pytest.mark.slow
def test_sparse_crossq_trains_pendulum_for_2k_steps_from_the_cli(tmp_path):
    train.main(["--algo", "crossq", "--density", "0.2", "--logdir", str(tmp_path), *SHORT,
                "--set", "policy_kwargs.net_arch={pi: [64, 64], qf: [256, 256]}",
                "--set", "sparsity.update_interval=200", "--set", "algo_kwargs.batch_size=64"])  # a third less time
    run_dir = only_run(tmp_path, "crossq-rigl-d0.2-")
    assert np.isfinite(evaluations(run_dir)).all()
    model = CrossQ.load(run_dir / "model.zip")
    assert int(model.policy.critic_controller.num_updates) > 0 and int(model.policy.actor_controller.num_updates) > 0


@pytest.mark.parametrize("algo", ["tqc", "crossq"])
def test_param_matched_run_trains_a_narrower_dense_network(algo, tmp_path):
    train.main(["--algo", algo, "--param-matched", "0.1", "--logdir", str(tmp_path), *SHORT[:2],
                "--total-steps", "300", "--eval-freq", "300", "--eval-episodes", "1", "--no-progress-bar",
                "--set", "algo_kwargs.learning_starts=100"])
    cls = TQC if algo == "tqc" else CrossQ
    model = cls.load(only_run(tmp_path, f"{algo}-matched-d0.1-") / "model.zip")
    arch = model.policy.net_arch
    assert arch["pi"][0] < 256 and arch["qf"][0] < (256 if algo == "tqc" else 256)
    assert all(bool(layer.mask.all()) for layer in model.policy.critic_controller.layers.values())


def test_config_defaults_follow_rl_zoo_and_state_their_source():
    tqc = build_config("tqc", "HalfCheetah-v4", None, {}, {})
    assert tqc["algo_kwargs"]["learning_starts"] == 10000 and tqc["algo_kwargs"]["top_quantiles_to_drop_per_net"] == 2
    assert build_config("tqc", "Hopper-v4", None, {}, {})["algo_kwargs"]["top_quantiles_to_drop_per_net"] == 5
    crossq = build_config("crossq", "HalfCheetah-v4", None, {}, {})
    assert crossq["algo_kwargs"]["policy_delay"] == 3 and crossq["algo_kwargs"]["learning_rate"] == 1e-3
    assert crossq["policy_kwargs"]["net_arch"] == {"pi": [256, 256], "qf": [1024, 1024]}
    with pytest.raises(ConfigError, match="top_quantiles_to_drop_per_net must be an integer >= 0"):
        make_config({"algo": "tqc", "env": "Pendulum-v1", "set": {"algo_kwargs.top_quantiles_to_drop_per_net": -1}})
    with pytest.raises(ConfigError, match="unknown config key algo_kwargs.policy_delay"):
        make_config({"algo": "tqc", "env": "Pendulum-v1", "set": {"algo_kwargs.policy_delay": 2}})
