"""RLx2's replay buffer: n-step targets with SAC's entropy bonuses, delay, policy-aware capacity."""

import math

import numpy as np
import pytest
import torch
from run_dirs import only_run
from stable_baselines3 import SAC, TD3

from sparse_rl import train
from sparse_rl.buffer_io import load_buffer
from sparse_rl.sb3.rlx2 import RLx2ReplayBuffer
from tests.test_train_cli import FAST, scalars

GAMMA = 0.9


def model_and_buffer(algo=SAC, **buffer_kwargs):
    model = algo("MlpPolicy", "Pendulum-v1", learning_starts=0, seed=0, policy_kwargs=dict(net_arch=[16, 16]))
    buffer = RLx2ReplayBuffer(50, model.observation_space, model.action_space, n_steps=3, gamma=GAMMA,
                              **buffer_kwargs)
    buffer.attach(model)
    return model, buffer


def fill(buffer, rewards, dones, seed=0):
    rng = np.random.default_rng(seed)
    observations = rng.normal(size=(len(rewards) + 1, 1, 3)).astype(np.float32)
    for t, (reward, done) in enumerate(zip(rewards, dones)):
        buffer.add(observations[t], observations[t + 1], rng.uniform(-1, 1, (1, 1)), np.array([reward]),
                   np.array([done]), [{}])
    return observations


def test_td3_n_step_target_stops_at_a_terminal_inside_the_window():
    model, buffer = model_and_buffer(TD3)
    observations = fill(buffer, [1.0, 2.0, 4.0, 8.0, 16.0], [False, True, False, False, False])
    sample = buffer._get_samples(np.array([0, 2]))
    assert sample.rewards[:, 0].tolist() == pytest.approx([1 + GAMMA * 2, 4 + GAMMA * 8 + GAMMA ** 2 * 16])
    assert sample.discounts[:, 0].tolist() == pytest.approx([GAMMA ** 2, GAMMA ** 3])
    assert sample.dones[:, 0].tolist() == [1.0, 0.0]
    assert np.allclose(sample.next_observations[0].numpy(), observations[2, 0])


def test_sac_n_step_target_adds_intermediate_entropy_bonuses_before_the_terminal():
    model, buffer = model_and_buffer(SAC)
    observations = fill(buffer, [1.0, 2.0, 4.0, 8.0, 16.0], [False, True, False, False, False])
    torch.manual_seed(7)
    sample = buffer._get_samples(np.array([0, 2]))
    torch.manual_seed(7)
    states = torch.as_tensor(observations[[1, 2, 3, 4], 0])  # s_{t+1}, s_{t+2} for t = 0 and t = 2
    _, log_prob = model.actor.action_log_prob(states)
    alpha = math.exp(model.log_ent_coef.item())
    bonus = -alpha * log_prob.detach().numpy()
    expected_t0 = 1 + GAMMA * 2 + GAMMA * bonus[0]  # the terminal at t+1 ends the window: one bonus
    expected_t2 = 4 + GAMMA * 8 + GAMMA ** 2 * 16 + GAMMA * bonus[2] + GAMMA ** 2 * bonus[3]
    assert sample.rewards[:, 0].tolist() == pytest.approx([expected_t0, expected_t2], rel=1e-5)


def test_one_step_targets_during_the_delay_then_n_step():
    _, buffer = model_and_buffer(TD3, n_step_delay=2)
    fill(buffer, [1.0, 2.0, 4.0, 8.0], [False] * 4)
    first = [buffer._get_samples(np.array([0])).rewards.item() for _ in range(3)]
    assert first == pytest.approx([1.0, 1.0, 1 + GAMMA * 2 + GAMMA ** 2 * 4])


def test_buffer_shrinks_when_the_policy_changes_and_not_when_it_is_unchanged():
    model, buffer = model_and_buffer(SAC, check_interval=10 ** 6, check_size=16, distance_threshold=1e-3,
                                     min_size=10, shrink_fraction=0.1)
    fill(buffer, [0.0] * 40, [False] * 40)
    assert buffer.size() == 40
    assert not buffer.adjust_capacity() and buffer.last_distance == pytest.approx(0.0, abs=1e-10)
    assert buffer.size() == 40
    with torch.no_grad():
        for parameter in model.actor.parameters():
            parameter.add_(torch.randn_like(parameter))
    assert buffer.adjust_capacity() and buffer.last_distance > 1e-3
    assert buffer.size() == 36
    assert buffer.oldest_indices(1)[0] == 4


def test_sampling_stays_inside_the_kept_window():
    model, buffer = model_and_buffer(TD3, check_interval=10 ** 6, distance_threshold=-1.0, min_size=0,
                                     shrink_fraction=0.5)
    observations = fill(buffer, [0.0] * 20, [False] * 20)
    buffer.adjust_capacity()
    kept = {tuple(np.round(o, 5)) for o in observations[10:20, 0]}
    sampled = buffer.sample(200).observations.numpy()
    assert all(tuple(np.round(o, 5)) in kept for o in sampled)


