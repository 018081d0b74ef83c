"""PPO on the real reward for a span head, after its supervised stage.

Supervision teaches a :class:`~rlprune.policies.span_head.SpanHeadPolicy` where the answer is; the
reward says what the reduced model then does with what was kept (:mod:`rlprune.envs.rewards`: KL
to the full model's answer, top-1 agreement, gold-answer accuracy, the hallucination penalty).
One episode is one prompt at one budget in :class:`~rlprune.envs.TokenReductionEnv` (the reduced
forward inference runs), deciding at the head's layer only: the head scores the carried tokens
and a Plackett-Luce sample (:mod:`rlprune.policies.plackett_luce`) chooses which go, as many as
the budget requires. The FLOPs terms are the same for every sample at a budget, so the reward
ranks choices of tokens only.

Each prompt is played ``group`` times at the same budget and a sample's advantage is its reward
minus the group's mean, over the batch's spread: a one-step episode needs no value network. The
clipped PPO objective is then optimised for a few epochs over the batch, CleanRL-style.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.errors import InvalidArgumentError
from rlprune.policies.compat import check_compatible
from rlprune.policies.kinds import expect_kind
from rlprune.policies.plackett_luce import draws, perturb
from rlprune.policies.span_head import SpanHeadPolicy
from rlprune.progress import Progress
from rlprune.reduction import removal_count
from rlprune.train.common.validation import mean_defined
from rlprune.train.recipe import SpanPPOConfig


@dataclass
class Played:
    """One prompt played ``group`` times: what the head read, what was drawn and how it went."""

    normed: Tensor  # (n, hidden): carried prompt tokens after the decision layer's input norm
    window: int  # final tokens that are the question
    valid: Tensor  # (n,) bool: tokens that may go
    count: int  # how many went
    keys: Tensor  # (group, n): perturbed scores; the lowest ``count`` valid ones went, in that order
    log_prob: Tensor  # (group, n): each draw's log-probability under the head that drew them, in draw order
    rewards: Tensor  # (group,)


def span_env(
    preset: str | EnvConfig, head: SpanHeadPolicy, split: str, model, tokenizer, **kwargs
) -> TokenReductionEnv:
    """The preset's environment, deciding at the head's layer only."""
    config = preset if isinstance(preset, EnvConfig) else EnvConfig.load(preset)
    episode = dataclasses.replace(config.episode, decision_layers=(head.decision_layer,))
    return TokenReductionEnv(
        dataclasses.replace(config, episode=episode), split=split, model=model, tokenizer=tokenizer, **kwargs
    )


def _scores(head: SpanHeadPolicy, normed: Tensor, window: int) -> Tensor:
    normed = normed.float()
    return head.scores(normed, normed[-window:])


@torch.no_grad()
def play(env: TokenReductionEnv, head: SpanHeadPolicy, task_index: int, budget: float, group: int) -> Played:
    """Play one prompt ``group`` times at ``budget``, each time removing a fresh Plackett-Luce sample."""
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise InvalidArgumentError(f"group must be a whole number of plays >= 1, got {group!r}")
    options = {"task_index": task_index, "budget": budget}
    keys, rewards = [], []
    for draw in range(group):
        env.reset(options=options)
        if draw == 0:  # the prompt, its budget and so the head's scores are the same every time
            features = env.features()
            normed, window = head.inputs(features)
            valid = features.state.removable()[: normed.shape[0]]
            scores = _scores(head, normed, window)
            action = features.action_for_share(head.op, "learned", 1.0)
        sample = perturb(scores)
        _, reward, _, _, _ = env.step(dataclasses.replace(action, token_scores=sample))
        keys.append(sample)
        rewards.append(reward)
    count = removal_count(action, int(valid.sum()))  # the reducer's own count
    stacked = torch.stack(keys)
    log_prob, _, _ = draws(scores.expand_as(stacked), stacked, valid.expand_as(stacked), torch.full((group,), count))
    return Played(normed, window, valid, count, stacked, log_prob, torch.tensor(rewards))


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
    """
    advantage = advantages(batch)
    clipped, approx_kl, steps = 0.0, 0.0, 0
    head.train()
    for _ in range(config.epochs):
        for played, adv in zip(batch, advantage, strict=True):
            if played.count == 0:  # the budget was met before the head's layer: nothing was drawn
                continue
            scores = _scores(head, played.normed, played.window)
            group = played.keys.shape[0]
            log_prob, _, drawn = draws(
                scores.expand(group, -1),
                played.keys,
                played.valid.expand(group, -1),
                torch.full((group,), played.count),
            )
            ratio = (log_prob - played.log_prob).exp()
            low, high = 1 - config.clip_range, 1 + config.clip_range
            objective = torch.minimum(ratio * adv[:, None], ratio.clamp(low, high) * adv[:, None])
            loss = -objective[drawn].mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                clipped += float(((ratio - 1).abs() > config.clip_range)[drawn].float().mean())
                approx_kl += float((played.log_prob - log_prob)[drawn].mean())
            steps += 1
    head.eval()
    return {"clip_fraction": clipped / max(steps, 1), "approx_kl": approx_kl / max(steps, 1)}


@torch.no_grad()
def validate(env: TokenReductionEnv, head: SpanHeadPolicy, config: SpanPPOConfig) -> dict[str, Any]:
    """Deterministic episodes (the head's own top-k, as inference runs it) on validation prompts at each
    budget: the mean reward and the measures the environment reports."""
    rows = []
    for budget in config.validation_budgets:
        for index in range(min(config.validation_tasks, len(env.tasks))):
            env.reset(options={"task_index": index, "budget": budget})
            _, reward, _, _, info = env.step(head.act(env.features(), budget))
            rows.append({"reward": reward} | {k: info[k] for k in ("kl", "agreement", "answer_accuracy")})
    return {key: mean_defined([row[key] for row in rows]) for key in rows[0]}


def tune_span_head(
    head: SpanHeadPolicy, model, tokenizer, config: SpanPPOConfig, show_progress: bool = True
) -> dict[str, Any]:
    """Tune ``head`` in place by PPO on the real reward; returns the history and validation before and after."""
    expect_kind(head, "span", "PPO here tunes a span head's scores")
    if head.later is not None:
        raise InvalidArgumentError(
            f"PPO here tunes a span head that cuts at one layer; this one hands over to layer "
            f"{head.later.decision_layer}: tune a head trained without later_layer"
        )
    check_compatible(head, model)  # before the environments meet it
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    train_env = span_env(config.env, head, "train", model, tokenizer)
    val_env = span_env(config.env, head, "validation", model, tokenizer)
    low, high = train_env.config.episode.budget[0], train_env.config.episode.budget[-1]
    optimizer = torch.optim.Adam(head.parameters(), lr=config.learning_rate)
    before = validate(val_env, head, config)
    history = []
    with Progress(transient=True, disable=not show_progress) as progress:
        bar = progress.add_task("PPO on the real reward", total=config.updates * config.prompts)
        for _ in range(config.updates):
            batch = []
            for _ in range(config.prompts):
                task, budget = rng.randrange(len(train_env.tasks)), rng.uniform(low, high)
                batch.append(play(train_env, head, task, budget, config.group))
                progress.advance(bar)
            stats = ppo_update(head, optimizer, batch, config)
            history.append({"reward": float(torch.cat([p.rewards for p in batch]).mean())} | stats)
    after = validate(val_env, head, config)
    return {"config": _jsonable(config), "history": history, "validation_before": before, "validation_after": after}


def _jsonable(config: SpanPPOConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
