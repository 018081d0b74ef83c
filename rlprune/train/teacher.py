"""A teacher for token-level policies: which prompt tokens the full model's answer relies on.

At training time the full model's answer is known, so per-token importance can be measured: the
attention the answer's tokens pay to each prompt token, averaged over the model's layers (computed
from each layer's own projections on the full, unreduced pass, through the one reducer). The
token head is fitted to remove tokens in the teacher's order (lowest importance first) by
maximising the Plackett-Luce likelihood of that order, the same likelihood PPO then uses; the
layer head imitates a fixed schedule. The policy itself never sees the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from rlprune.envs import Reference, TokenReductionEnv
from rlprune.features import Features
from rlprune.policies import TokenReductionPolicy, make_baseline
from rlprune.policies.plackett_luce import log_prob_and_entropy
from rlprune.reduction import KEEP, LayerAction, ScoreContext
from rlprune.reduction.scores import window_attention
from rlprune.runner import Reducer
from rlprune.train.recipe import Recipe
from rlprune.train.warm_start import _as_indices

TEACHER_LAYERS_FROM = 2  # layers before this mostly attend by position, not by content


@torch.no_grad()
def token_importance(reducer: Reducer, reference: Reference) -> torch.Tensor:
    """``(prompt_length,)``: mean attention of the full model's answer tokens to each prompt token.

    Each layer's attention is normalised over the prompt without its first token (the attention
    sink, always kept); a token's importance is then the larger of its own and its neighbours',
    so a name is kept whole.
    """
    n, ids = reference.prompt_length, reference.input_ids
    layers = tuple(range(TEACHER_LAYERS_FROM, reducer.dims.layers))
    state = reducer.start(ids, decision_layers=layers, prompt_length=ids.shape[1], protect_last=0)
    total = torch.zeros(n)
    cos, sin = state.rope
    while not state.done:
        layer = reducer.layers[state.layer]
        ctx = ScoreContext(
            layer, layer.input_layernorm(state.hidden), state.positions, None, cos, sin, ids.shape[1] - n, 1
        )
        attention = window_attention(ctx)[:n].cpu()
        attention[0] = 0.0
        total += attention / attention.sum().clamp(min=1e-12)
        state = reducer.step(state, KEEP)
    importance = total / len(layers)
    return F.max_pool1d(importance[None, None], 3, 1, 1)[0, 0]


@dataclass
class TeacherSample:
    """One decision: what the policy sees and what the teacher does there."""

    observation: np.ndarray
    mask: np.ndarray
    choice: np.ndarray
    tokens: torch.Tensor | None = None  # (p, features) when tokens were removed
    removable: torch.Tensor | None = None
    teacher: torch.Tensor | None = None  # importance of each carried prompt token
    count: int = 0


def collect(policy: TokenReductionPolicy, env: TokenReductionEnv, recipe: Recipe) -> list[TeacherSample]:
    """Play episodes where a fixed schedule picks how many tokens go and the teacher picks which."""
    settings = recipe.warm_start
    baseline = make_baseline(settings.baseline or "static:2:prune:0.5:relevance")
    spec = policy.action_spec
    importance: dict[str, torch.Tensor] = {}
    samples: list[TeacherSample] = []
    with Progress(transient=True) as progress:
        bar = progress.add_task("teacher episodes", total=settings.episodes)
        for episode in range(settings.episodes):
            env.reset(seed=episode)
            task, reference = env._task, env._reference
            if task.uid not in importance:
                importance[task.uid] = token_importance(env.reducer, reference)
            done = False
            while not done:
                state = env._state
                features = Features(env.reducer, state, env.budget)
                action = baseline.act(features, env.budget)
                index = _as_indices(action, features, spec)
                index[2] = 0
                sample = TeacherSample(features.vector, spec.masks(features), index)
                if not action.is_noop:
                    p = state.n_prompt_tokens
                    teacher = importance[task.uid][state.positions[:p].cpu()]
                    action = LayerAction(action.op, action.ratio, "learned", token_scores=teacher)
                    sample.tokens, sample.teacher = features.tokens.cpu(), teacher
                    sample.removable = state.removable()[:p].cpu()
                    sample.count = round(action.ratio * int(sample.removable.sum()))
                samples.append(sample)
                _, _, done, _, _ = env.step(action)
            progress.advance(bar)
    return samples


def fit(policy: TokenReductionPolicy, samples: list[TeacherSample], recipe: Recipe) -> dict[str, float]:
    """Fit the layer head to the schedule (cross-entropy) and the token head to the teacher's removal order."""
    settings = recipe.warm_start
    obs = torch.as_tensor(np.array([s.observation for s in samples]), dtype=torch.float32)
    masks = torch.as_tensor(np.array([s.mask for s in samples]), dtype=torch.bool)
    choices = torch.as_tensor(np.array([s.choice for s in samples]), dtype=torch.long)
    acting = choices[:, 0] != policy.action_spec.ops.index("keep")
    removals = [s for s in samples if s.count > 0]
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings.learning_rate)
    token_loss = torch.zeros(())
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(samples)).split(64):
            parts = policy.distributions(obs[batch], masks[batch])
            loss = -parts[0].log_prob(choices[batch, 0]).mean()
            if acting[batch].any():
                loss = loss - parts[1].log_prob(choices[batch, 1])[acting[batch]].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for sample in (removals[i] for i in torch.randperm(len(removals)).tolist()):
            scores = policy.token_scores(sample.tokens)[None]
            log_prob, _ = log_prob_and_entropy(
                scores, sample.teacher[None], sample.removable[None], torch.tensor([sample.count])
            )
            token_loss = -log_prob[0] / sample.count
            optimizer.zero_grad()
            token_loss.backward()
            optimizer.step()
    return {
        "samples": len(samples),
        "token_samples": len(removals),
        "token_nll_per_draw": float(token_loss.detach()),
        "teacher_overlap": overlap(policy, removals),
    }


@torch.no_grad()
def overlap(policy: TokenReductionPolicy, samples: list[TeacherSample]) -> float:
    """Mean share of the teacher's removed tokens that the policy's deterministic choice also removes."""
    shares = []
    for s in samples:
        scores = policy.token_scores(s.tokens).masked_fill(~s.removable, float("inf"))
        teacher = s.teacher.masked_fill(~s.removable, float("inf"))
        ours = set(scores.topk(s.count, largest=False).indices.tolist())
        theirs = set(teacher.topk(s.count, largest=False).indices.tolist())
        shares.append(len(ours & theirs) / s.count)
    return float(np.mean(shares)) if shares else float("nan")


def teacher_warm_start(policy: TokenReductionPolicy, env: TokenReductionEnv, recipe: Recipe) -> dict[str, float]:
    """Collect teacher episodes in ``env`` and fit ``policy`` to them (before PPO)."""
    return fit(policy, collect(policy, env, recipe), recipe)