def test_buffer_without_its_model_is_a_clear_error():
    model = SAC("MlpPolicy", "Pendulum-v1")
    buffer = RLx2ReplayBuffer(10, model.observation_space, model.action_space)
    with pytest.raises(RuntimeError, match=r"model.replay_buffer.attach\(model\)"):
        buffer.add(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 1)), np.zeros(1), np.zeros(1), [{}])


def test_rlx2_trains_through_the_cli_with_exact_counts_and_logs_the_buffer(tmp_path):
    train.main(["--env", "Pendulum-v1", "--method", "rlx2", "--density", "0.2", "--logdir", str(tmp_path), *FAST,
                "--set", "sparsity.check_interval=200", "--set", "sparsity.min_size=100",
                "--set", "sparsity.n_step_delay=100"])
    run_dir = only_run(tmp_path / "Pendulum-v1", "sac-rlx2+check_interval200+min_size100+n_step_delay100-d0.2-s0")
    model = SAC.load(run_dir / "model.zip")
    load_buffer(model, run_dir / "checkpoint" / "replay_buffer.pkl")
    assert isinstance(model.replay_buffer, RLx2ReplayBuffer) and model.replay_buffer.n_steps == 3
    summary = __import__("json").loads((run_dir / "summary.json").read_text())
    assert summary["params"] == pytest.approx(0.2 * summary["dense_params"], abs=2)
    for layer in model.policy.critic_controller.layers.values():
        assert (layer.weight[~layer.mask] == 0).all()
    assert int(model.policy.critic_controller.num_updates) > 0
    assert scalars(run_dir, "rlx2/policy_distance") and scalars(run_dir, "rlx2/buffer_size")


def test_rlx2_in_a_plain_sb3_script_builds_its_buffer_from_the_method_settings_and_trains_with_it():
    from sparse_rl import SparseSACPolicy
    from sparse_rl.sb3.rlx2 import rlx2_replay_buffer
    from sparse_rl.sparsity import SparsityConfig

    sparsity = SparsityConfig.from_kwargs(method="rlx2", density=0.2, update_interval=50, check_interval=100,
                                          n_step_delay=0.5)
    buffer = rlx2_replay_buffer(sparsity, gamma=0.99, total_steps=200)
    assert buffer["replay_buffer_class"] is RLx2ReplayBuffer and buffer["replay_buffer_kwargs"]["n_step_delay"] == 100
    model = SAC(SparseSACPolicy, "Pendulum-v1", learning_starts=50, seed=0,
                policy_kwargs=dict(sparsity=sparsity, net_arch=[32, 32]), **buffer)
    model.replay_buffer.attach(model)  # no callback needed
    model.learn(200)
    assert model.replay_buffer.n_steps == 3 and model.replay_buffer.last_distance is not None
    assert model.replay_buffer.check_interval == 100 and int(model.policy.critic_controller.num_updates) > 0
    assert rlx2_replay_buffer(SparsityConfig.from_kwargs(method="rigl", density=0.2), 0.99, 200) == {}


def every_key(mapping, prefix=""):
    for key, value in mapping.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from every_key(value, f"{prefix}{key}.")


def test_a_rigl_run_config_holds_no_setting_of_another_method(tmp_path):
    import yaml

    from sparse_rl.methods import KINDS

    train.main(["--env", "Pendulum-v1", "--density", "0.5", "--logdir", str(tmp_path), *FAST])
    config = yaml.safe_load((only_run(tmp_path / "Pendulum-v1", "sac-rigl-d0.5-s0") / "config.yaml").read_text())
    others = {key for kind in KINDS.values() if kind.name != "prune-grow" for key in kind.setting_keys}
    leaves = {key.rsplit(".", 1)[-1] for key in every_key(config)}
    assert "rlx2" not in config and not leaves & others, leaves & others


def test_configs_of_0_1_0_keep_their_rlx2_section_meaning():
    from sparse_rl.run_config import LEGACY_RLX2_DEFAULTS, ConfigError, upgrade_config

    old = {"sparsity": {"method": "rlx2", "density": 0.1}, "rlx2": {**LEGACY_RLX2_DEFAULTS, "n_steps": 5}}
    assert upgrade_config(old) == {"sparsity": {**LEGACY_RLX2_DEFAULTS, "n_steps": 5, "method": "rlx2",
                                                "density": 0.1}}
    assert upgrade_config({"sparsity": {"method": "rigl"}, "rlx2": dict(LEGACY_RLX2_DEFAULTS)}) == \
        {"sparsity": {"method": "rigl"}}
    with pytest.raises(ConfigError, match="apply to method rlx2 only, not to 'rigl'"):
        upgrade_config({"sparsity": {"method": "rigl"}, "rlx2": {**LEGACY_RLX2_DEFAULTS, "n_steps": 5}})
