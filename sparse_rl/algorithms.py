"""The one table of the off-policy algorithms this package makes sparse: SB3's SAC and TD3, sb3-contrib's
TQC and CrossQ, with what the rest of the package needs to know of each.

Classes are named, not imported, so the core (FLOP accounting, run names) reads the table without
Stable-Baselines3; :mod:`sparse_rl.sb3.algorithms` resolves the names to classes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Algorithm:
    """One algorithm.

    :param name: its ``--algo`` name.
    :param algo_class: ``module:Class`` of the algorithm.
    :param policy_base: ``module:Class`` of its policy, which the sparse policy subclasses.
    :param sparse_policy: the name of its sparse policy in :mod:`sparse_rl.sb3`.
    :param max_entropy: its targets carry SAC's entropy term (a squashed-Gaussian actor).
    :param actor_q_first_head: the actor's loss reads only the first Q-head (TD3), not all of them.
    :param joint_critic_batch: one critic pass over current and next states together, no target critics (CrossQ).
    :param action_noise: exploration adds Gaussian action noise (``action_noise_std``).
    """

    name: str
    algo_class: str
    policy_base: str
    sparse_policy: str
    max_entropy: bool = True
    actor_q_first_head: bool = False
    joint_critic_batch: bool = False
    action_noise: bool = False


ALGORITHMS: dict[str, Algorithm] = {algorithm.name: algorithm for algorithm in (
    Algorithm("sac", "stable_baselines3:SAC", "stable_baselines3.sac.policies:SACPolicy", "SparseSACPolicy"),
    Algorithm("td3", "stable_baselines3:TD3", "stable_baselines3.td3.policies:TD3Policy", "SparseTD3Policy",
              max_entropy=False, actor_q_first_head=True, action_noise=True),
    Algorithm("tqc", "sb3_contrib:TQC", "sb3_contrib.tqc.policies:TQCPolicy", "SparseTQCPolicy"),
    Algorithm("crossq", "sb3_contrib:CrossQ", "sb3_contrib.crossq.policies:CrossQPolicy", "SparseCrossQPolicy",
              joint_critic_batch=True),
)}
ALGO_NAMES = tuple(ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``; ``ValueError`` naming the allowed ones otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo {name!r}; allowed: {', '.join(ALGO_NAMES)}")
    return ALGORITHMS[name]
