"""PPO on the real reward for a span head, after its supervised stage.

Supervision teaches a :class:`~rlprune.policies.span_head.SpanHeadPolicy` where the answer is; the
reward says what the reduced model then does with what was kept (:mod:`rlprune.envs.rewards`: KL
to the full model's answer, top-1 agreement, gold-answer accuracy, the hallucination penalty; or in
an environment whose episodes decode, whether the reduced model's own greedy answer is right and
how sure it is of it).
One episode is one prompt at one budget in :class:`~rlprune.envs.TokenReductionEnv` (the reduced
forward inference runs), cutting once, where the exported head cuts: at the head's layer, or at its
later head's when the budget hands the cut over (:meth:`SpanHeadPolicy.hands_over`). The head that
cuts scores the carried tokens and a Plackett-Luce sample (:mod:`rlprune.policies.plackett_luce`)
chooses which go, as many as the budget requires. A head that cuts by sentences (or chunks) is
sampled over its units, a unit scored by its best token, so the stage trains the very choices the
exported head makes: whole sentences go, weakest first, the last one cut into by its tokens'
scores. The FLOPs terms are the same for every sample at a budget, so the reward ranks choices of
tokens only.

Each prompt is played ``group`` times at the same budget, the plays as the rows of one batch
(:class:`~rlprune.envs.TokenReductionVectorEnv`: they share each reduced forward and decoding step,
and each row is paid what a single environment pays), and a sample's advantage is its reward
minus the group's mean, over the batch's spread: a one-step episode needs no value network. The
clipped PPO objective is then optimised for a few epochs over the batch, CleanRL-style, with a KL
penalty to the head the stage started from (``kl_start``; the k3 estimator on the drawn removals, 0
while the head is its start), so the reward refines the supervised head rather than replacing it.

Every play draws its sample from a generator seeded by (seed, update, prompt), so which tasks,
budgets and samples a run plays does not depend on where it plays them.

:class:`SpanPPOBackend` is this PPO as a :class:`~rlprune.train.common.Backend`, so the stage runs
through the shared loop (:func:`rlprune.train.common.train_run`): its run folder, checkpoints and
resume, validation (:class:`~rlprune.train.common.Evaluator` on the head's layer), ``best/`` and export;
the head it started from is kept as ``RUN/start``, a policy to compare with.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlprune.engine.features import Features
from rlprune.envs import TokenReductionEnv, TokenReductionVectorEnv
from rlprune.errors import InvalidArgumentError
from rlprune.policies.checkpoint import load_policy, save_policy
from rlprune.policies.compat import check_compatible
from rlprune.policies.kinds import expect_kind
from rlprune.policies.plackett_luce import draws, perturb
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.reduction import LayerAction, removal_count, unit_ranking
from rlprune.train.common import EpisodeWindow, Run, Session, start_run, train_run
from rlprune.train.common.folder import FINGERPRINT
from rlprune.train.recipe import Recipe, SpanPPOConfig


@dataclass
class Played:
    """One prompt played ``group`` times: what the head read, what was drawn and how it went.

    What is drawn are units (tokens for ``unit="token"``): ``units`` maps each carried token to one."""

    normed: Tensor  # (n, hidden): carried prompt tokens after the decision layer's input norm
    window: int  # final tokens that are the question
    valid: Tensor  # (u,) bool: units that may go (those holding a removable token)
    count: Tensor  # (group,) how many units each play removed (the last one perhaps in part)
    keys: Tensor  # (group, u): perturbed unit scores; the lowest ``count`` valid ones went, in that order
    log_prob: Tensor  # (group, u): each draw's log-probability under the head that drew them, in draw order
    start_log_prob: Tensor  # (group, u): the same under the head the stage started from
    rewards: Tensor  # (group,)
    infos: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # each play's final info
    units: Tensor | None = None  # (n,) each token's unit id; None: every token is its own unit
    removable: Tensor | None = None  # (n,) bool: tokens that may go (with ``units``)
    layer: int | None = None  # the layer the cut was drawn at (its head scored it); None: the head's own


def cutter(head: SpanHeadPolicy, played: Played) -> SpanHeadPolicy:
    """The part of ``head`` that drew ``played``'s cut: the head itself, or its later head."""
    return head if played.layer is None else head.head_at(played.layer)


