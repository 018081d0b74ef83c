"""Training reduction policies with PPO: Stable-Baselines3 on one machine (:mod:`rlprune.train.backends.sb3`)
or RLlib on Ray (:mod:`rlprune.train.backends.rllib`), both around :mod:`rlprune.train.common`."""

from rlprune.train.recipe import PPOConfig, Recipe, RunConfig

__all__ = ["PPOConfig", "Recipe", "RunConfig"]
