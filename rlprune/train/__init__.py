"""Training reduction policies: PPO on one machine (Stable-Baselines3)."""

from rlprune.train.recipe import PPOConfig, Recipe, RunConfig

__all__ = ["PPOConfig", "Recipe", "RunConfig"]
