"""N episodes through one shared model: a Gymnasium ``VectorEnv`` that reduces them as one batch.

Every episode of a preset has the same decision layers, so the N episodes move in lock step: one
batched reduced forward per decision layer serves them all (each row keeping and choosing its
own tokens), and they finish, are scored and restart together. Each row is a
:class:`TokenReductionEnv` in all but the forward pass, so its rewards are exactly those the
single environment gives for the same task, budget and actions. One model copy serves all rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlprune.engine import ReductionBatch
from rlprune.envs.env import EnvConfig, TokenReductionEnv, check_action, check_int, finish_episodes
from rlprune.errors import RLPruneError
from rlprune.reduction import LayerAction


class TokenReductionVectorEnv(VectorEnv):
    """``num_envs`` :class:`TokenReductionEnv` episodes stepped through one batched reducer.

    Autoreset happens in the same step (``AutoresetMode.SAME_STEP``): the step that ends the
    episodes returns the next episodes' first observations, with the final ones in
    ``infos["final_obs"]`` and the final infos in ``infos["final_info"]``.

    Args:
        preset: a preset name or path, an :class:`EnvConfig`, or a :class:`TokenReductionEnv` whose
            model, tasks, fixed budget and reference cache the rows share.
        num_envs: episodes run side by side.
        split, budget, cache_dir: as for :class:`TokenReductionEnv`.
        model, tokenizer: an already loaded model (default: the preset's, loaded once).
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        preset: str | Path | EnvConfig | TokenReductionEnv = "grounded-qa",
        num_envs: int = 8,
        *,
        split: str = "train",
        model=None,
        tokenizer=None,
        budget: float | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        num_envs = check_int("num_envs", num_envs, 1)
        beside = isinstance(preset, TokenReductionEnv)  # rows beside an environment: its model, tasks and references
        if beside and (split != "train" or any(v is not None for v in (model, tokenizer, budget, cache_dir))):
            raise RLPruneError(
                "rows beside an environment take its split, model, budget and reference cache; "
                "pass only the environment and num_envs"
            )
        source = preset if beside else TokenReductionEnv(
            preset, split=split, model=model, tokenizer=tokenizer, budget=budget, cache_dir=cache_dir
        )  # fmt: skip
        self.envs = ([] if beside else [source]) + [
            TokenReductionEnv(
                source.config,
                split=source.split,
                model=source.reducer.model,
                tokenizer=source.tokenizer,
                budget=source.fixed_budget,
                tasks=source.tasks,
                cache_dir=source.references.folder,
            )
            for _ in range(num_envs - (0 if beside else 1))
        ]
        for env in self.envs:  # one reducer and one reference cache (memory included) for every row
            env.reducer, env.references = source.reducer, source.references
        self.reducer = source.reducer
        self.num_envs = num_envs
        self.single_observation_space = source.observation_space
        self.single_action_space = source.action_space
        self.observation_space = batch_space(source.observation_space, num_envs)
        self.action_space = batch_space(source.action_space, num_envs)
        self._batch: ReductionBatch | None = None

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Start ``num_envs`` episodes; ``seed`` seeds row ``i`` with ``seed + i`` (as ``SyncVectorEnv`` does)."""
        if isinstance(seed, list) and len(seed) != self.num_envs:
            raise RLPruneError(f"seed must be one integer or a list of {self.num_envs}, got a list of {len(seed)}")
        seeds = seed if isinstance(seed, list) else [None if seed is None else seed + i for i in range(self.num_envs)]
        for env, row_seed in zip(self.envs, seeds, strict=True):
            if row_seed is not None:
                gym.Env.reset(env, seed=row_seed)  # seeds the row's task and budget draws
        return self._start(options)

    def step(self, actions):
        """One decision layer for every row: ``actions`` is ``(num_envs, 3)``, one row of indices per episode."""
        actions = check_action(actions, self.action_space, "actions")
        observations, rewards, done, infos = self.step_rows(list(actions))
        if not done:
            false = np.zeros(self.num_envs, dtype=bool)
            return observations, rewards, false, false.copy(), self._merge(infos)
        final_obs, final_infos = observations, infos
        observations, infos = self._start(None)
        done = np.ones(self.num_envs, dtype=bool)
        infos["final_obs"] = final_obs
        infos["_final_obs"] = done.copy()
        infos["final_info"] = self._merge(final_infos)
        infos["_final_info"] = done.copy()
        return observations, rewards, done, np.zeros(self.num_envs, dtype=bool), infos

    def step_rows(self, actions: Sequence[np.ndarray | LayerAction]) -> tuple[np.ndarray, np.ndarray, bool, list[dict]]:
        """One decision layer for every row, one action each (indices, or a :class:`LayerAction` as a
        scripted caller gives), without Gymnasium's autoreset: the rows' observations, rewards, whether
        their episodes ended (then the final observations), and each row's own info."""
        if len(actions) != self.num_envs:
            raise RLPruneError(f"step_rows needs one action per row ({self.num_envs}), got {len(actions)}")
        decided = [env.decide(action) for env, action in zip(self.envs, actions, strict=True)]
        self._batch = self.reducer.step(self._batch, [action for action, _ in decided])
        steps = [env.after_step(action, before) for env, (action, before) in zip(self.envs, decided, strict=True)]
        rewards = np.array([reward for reward, _ in steps], dtype=np.float64)
        infos = [info for _, info in steps]
        if not self._batch.done:
            return np.stack([env.current_observation() for env in self.envs]), rewards, False, infos
        finished = finish_episodes(self.reducer, self._batch, self.envs[0].config.episode.decode_tokens)
        final_obs = []
        for i, (env, (out, answer)) in enumerate(zip(self.envs, finished, strict=True)):
            obs, rewards[i], _, _, infos[i] = env.conclude(out, rewards[i], infos[i], answer)
            final_obs.append(obs)
        return np.stack(final_obs), rewards, True, infos

    def action_masks(self) -> np.ndarray:
        """Valid choices of every row, ``(num_envs, sum(nvec))`` (for MaskablePPO)."""
        return np.stack([env.action_masks() for env in self.envs])

    def close_extras(self, **kwargs) -> None:
        self._batch = None

    def _start(self, options: dict[str, Any] | None) -> tuple[np.ndarray, dict[str, Any]]:
        """New episodes in every row, started as one batch."""
        references = [env.draw_episode(options) for env in self.envs]
        arguments = [env.start_arguments(reference) for env, reference in zip(self.envs, references, strict=True)]
        per_row = {key: [a[key] for a in arguments] for key in ("protect_last", "prompt_length", "resume_from")}
        self._batch = self.reducer.start(
            [env.episode_input(reference)[0] for env, reference in zip(self.envs, references, strict=True)],
            decision_layers=arguments[0]["decision_layers"],
            **per_row,
        )
        for env, row in zip(self.envs, self._batch, strict=True):
            env.enter(row)
        observations = np.stack([env.current_observation() for env in self.envs])
        return observations, self._merge([env.episode_info() for env in self.envs])

    def _merge(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        """Per-row info dicts as one dict of arrays with ``_key`` presence masks (Gymnasium's layout)."""
        merged: dict[str, Any] = {}
        for i, info in enumerate(infos):
            merged = self._add_info(merged, info, i)
        return merged


def make_vector_env(
    preset: str | Path | EnvConfig = "grounded-qa", num_envs: int = 8, **kwargs
) -> TokenReductionVectorEnv:
    """``num_envs`` episodes of ``preset`` through one shared model (see :class:`TokenReductionVectorEnv`)."""
    return TokenReductionVectorEnv(preset, num_envs, **kwargs)