def _scores(
    head: SpanHeadPolicy, normed: Tensor, window: int, units: Tensor | None = None, removable: Tensor | None = None
) -> Tensor:
    """The head's keep scores of the tokens, or with ``units`` of each unit (:func:`_by_unit`)."""
    normed = normed.float()
    return _by_unit(head.scores(normed, normed[-window:]), units, removable)


def _by_unit(scores: Tensor, units: Tensor | None, removable: Tensor | None) -> Tensor:
    """Token ``scores`` as one score per unit, its best removable token's; the tokens' own without ``units``."""
    if units is None:
        return scores
    size = int(units.max()) + 1
    return scores.new_zeros(size).scatter_reduce(0, units[removable], scores[removable], "amax", include_self=False)


def _units_drawn(keys: Tensor, valid: Tensor, sizes: Tensor, count: int) -> Tensor:
    """How many units each row of ``keys`` removes, lowest first, to remove ``count`` tokens; ``(rows,)``."""
    if count == 0:
        return torch.zeros(len(keys), dtype=torch.long)
    order = keys.masked_fill(~valid, float("inf")).argsort(dim=-1, stable=True)
    reached = sizes[order].cumsum(-1) >= count
    return reached.float().argmax(-1) + 1  # the first unit whose removal reaches the count, and those before it


