"""Which tokens go, judged on validation prompts: the teacher, fixed schedules and token-level policies.

Every method removes tokens at matched FLOPs budgets on the first ``--items`` validation prompts
of a preset, through the one reducer, with the full model's answer teacher-forced; the score is
the share of gold-answer tokens still predicted top-1 (the measure `rlprune best-static` ranks
schedules by). The teacher removes the tokens with the least gradient x input importance, with
as many going at the same layer as ``--schedule`` removes: the bound a token head is fitted to.
``--fit-episodes N`` also fits a fresh token-level policy to the teacher on N training episodes
(the ``token-local`` recipe's warm start, without PPO) and scores it.

    python benchmarks/token_choice.py [--preset mixed-hard] [--items 24] [--budgets 0.3,0.5]
        [--policy policies/smollm2-135m-mixed] [--fit-episodes 128 --fit-epochs 20]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from rich.console import Console
from rich.table import Table

from rlprune import load_model
from rlprune.envs import EnvConfig, TokenReductionEnv
from rlprune.eval.best_static import answer_score, validation_references
from rlprune.policies import TokenReductionPolicy, make_baseline, resolve_policy
from rlprune.train.kinds.teacher import TeacherPolicy, collect, fit, token_importance
from rlprune.train.recipe import Recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mixed-hard")
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--budgets", default="0.3,0.5")
    parser.add_argument("--schedule", default="static:2:prune:0.5:relevance", help="sets how many go where")
    parser.add_argument("--policy", action="append", default=[], help="a checkpoint or baseline (repeatable)")
    parser.add_argument("--fit-episodes", type=int, default=0)
    parser.add_argument("--fit-epochs", type=int, default=20)
    args = parser.parse_args()

    config = EnvConfig.load(args.preset)
    model, tokenizer = load_model(config.model)
    reducer, references = validation_references(config, args.items, model=model, tokenizer=tokenizer)
    budgets = [float(b) for b in args.budgets.split(",")]
    layers = config.episode.decision_layers
    schedule = make_baseline(args.schedule)
    methods = {args.schedule: schedule, "best-static": make_baseline("best-static")}
    methods |= {spec: resolve_policy(spec, model) for spec in args.policy}
    if args.fit_episodes:
        recipe = Recipe.load("token-local")
        warm = dataclasses.replace(recipe.warm_start, episodes=args.fit_episodes, epochs=args.fit_epochs)
        recipe = dataclasses.replace(recipe, warm_start=warm)
        torch.manual_seed(0)
        fitted = TokenReductionPolicy(decision_layers=layers)
        env = TokenReductionEnv(config, split="train", model=model, tokenizer=tokenizer)
        summary = fit(fitted, collect(fitted, env, recipe), recipe)
        print(f"fitted on {args.fit_episodes} teacher episodes: {summary}")
        methods[f"fitted ({args.fit_episodes} episodes)"] = fitted
    importance = [token_importance(reducer, r, layers) for r in references]
    teachers = [TeacherPolicy(schedule, i) for i in importance]

    table = Table(title=f"{len(references)} {args.preset} validation prompts: gold-answer tokens kept (teacher-forced)")
    table.add_column("method")
    for budget in budgets:
        table.add_column(f"budget {budget:g}", justify="right")
    rows = [(name, [policy] * len(references)) for name, policy in methods.items()] + [("teacher", teachers)]
    for name, policies in rows:
        cells = []
        for budget in budgets:
            scores = [answer_score(reducer, r, p, budget) for r, p in zip(references, policies, strict=True)]
            cells.append(f"{sum(scores) / len(scores):.3f}")
        table.add_row(name, *cells)
    Console(width=110).print(table)


if __name__ == "__main__":
    main()
