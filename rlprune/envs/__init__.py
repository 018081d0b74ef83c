"""The Gymnasium environment where reduction policies learn (``rlprune/TokenReduction-v0``).

Importing this package registers the environment::

    import gymnasium as gym
    import rlprune.envs

    env = gym.make("rlprune/TokenReduction-v0", preset="grounded-qa")
    envs = rlprune.envs.make_vector_env("grounded-qa", num_envs=8)   # one model, batched
"""

from gymnasium.envs.registration import register, registry

from rlprune.data.generators import generate_suite, generate_task
from rlprune.data.tasks import KINDS, SPLITS, Task, answer_correct, load_jsonl
from rlprune.envs.env import EnvConfig, EpisodeConfig, TaskConfig, TokenReductionEnv
from rlprune.envs.reference import Reference, ReferenceCache
from rlprune.envs.rewards import Quality, RewardConfig, quality
from rlprune.envs.token_env import TokenLevelEnv
from rlprune.envs.vector_env import TokenReductionVectorEnv, make_vector_env

ENV_ID = "rlprune/TokenReduction-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="rlprune.envs.env:TokenReductionEnv")

__all__ = [
    "ENV_ID",
    "KINDS",
    "SPLITS",
    "EnvConfig",
    "EpisodeConfig",
    "Quality",
    "Reference",
    "ReferenceCache",
    "RewardConfig",
    "Task",
    "TaskConfig",
    "TokenLevelEnv",
    "TokenReductionEnv",
    "TokenReductionVectorEnv",
    "answer_correct",
    "generate_suite",
    "generate_task",
    "load_jsonl",
    "make_vector_env",
    "quality",
]
