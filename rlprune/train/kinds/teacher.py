"""A teacher for token-level policies: which prompt tokens the full model's answer relies on.

At training time the full model's answer is known, so per-token importance can be measured:
gradient x input of the answer's log-likelihood with respect to the hidden states entering each
decision layer, on the full, unreduced pass (first-order: how much the answer's likelihood moves
with that token's state), max-pooled over neighbours so a name is kept whole.
``benchmarks/token_choice.py`` compares it with fixed schedules and policies on validation prompts.

The token head is fitted to remove tokens in the teacher's order (lowest importance first) by
maximising the Plackett-Luce likelihood of that order, the same likelihood PPO then uses; the
layer head imitates a fixed schedule. The policy itself never sees the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rlprune.engine import Reducer
from rlprune.engine.features import Features
from rlprune.envs import Reference, TokenReductionEnv
from rlprune.policies import Baseline, TokenReductionPolicy, check_compatible, make_baseline
from rlprune.policies.plackett_luce import log_prob_and_entropy
from rlprune.progress import Progress
from rlprune.reduction import LayerAction
from rlprune.train.kinds.warm_start import as_indices
from rlprune.train.recipe import Recipe

LAYER_HEAD_STEPS = 300
SPAN = 3  # importance is max-pooled over this many neighbouring tokens


def token_importance(reducer: Reducer, reference: Reference, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """``{layer: (prompt_length,)}``: |gradient x input| of the full model's answer log-likelihood
    with respect to the hidden state of each prompt token entering ``layer``."""
    n, ids = reference.prompt_length, reference.input_ids.to(reducer.model.device)
    captured: dict[int, torch.Tensor] = {}
    first = min(layers)

    def capture(layer: int):
        def hook(module, args):
            if layer != first:  # already in the graph that starts at the first layer's input
                captured[layer] = args[0]
                return None
            hidden = args[0].detach().requires_grad_(True)
            captured[layer] = hidden
            return (hidden, *args[1:])

        return hook

    handles = [reducer.layers[layer].register_forward_pre_hook(capture(layer)) for layer in layers]
    try:
        with torch.enable_grad():
            logits = reducer.model(ids, use_cache=False).logits[0, n - 1 : -1].float().log_softmax(-1)
            likelihood = logits.gather(1, ids[0, n:, None]).sum()
            grads = torch.autograd.grad(likelihood, [captured[layer] for layer in layers])
    finally:
        for handle in handles:
            handle.remove()
    importance = {}
    for layer, grad in zip(layers, grads, strict=True):
        score = (grad * captured[layer]).sum(-1).abs()[0, :n].detach().float().cpu()
        importance[layer] = F.max_pool1d(score[None, None], SPAN, 1, SPAN // 2)[0, 0]
    return importance


@dataclass
class TeacherPolicy:
    """Acts like ``schedule`` (how many tokens go, where) but removes the least important tokens
    by the teacher's measure for one prompt: the upper bound a token head is fitted towards."""

    schedule: Baseline
    importance: dict[int, torch.Tensor]  # from token_importance, for the prompt being reduced
    name: str = "teacher"

    def decision_layers(self, num_layers: int) -> tuple[int, ...]:
        return self.schedule.decision_layers(num_layers)

    def act(self, features: Features, budget: float | None, deterministic: bool = True) -> LayerAction:
        action = self.schedule.act(features, budget)
        if action.is_noop:
            return action
        state = features.state
        scores = self.importance[state.layer][state.positions[: state.n_prompt_tokens].cpu()]
        return LayerAction(action.op, action.ratio, "learned", token_scores=scores)


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
    baseline = check_compatible(make_baseline(settings.baseline or "static:2:prune:0.5:relevance"), env.reducer)
    spec = policy.action_spec
    importance: dict[str, dict[int, torch.Tensor]] = {}
    layers = env.config.episode.decision_layers
    samples: list[TeacherSample] = []
    with Progress(transient=True) as progress:
        bar = progress.add_task("teacher episodes", total=settings.episodes)
        for episode in range(settings.episodes):
            env.reset(seed=episode)
            task = env.task
            if task.uid not in importance:
                importance[task.uid] = token_importance(env.reducer, env.reference, layers)
            teacher = TeacherPolicy(baseline, importance[task.uid])
            done = False
            while not done:
                features = env.features()
                state = features.state
                action = teacher.act(features, env.budget)
                index = as_indices(action, features, spec)
                sample = TeacherSample(features.vector, spec.masks(features), index)
                if not action.is_noop:
                    sample.tokens, sample.teacher = features.tokens.cpu(), action.token_scores
                    sample.removable = state.removable()[: state.n_prompt_tokens].cpu()
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
    for _ in range(LAYER_HEAD_STEPS):  # few samples, cheap network: full-batch steps
        parts = policy.distributions(obs, masks)
        loss = -parts[0].log_prob(choices[:, 0]).mean()
        if acting.any():
            loss = loss - parts[1].log_prob(choices[:, 1])[acting].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    epoch_losses: list[float] = []
    for _ in range(settings.epochs):
        epoch_losses = []
        for sample in (removals[i] for i in torch.randperm(len(removals)).tolist()):
            scores = policy.token_scores(sample.tokens)[None]
            log_prob, _ = log_prob_and_entropy(
                scores, sample.teacher[None], sample.removable[None], torch.tensor([sample.count])
            )
            token_loss = -log_prob[0] / sample.count
            optimizer.zero_grad()
            token_loss.backward()
            optimizer.step()
            epoch_losses.append(float(token_loss.detach()))
    with torch.no_grad():
        predicted = torch.stack([d.probs.argmax(-1) for d in policy.distributions(obs, masks)], dim=-1)
    return {
        "samples": len(samples),
        "token_samples": len(removals),
        "op_accuracy": float((predicted[:, 0] == choices[:, 0]).float().mean()),
        "token_nll_per_draw": float(np.mean(epoch_losses)) if epoch_losses else float("nan"),  # last epoch
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