@dataclass(frozen=True)
class CutScores:
    """What the head that cuts reads and scores at its layer, and the Plackett-Luce draws over it."""

    normed: Tensor  # (n, hidden): carried prompt tokens after the layer's input norm
    window: int  # final tokens that are the question
    removable: Tensor  # (n,) bool
    units: Tensor | None  # (n,) each token's unit id; None: every token is its own unit
    token_scores: Tensor  # (n,) the head's keep scores
    scores: Tensor  # (u,) what a sample perturbs: each unit's best removable token's score, over the temperature

    @classmethod
    def read(cls, cuts: SpanHeadPolicy, features: Features, temperature: float = 1.0) -> CutScores:
        normed, window = cuts.inputs(features)
        removable = features.state.removable()[: normed.shape[0]]
        units = cuts.units(features, normed.shape[0])
        token_scores = _scores(cuts, normed, window)
        return cls(
            normed, window, removable, units, token_scores, _by_unit(token_scores, units, removable) / temperature
        )

    def draw(self, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One sample: its perturbed unit scores (the lowest go first), and the token scores a cut goes by."""
        sample = perturb(self.scores, generator)
        return sample, sample if self.units is None else unit_ranking(self.token_scores, self.units, sample)


START = "start"
"""The run folder's copy of the head the stage started from (``RUN/start``)."""


def _advance(rows: TokenReductionVectorEnv, layer: int) -> np.ndarray:
    """Step every row through its decision layers before ``layer`` without cutting; those steps' rewards."""
    reward = np.zeros(rows.num_envs)
    while rows.envs[0].features().layer < layer:
        reward += rows.step_rows([LayerAction()] * rows.num_envs)[1]
    return reward


def play_seed(seed: int, update: int, prompt: int) -> int:
    """The seed of one prompt's samples: the same wherever the prompt is played."""
    return (seed * 1_000_003 + update) * 1_009 + prompt


@torch.no_grad()
def play(
    env: TokenReductionEnv | TokenReductionVectorEnv,
    head: SpanHeadPolicy,
    task_index: int,
    budget: float,
    group: int,
    *,
    seed: int | None = None,
    start: SpanHeadPolicy | None = None,
    temperature: float = 1.0,
) -> Played:
    """Play one prompt ``group`` times at ``budget``, each time removing a fresh Plackett-Luce sample
    (from a generator seeded with ``seed``, the global one without) at the layer where ``head`` cuts
    this prompt; ``start`` is the head whose log-probabilities the KL penalty compares with (``head``
    itself without one). ``env`` decides at every layer of ``head`` (:attr:`SpanHeadPolicy.layers`).
    Samples are drawn from the scores over ``temperature``: the order they rank, and so the exported
    head's cut, is the same at any temperature; a higher one makes a group's keep-sets differ more.

    The group's plays run as the rows of one batch (:class:`TokenReductionVectorEnv`, ``group`` rows;
    one is made beside a single ``env``), so they share each reduced forward and the decoding steps:
    each row's reward is the one a single environment gives its play."""
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise InvalidArgumentError(f"group must be a whole number of plays >= 1, got {group!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 < temperature < math.inf:
        raise InvalidArgumentError(f"temperature must be a finite number > 0, got {temperature!r}")
    rows = env if isinstance(env, TokenReductionVectorEnv) else TokenReductionVectorEnv(env, group)
    if rows.num_envs != group:
        raise InvalidArgumentError(f"a group of {group} plays needs as many rows, not {rows.num_envs}")
    decides = rows.envs[0].config.episode.decision_layers
    if any(layer not in decides for layer in head.layers):
        raise InvalidArgumentError(f"the head cuts at layers {head.layers}; the environment decides at {decides} only")
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    rows.reset(options={"task_index": task_index, "budget": budget})  # the same prompt and budget in every row
    cuts = head.later if head.hands_over(rows.envs[0].features()) else head
    rewards = _advance(rows, cuts.decision_layer)
    features = rows.envs[0].features()  # every row holds the same tokens until the cut
    cut = CutScores.read(cuts, features, temperature)
    normed, window, removable, units, scores = cut.normed, cut.window, cut.removable, cut.units, cut.scores
    valid = (
        removable if units is None else torch.zeros_like(scores, dtype=torch.bool).index_fill(0, units[removable], True)
    )
    action = features.action_for_share(cuts.op, "learned", 1.0)
    samples = [cut.draw(generator) for _ in range(group)]
    actions = [dataclasses.replace(action, token_scores=chosen) for _, chosen in samples]
    done = False
    while not done:  # after the cut, a later head's layer: nothing is left to remove
        _, step_rewards, done, infos = rows.step_rows(actions)
        rewards += step_rewards
        actions = [LayerAction()] * group
    stacked = torch.stack([sample for sample, _ in samples])
    removed = removal_count(action, int(removable.sum()))  # the reducer's own count of tokens
    if units is None:
        counts = torch.full((group,), removed)
    else:
        sizes = torch.zeros_like(scores).index_add(0, units[removable], torch.ones(int(removable.sum())))
        counts = _units_drawn(stacked, valid.expand_as(stacked), sizes, removed)
    pool = valid.expand_as(stacked)
    log_prob, _, _ = draws(scores.expand_as(stacked), stacked, pool, counts)
    start_log_prob = log_prob
    if start is not None and start is not head:
        start_scores = _scores(start.head_at(cuts.decision_layer), normed, window, units, removable) / temperature
        start_log_prob, _, _ = draws(start_scores.expand_as(stacked), stacked, pool, counts)
    layer = None if cuts is head else cuts.decision_layer
    return Played(
        normed, window, valid, counts, stacked, log_prob, start_log_prob, torch.tensor(rewards, dtype=torch.float32),
        infos, units, removable, layer,
    )  # fmt: skip


def advantages(batch: list[Played]) -> list[Tensor]:
    """Each sample's reward minus its group's mean, divided by the spread of those differences in the batch."""
    centred = [p.rewards - p.rewards.mean() for p in batch]
    spread = torch.cat(centred).std().clamp(min=1e-6)
    return [c / spread for c in centred]


def ppo_update(
    head: SpanHeadPolicy, optimizer: torch.optim.Optimizer, batch: list[Played], config: SpanPPOConfig
) -> dict[str, float]:
    """``config.epochs`` passes of the clipped objective over ``batch``, one prompt's group a step.

    As in PPO for language models, the probability ratio is taken per draw (each token removed is
    one decision sharing its sample's advantage) and the clipped terms are averaged over draws: the
    ratio of a whole sequence of a few hundred draws would swing far from 1 at the smallest step.
    The KL to the start head is taken per draw the same way.
    """
    advantage = advantages(batch)
    clipped, approx_kl, start_total, steps = 0.0, 0.0, 0.0, 0
    head.train()
    for _ in range(config.epochs):
        for played, adv in zip(batch, advantage, strict=True):
            if not played.count.any():  # the budget was met before the head's layer: nothing was drawn
                continue
            scores = _scores(cutter(head, played), played.normed, played.window, played.units, played.removable)
            scores = scores / config.temperature  # the distribution the samples were drawn from
            group = played.keys.shape[0]
            log_prob, _, drawn = draws(
                scores.expand(group, -1), played.keys, played.valid.expand(group, -1), played.count
            )
            ratio = (log_prob - played.log_prob).exp()
            low, high = 1 - config.clip_range, 1 + config.clip_range
            objective = torch.minimum(ratio * adv[:, None], ratio.clamp(low, high) * adv[:, None])
            to_start = played.start_log_prob - log_prob
            start_kl = (to_start.exp() - 1 - to_start)[drawn].mean()  # k3: >= 0, and 0 at the start head
            loss = -objective[drawn].mean() + config.kl_start * start_kl
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                clipped += float(((ratio - 1).abs() > config.clip_range)[drawn].float().mean())
                approx_kl += float((played.log_prob - log_prob)[drawn].mean())
                start_total += float(start_kl)
            steps += 1
    head.eval()
    steps = max(steps, 1)
    return {"clip_fraction": clipped / steps, "approx_kl": approx_kl / steps, "kl_start": start_total / steps}


def stage_recipe(recipe: Recipe) -> Recipe:
    """``recipe`` as the shared loop runs its ``[span_ppo]`` stage: a timestep is one episode, an update
    one batch of ``prompts x group`` of them, validation is at ``validation_budgets`` on
    ``validation_tasks`` prompts, and the run seed is the stage's."""
    ppo = recipe.span_ppo
    if ppo is None:
        raise InvalidArgumentError("a span head's PPO stage needs a [span_ppo] table in the recipe")
    plays = ppo.prompts * ppo.group
    run = dataclasses.replace(
        recipe.run,
        timesteps=ppo.updates * plays,
        n_envs=1,
        checkpoint_every=ppo.checkpoint_every * plays,
        eval_every=ppo.eval_every * plays,
        eval_tasks=ppo.validation_tasks,
        eval_budgets=tuple(ppo.validation_budgets),
        seed=ppo.seed,
    )
    return dataclasses.replace(recipe, policy="span", run=run, ppo=dataclasses.replace(recipe.ppo, n_steps=plays))


@dataclass(frozen=True)
class PlayRequest:
    """One prompt of a batch, as the learner chose it: which task, at which budget, with which samples."""

    task_index: int
    budget: float
    seed: int


class SpanPPOBackend:
    """The :class:`~rlprune.train.common.Backend` of a span head's PPO stage: :func:`play` and
    :func:`ppo_update` in this process, on the run's model and training split. :meth:`play_batch` is
    the one step a backend that plays elsewhere replaces."""

    name = "span-ppo"

    def __init__(self, run: Run, head: SpanHeadPolicy) -> None:
        self.head, self.config = head, run.recipe.span_ppo
        self.start = copy.deepcopy(head).eval().requires_grad_(False)  # what the KL penalty holds the head to
        self.folder, self.meta = run.folder, run.meta  # run.json's fields (with the model's fingerprint, once training)
        torch.manual_seed(self.config.seed)
        self.rng = random.Random(self.config.seed)
        self.env = run.trainer_env  # deciding at the head's layer: the run's preset says so
        self.optimizer = torch.optim.Adam(head.parameters(), lr=self.config.learning_rate)
        self.timesteps = self.updates = 0
        self.history: list[dict[str, float]] = []
        self.episodes = EpisodeWindow()

    @functools.cached_property
    def rows(self) -> TokenReductionVectorEnv:
        """A group's plays as the rows of one batch, on the training environment's model and tasks."""
        return TokenReductionVectorEnv(self.env, self.config.group)

    def policy(self) -> SpanHeadPolicy:
        return self.head

    def set_policy(self, policy: SpanHeadPolicy) -> None:
        if policy is not self.head:
            self.head.load_state_dict(policy.state_dict())

    def counters(self) -> dict[str, int]:
        return {"timesteps": self.timesteps, "updates": self.updates}

    def trainer_state(self) -> dict[str, Any]:
        """Adam's state, the prompt stream and the start head, so a resumed run plays and is held to
        what the uninterrupted one would have."""
        return {"optimizer": self.optimizer.state_dict(), "rng": self.rng.getstate(), "start": self.start.state_dict()}

    def restore(self, policy: SpanHeadPolicy, state: Any, counters: dict[str, Any]) -> None:
        self.set_policy(policy)
        self.optimizer.load_state_dict(state["optimizer"])
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        if "start" in state:  # checkpoints written before the KL penalty start from themselves
            self.start.load_state_dict(state["start"])
        self.timesteps, self.updates = int(counters["timesteps"]), int(counters.get("updates", 0))

    def requests(self) -> list[PlayRequest]:
        """The next batch's prompts: tasks and budgets from the run's stream, samples seeded per prompt."""
        low, high = self.env.config.episode.budget[0], self.env.config.episode.budget[-1]
        batch = []
        for prompt in range(self.config.prompts):
            task, budget = self.rng.randrange(len(self.env.tasks)), self.rng.uniform(low, high)
            batch.append(PlayRequest(task, budget, play_seed(self.config.seed, self.updates, prompt)))
        return batch

    def play_batch(self, requests: list[PlayRequest], session: Session) -> list[Played]:
        """Play each request ``group`` times in this process, reporting episodes as they end."""
        batch = []
        for request in requests:
            played = play(
                self.rows, self.head, request.task_index, request.budget, self.config.group,
                seed=request.seed, start=self.start, temperature=self.config.temperature,
            )  # fmt: skip
            batch.append(played)
            self.record(played, session)
        return batch

    def record(self, played: Played, session: Session) -> None:
        """Count one prompt's plays and report their episodes."""
        self.timesteps += self.config.group
        for reward, info in zip(played.rewards.tolist(), played.infos, strict=True):
            self.episodes.add(reward, info)
        session.report(self.timesteps, self.episodes.means())

    def learn(self, session: Session) -> None:
        if self.timesteps == 0:  # the start is validated too, so best/ can be the start itself, and kept
            fingerprint = self.meta.get(FINGERPRINT)
            save_policy(self.start, self.folder / START, fingerprint=fingerprint, training={"stage": "start"})
            session.validate()
        while self.timesteps < session.total:
            batch = self.play_batch(self.requests(), session)
            stats = ppo_update(self.head, self.optimizer, batch, self.config)
            self.history.append({"reward": float(torch.cat([p.rewards for p in batch]).mean())} | stats)
            self.updates += 1
            session.after_update()

    def close(self) -> dict[str, Any]:
        """The backend's summary field: each update's mean reward, clip fraction and KLs."""
        return {"ppo_updates": self.history}


def stage_backend(run: Run, head: SpanHeadPolicy, workers: int) -> SpanPPOBackend:
    """The stage's backend: prompts played in this process, or on ``workers`` Ray workers when the
    recipe's backend is ``ray`` (:class:`~rlprune.train.backends.ray_span.SpanRayBackend`)."""
    if run.recipe.backend != "ray":
        return SpanPPOBackend(run, head)
    from rlprune.train.backends.ray_span import SpanRayBackend  # Ray is heavy: imported when a run uses it

    return SpanRayBackend(run, head, workers)


def tune_span_head(
    head: SpanHeadPolicy,
    model,
    tokenizer,
    config: SpanPPOConfig | Recipe,
    show_progress: bool = True,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    allow: Sequence[str] = (),
) -> dict[str, Any]:
    """Tune ``head`` in place by PPO on the real reward through the shared loop, in the run folder ``out``
    (checkpoints, validation, ``best/``, resume, with ``allow`` the fields that may differ from the run's;
    a temporary one if ``None``); ``head`` ends with the best validated weights. Returns the run's summary."""
    expect_kind(head, "span", "PPO here tunes a span head's scores")
    check_compatible(head, model)  # before the environments meet it
    if out is None:
        with tempfile.TemporaryDirectory() as folder:
            return tune_span_head(head, model, tokenizer, config, show_progress, out=Path(folder) / "run")
    workers = config.run.n_envs if isinstance(config, Recipe) else 1  # on ray: its workers (the stage runs one env)
    recipe = stage_recipe(config if isinstance(config, Recipe) else Recipe(policy="span", span_ppo=config))
    run = start_run(
        recipe.span_ppo.env,
        recipe,
        out,
        backend=recipe.backend,
        overrides={},
        resume=resume,
        cache_dir=None,
        allow=allow,
        decision_layers=head.layers,  # a head with a later one is tuned at both, each where it cuts
    )
    run.loaded = (model, tokenizer)
    summary = train_run(run, lambda run: stage_backend(run, head, workers), quiet=not show_progress)
    head.load_state_dict(load_policy(Path(out) / "policy").state_dict())
    return summary
