"""A span head's PPO stage with its prompts played on Ray workers.

:class:`SpanRayBackend` is :class:`~rlprune.train.kinds.span_ppo.SpanPPOBackend` with one step
replaced: :meth:`~SpanRayBackend.play_batch` sends each batch's
:class:`~rlprune.train.kinds.span_ppo.PlayRequest` list to :class:`SpanPlayer` actors, one model
each, and records what they played in request order. Each request carries the seed of its samples,
so where a prompt is played does not change what is drawn: a Ray run plays the batches a local run
plays (up to the rounding of another process's kernels). The learner keeps everything else: the
prompt stream, the PPO update, validation, checkpoints and export.

Each worker loads the run's model itself from the run's preset (no model travels through Ray) and
reads the reference outputs the learner computed (:meth:`~rlprune.train.common.Run.warm`) from the
same folder; the head and the start head (small networks) travel with each batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
import torch
from ray.exceptions import GetTimeoutError

from rlprune.envs import EnvConfig, TokenReductionEnv, TokenReductionVectorEnv
from rlprune.errors import RLPruneError
from rlprune.models import fingerprint_id, load_model
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.train.backends.rllib import init_ray
from rlprune.train.common import Run, Session
from rlprune.train.kinds.span_ppo import Played, PlayRequest, SpanPPOBackend, play

RESTARTS = 3
"""How often a worker that dies is restarted (its requests are played again: their seeds make the
replay the same)."""


class SpanPlayer:
    """One Ray worker: the run's model and training split, playing requests with the head it is sent."""

    def __init__(self, env_config: EnvConfig, cache_dir: str, threads: int) -> None:
        torch.set_num_threads(threads)
        model, tokenizer = load_model(env_config.model, device=env_config.device, dtype=env_config.dtype)
        self.env = TokenReductionEnv(env_config, split="train", cache_dir=cache_dir, model=model, tokenizer=tokenizer)
        self.rows: TokenReductionVectorEnv | None = None  # a group's plays as one batch, made at the first

    def fingerprint(self) -> str:
        """The exact weights this worker plays on (the learner checks they are its own)."""
        return fingerprint_id(self.env.reducer.model)

    def play(
        self, head: SpanHeadPolicy, start: SpanHeadPolicy, requests: list[PlayRequest], group: int, temperature: float
    ) -> list[Played]:
        """Play each request ``group`` times with ``head``, as :func:`~rlprune.train.kinds.span_ppo.play` does."""
        if self.rows is None or self.rows.num_envs != group:
            self.rows = TokenReductionVectorEnv(self.env, group)
        return [
            play(self.rows, head, r.task_index, r.budget, group, seed=r.seed, start=start, temperature=temperature)
            for r in requests
        ]


def shares(requests: list[PlayRequest], workers: int) -> list[list[PlayRequest]]:
    """``requests`` cut into at most ``workers`` consecutive runs of near-equal length (none empty)."""
    size, extra = divmod(len(requests), workers)
    cuts, begin = [], 0
    for worker in range(workers):
        end = begin + size + (worker < extra)
        if end > begin:
            cuts.append(requests[begin:end])
        begin = end
    return cuts


class SpanRayBackend(SpanPPOBackend):
    """:class:`SpanPPOBackend` playing each batch on ``workers`` Ray actors (capped at the prompts per
    update); Ray is joined at ``address`` (default the recipe's ``[ray] address``) or started here."""

    name = "ray"

    def __init__(self, run: Run, head: SpanHeadPolicy, workers: int = 2, address: str | None = None) -> None:
        super().__init__(run, head)
        address = address if address is not None else (run.recipe.ray.address or None)
        self.workers = max(1, min(workers, self.config.prompts))
        self.timeout = run.recipe.ray.sample_timeout_s
        self.started_ray, cpus = init_ray(address, self.workers)
        try:
            self.actors = self._start_players(run, cpus)
        except BaseException:
            if self.started_ray:
                ray.shutdown()
            raise

    def _start_players(self, run: Run, cpus: float) -> list[Any]:
        """The workers, each with the learner's model (checked by its weights) and reference folder."""
        config = run.env_config
        gpus = 1 / self.workers if str(config.device).startswith("cuda") else 0  # the workers share the device
        actor = ray.remote(SpanPlayer).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=RESTARTS, max_task_retries=RESTARTS
        )
        folder = str(Path(self.env.references.folder).resolve())
        actors = [actor.remote(config, folder, run.recipe.run.torch_threads) for _ in range(self.workers)]
        theirs, ours = self._get([a.fingerprint.remote() for a in actors]), fingerprint_id(self.env.reducer.model)
        if any(found != ours for found in theirs):
            for a in actors:
                ray.kill(a)
            raise RLPruneError(
                f"the Ray workers load {config.model} (the [span_ppo] env preset's model), which is not the model "
                "the span head is tuned on; make the preset's model the [span_head] model"
            )
        return actors

    def _get(self, futures: list[Any]) -> list[Any]:
        try:
            return ray.get(futures, timeout=self.timeout)
        except GetTimeoutError:
            raise RLPruneError(
                f"a Ray worker took more than {self.timeout:g} s for its share of a batch "
                "(recipe [ray] sample_timeout_s)"
            ) from None

    def play_batch(self, requests: list[PlayRequest], session: Session) -> list[Played]:
        """Play the batch on the workers, each a consecutive share, then record it in request order."""
        head, start = ray.put(self.head), ray.put(self.start)
        group = self.config.group
        parts = shares(requests, len(self.actors))
        temperature = self.config.temperature
        futures = [
            a.play.remote(head, start, part, group, temperature) for a, part in zip(self.actors, parts, strict=False)
        ]
        batch = [played for part in self._get(futures) for played in part]
        for played in batch:
            self.record(played, session)
        return batch

    def close(self) -> dict[str, Any]:
        """Stop the workers (and Ray, if this backend started it); the summary also names the workers."""
        try:
            for a in self.actors:
                ray.kill(a)
        finally:
            if self.started_ray:
                ray.shutdown()
        return super().close() | {"ray_workers": self.workers}
