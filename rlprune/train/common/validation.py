"""Validation during training: deterministic episodes at fixed budgets (:class:`Evaluator`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.policies import Policy
from rlprune.train.recipe import Recipe


class Evaluator:
    """Deterministic validation episodes at fixed budgets, in this process.

    Reports the episode reward and the measures of :mod:`rlprune.metrics`, as the environment's
    final ``info`` gives them, under the names ``rlprune eval`` reports them by (a mean over the
    episodes where a measure applies; ``None`` where it applies to none).
    """

    MEASURES = {  # summary key: the final info's key
        "flops_ratio": "flops_ratio",
        "kl": "kl",
        "top1": "agreement",
        "greedy": "greedy",
        "answer_accuracy": "answer_accuracy",
        "hallucination": "hallucination",
        "evidence": "evidence_kept",
        "solved": "solved",
        "confidence": "confidence",
    }

    def __init__(
        self, preset: str | Path | EnvConfig, recipe: Recipe, cache_dir: str | None, model=None, tokenizer=None
    ) -> None:
        self.env = TokenReductionEnv(preset, split="validation", cache_dir=cache_dir, model=model, tokenizer=tokenizer)
        self.tasks = min(recipe.run.eval_tasks, len(self.env.tasks))
        self.budgets = recipe.run.eval_budgets

    def __call__(self, policy: Policy) -> dict[str, Any]:
        rows = []
        for budget in self.budgets:
            for index in range(self.tasks):
                obs, _ = self.env.reset(seed=index, options={"task_index": index, "budget": budget})
                total, done = 0.0, False
                while not done:
                    action = policy.act(self.env.features(), budget)
                    obs, reward, done, _, info = self.env.step(action)
                    total += reward
                rows.append({"reward": total, "budget": budget} | {k: info[v] for k, v in self.MEASURES.items()})
        summary = {key: mean_defined([r[key] for r in rows]) for key in ("reward", *self.MEASURES)}
        summary["budget_error"] = float(np.mean([abs(r["flops_ratio"] - r["budget"]) for r in rows]))
        summary["per_budget"] = {
            str(b): float(np.mean([r["flops_ratio"] for r in rows if r["budget"] == b])) for b in self.budgets
        }
        return summary


def mean_defined(values: list[float]) -> float | None:
    """The mean of the values that are not NaN (a measure that does not apply), ``None`` if none is."""
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else None
