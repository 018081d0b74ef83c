"""Stable-Baselines3's ``VecEnv`` over :class:`TokenReductionVectorEnv`: PPO's rollouts for all
environments come from one model in one process, one batched reduced forward per decision layer."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from rlprune.envs.vector_env import TokenReductionVectorEnv


class BatchedVecEnv(VecEnv):
    """What SB3 (and MaskablePPO's ``action_masks``) expects, with Monitor-style episode statistics."""

    def __init__(self, env: TokenReductionVectorEnv, seed: int = 0) -> None:
        self.env, self._seed = env, seed
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(env.num_envs)
        self._lengths = np.zeros(env.num_envs, dtype=int)
        self._started = time.time()

    def reset(self) -> np.ndarray:
        observations, _ = self.env.reset(seed=self._seed)
        self._seed += self.num_envs  # the next explicit reset draws new episodes
        self._returns[:], self._lengths[:] = 0.0, 0
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        observations, rewards, terminated, truncated, infos = self.env.step(self._actions)
        dones = terminated | truncated
        self._returns += rewards
        self._lengths += 1
        rows: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final = infos["final_info"]
            for i in np.flatnonzero(dones):
                row = {k: v[i] for k, v in final.items() if not k.startswith("_") and final[f"_{k}"][i]}
                row["terminal_observation"] = infos["final_obs"][i]
                row["episode"] = {
                    "r": float(self._returns[i]),
                    "l": int(self._lengths[i]),
                    "t": time.time() - self._started,
                }
                rows[i] = row
                self._returns[i], self._lengths[i] = 0.0, 0
        return observations, rewards.astype(np.float32), dones, rows

    def action_masks(self) -> np.ndarray:
        return self.env.action_masks()

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        if method_name == "action_masks":
            return list(self.env.action_masks()[self._indices(indices)])
        return [getattr(self.env.envs[i], method_name)(*args, **kwargs) for i in self._indices(indices)]

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.env.envs[i], attr_name) for i in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        for i in self._indices(indices):
            setattr(self.env.envs[i], attr_name, value)

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def close(self) -> None:
        self.env.close()

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)
