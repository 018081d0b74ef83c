"""Warm start: imitate a rule-based baseline by behaviour cloning before PPO (either backend)."""

from __future__ import annotations

import numpy as np
import torch

from rlprune.envs import TokenReductionEnv
from rlprune.policies import ReductionPolicy, check_compatible, make_baseline
from rlprune.train.recipe import Recipe


def behaviour_clone(policy: ReductionPolicy, env: TokenReductionEnv, recipe: Recipe) -> dict[str, float]:
    """Imitate a baseline: play it in ``env``, express its choices as actions, fit them by cross-entropy."""
    settings = recipe.warm_start
    baseline = check_compatible(make_baseline(settings.baseline), env.reducer)  # before any episode
    spec = policy.action_spec
    observations, masks, actions = [], [], []
    for episode in range(settings.episodes):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            features = env.features()
            choice = baseline.act(features, env.budget)
            index = as_indices(choice, features, spec)
            observations.append(obs)
            masks.append(env.action_masks())
            actions.append(index)
            obs, _, done, _, _ = env.step(index)
    obs_t = torch.as_tensor(np.array(observations), dtype=torch.float32)
    mask_t = torch.as_tensor(np.array(masks), dtype=torch.bool)
    act_t = torch.as_tensor(np.array(actions), dtype=torch.long)
    acting = act_t[:, 0] != spec.ops.index("keep")  # share and scorer only matter when acting
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings.learning_rate)
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(act_t)).split(64):
            parts = policy.distributions(obs_t[batch], mask_t[batch])
            loss = -parts[0].log_prob(act_t[batch, 0]).mean()
            chosen = acting[batch]
            if chosen.any():
                loss = loss - sum(parts[d].log_prob(act_t[batch, d])[chosen].mean() for d in (1, 2))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = torch.stack([d.probs.argmax(-1) for d in policy.distributions(obs_t, mask_t)], dim=-1)
    return {"samples": len(act_t), "op_accuracy": float((predicted[:, 0] == act_t[:, 0]).float().mean())}


def as_indices(action, features, spec) -> np.ndarray:
    """The spec's indices closest to a baseline's action: its op, the share of the needed savings
    it makes, and its scorer (the first of the spec's for scorers outside it)."""
    if action.is_noop:
        return spec.encode("keep", spec.shares[0], spec.scorers[0])
    before, after = features.flops_projected, features.ratio_after({features.layer: action})
    needed = max(before - features.budget, 1e-9)
    share = min(max((before - after) / needed, 0.0), 1.0)
    shaped = f"{action.scorer}{action.span_text()}"  # the scorer with its span options, if the spec offers it
    scorer = next((s for s in (shaped, action.scorer) if s in spec.scorers), spec.scorers[0])
    return spec.encode(action.op, share, scorer)
