"""Run reduction methods over a suite at matched budgets: one record per item, method and budget.

Every method, the full model included, goes through the same :class:`Reducer`. For each item the
full model answers first; each method then (1) answers on its own, timed, and (2) is
teacher-forced on the full model's answer to measure how far its predictions moved. Finished
records go to an append-only journal, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlprune.budget import BudgetController, workload_budget
from rlprune.data.evidence import Evidence, locate_evidence
from rlprune.data.tasks import Task
from rlprune.engine import GenerationResult, Reducer, ReducerConfig, ReductionBatch, ReductionState
from rlprune.errors import RLPruneError
from rlprune.eval.journal import JOURNAL, Journal
from rlprune.eval.suites import load_suite
from rlprune.inference import check_budget
from rlprune.io import MAX_JSON_BYTES, check_folder, hash_file, read_bytes
from rlprune.metrics import (
    KL_DEFINITION,
    agreement,
    answer_correct,
    confidence,
    echoes_question,
    evidence_kept,
    hallucinated,
    names_other_value,
    partial_answer,
    top_k,
    unsupported_words,
)
from rlprune.models import DEFAULT_MODEL, fingerprint_id, load_model
from rlprune.output import apply_adapter
from rlprune.policies import BestStatic, Policy, find_policy, is_baseline, resolve_policy
from rlprune.policies.baselines import table_path
from rlprune.policies.checkpoint_config import CONFIG, MAX_CONFIG_BYTES, MAX_PARAMETERS, WEIGHTS, WEIGHTS_HEADER_BYTES
from rlprune.progress import Progress
from rlprune.prompts import build_prompt
from rlprune.reduction import sentence_end_ids
from rlprune.validate import check_number

FULL = "full model"
HELD = " held"  # suffix of a policy held to one oracle-grid ratio in average mode
ALL_BASELINES = ("random", "fastv", "snapkv", "pyramid", "tome")
FORMAT = 2  # records carry their method's identity
MAX_WEIGHTS_BYTES = 8 * MAX_PARAMETERS + WEIGHTS_HEADER_BYTES  # the largest policy weights any checkpoint may hold


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate: a suite, the methods on it and the FLOPs budgets they are matched at."""

    suite: str
    model: str = DEFAULT_MODEL
    device: str = "cpu"  # cpu, cuda, cuda:N or mps
    dtype: str = "float32"  # float32, bfloat16 or float16
    policies: tuple[str, ...] = ()  # checkpoint folders, or any spec resolve_policy takes
    baselines: tuple[str, ...] = ALL_BASELINES
    budgets: tuple[float, ...] = (0.3, 0.5, 0.7)
    limit: int | None = None
    max_new_tokens: int = 32
    bootstrap_samples: int = 1000
    adapter: str | None = None  # a LoRA adapter (rlprune train-output) merged into the model
    batch_size: int = 1  # items generated together (each still journalled on its own)
    group_by: str = "kind"  # also report every metric per value of this field (a JSONL line's own, or kind)
    per_cell: int | None = None  # items per depth x length cell of a long-context suite (None: the suite's own)
    depths: tuple[float, ...] | None = None  # a long-context suite's needle depths (None: the suite's own)
    agreement: bool = True  # teacher-force the full model's answer through each method (KL, top-1, OOC mass)
    evidence_only: bool = False  # no generation: only whether each method keeps the gold answer's tokens
    budget_mode: str = "prompt"  # "average": each budget is a mean over the suite's items (rlprune.budget)
    floor: float | None = None  # average mode: the lowest ratio one item may get
    ceiling: float | None = None  # average mode: the highest
    oracle_grid: tuple[float, ...] = ()  # average mode: also run each policy held to these ratios (oracle)

    def __post_init__(self) -> None:
        if not self.budgets:
            raise RLPruneError("give at least one budget, e.g. --budgets 0.3,0.5,0.7")
        for budget in self.budgets:
            check_budget(budget)
        _refuse_repeats([float(b) for b in self.budgets], "budget {:g} is given twice in --budgets; give each once")
        for field, what in (("policies", "the policy (--policy)"), ("baselines", "a baseline (--baselines)")):
            if any(not isinstance(spec, str) or not spec.strip() for spec in getattr(self, field)):
                raise RLPruneError(f"{what} is empty; give a checkpoint folder, a shipped name or a baseline ({field})")
        _refuse_repeats(
            [_method_key(spec) for spec in (*self.policies, *self.baselines)],
            "method {!r} is given twice (--policy, --baselines); give each method once",
        )
        if self.max_new_tokens < 1:
            raise RLPruneError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise RLPruneError(f"batch_size must be at least 1, got {self.batch_size}")
        for budget in self.budgets:  # average-mode settings checked before anything loads
            workload_budget(budget, self.budget_mode, floor=self.floor, ceiling=self.ceiling)
        if self.budget_mode == "average" and self.evidence_only:
            raise RLPruneError("--budget-mode average generates answers; drop --evidence-only")
        if self.oracle_grid and self.budget_mode != "average":
            raise RLPruneError("--oracle-grid compares per-prompt ratios with fixed ones; add --budget-mode average")
        for ratio in self.oracle_grid:
            check_number(ratio, "each oracle_grid ratio", at_most=1.0, hint=" (--oracle-grid)", error=RLPruneError)
        _refuse_repeats([float(g) for g in self.oracle_grid], "ratio {:g} is given twice in --oracle-grid")


def _refuse_repeats(values: list[Any], message: str) -> None:
    """Raise ``message`` filled with the first value given twice: a repeat would count its items twice
    and make the intervals look narrower than they are."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise RLPruneError(message.format(value))
        seen.add(value)


def _method_key(spec: str) -> str:
    """What makes two method specs the same method: a checkpoint folder's resolved path, else the spec."""
    path = checkpoint_folder(spec)
    return str(path.resolve()) if path is not None else spec.strip()


@dataclass(frozen=True)
class Method:
    name: str
    policy: Policy


def checkpoint_folder(spec: str) -> Path | None:
    """The checkpoint folder a method spec names, as :func:`resolve_policy` resolves it: a baseline's
    name (``random``, ``fastv:layer=2``) always means the baseline, even beside a folder of that name."""
    return None if is_baseline(spec) else find_policy(spec)


def method_identity(spec: str) -> str:
    """A hash of what a method is: a checkpoint's own files (its config and weights, read bounded:
    nothing else in its folder), a best-static table's content, or the baseline spec itself. Equal
    names with other contents get other identities."""
    digest = hashlib.sha256()
    path = checkpoint_folder(spec)
    if path is not None:
        for name, limit in ((CONFIG, MAX_CONFIG_BYTES), (WEIGHTS, MAX_WEIGHTS_BYTES)):
            digest.update(name.encode() + b"\0")
            hash_file(digest, path / name, "policy file", limit)
            digest.update(b"\0")
        return digest.hexdigest()
    digest.update(spec.strip().encode())
    name, _, params = spec.strip().partition(":")
    if name == "best-static":
        digest.update(read_bytes(table_path(params or BestStatic.table), "best-static table", MAX_JSON_BYTES))
    return digest.hexdigest()


class Evaluation:
    """One evaluation run: the suite, the methods, the reducer and the journal in ``out``."""

    def __init__(
        self,
        config: EvalConfig,
        out: str | Path,
        *,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        fresh: bool = False,
    ) -> None:
        """With ``fresh``, records already in ``out`` are set aside (``records.jsonl.old``, then
        ``records.jsonl.old.1`` ...: none is overwritten) and all is redone."""
        self.config, self.out = config, check_folder(out)
        self._evidence: dict[str, Evidence | None] = {}
        self.suite, self.tasks = load_suite(config.suite, config.limit, config.per_cell, config.depths)
        fields = sorted({"kind", *(key for task in self.tasks for key in task.meta)})
        if config.group_by not in fields:
            raise RLPruneError(
                f"--group-by {config.group_by!r} is not a field of the items of {self.suite}; "
                f"use one of {', '.join(fields)}"
            )
        if model is None or tokenizer is None:
            model, tokenizer = load_model(config.model, device=config.device, dtype=config.dtype)
        self.model, self.tokenizer = model, tokenizer
        specs = [*config.policies, *config.baselines]
        names = [s if checkpoint_folder(s) is None else Path(s).name for s in specs]
        if len(set(names)) != len(names):
            names = list(specs)  # two checkpoints with the same folder name: use their paths
        self.methods = [Method(name, resolve_policy(spec, model)) for name, spec in zip(names, specs, strict=True)]
        # average mode with an oracle grid: each policy also runs held to every grid ratio, as "NAME held"
        self.held = {f"{m.name}{HELD}": m for m in self.methods[: len(config.policies)] if config.oracle_grid}
        if config.adapter:  # after the policies: they are checked against the base model's weights
            model = self.model = apply_adapter(model, config.adapter)
        self.reducer = Reducer(model, ReducerConfig(sentence_ends=sentence_end_ids(tokenizer)))
        self.out.mkdir(parents=True, exist_ok=True)
        settings = {
            "format": FORMAT,
            "model": fingerprint_id(model),
            "max_new_tokens": config.max_new_tokens,
            "protect_first": self.reducer.config.protect_first,
            "adapter": config.adapter,
            "agreement": config.agreement,
        }
        if config.agreement:  # records of another KL definition never mix with these
            settings["kl"] = KL_DEFINITION
        if config.evidence_only:  # records without answers never mix with generated ones
            settings["evidence_only"] = True
        if config.budget_mode == "average":  # nor per-item ratios with fixed ones
            settings["budget_mode"] = {"mode": "average", "floor": config.floor, "ceiling": config.ceiling}
        self._streams: dict[tuple[str, float], BudgetController] = {}
        identities = {FULL: FULL} | {name: method_identity(spec) for name, spec in zip(names, specs, strict=True)}
        identities |= {held: identities[method.name] for held, method in self.held.items()}
        self.journal = Journal(self.out / JOURNAL, settings, identities, fresh=fresh)

    def close(self) -> None:
        """Release ``out`` for other evaluations."""
        self.journal.close()

    def __enter__(self) -> Evaluation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def runs(self) -> list[tuple[str, float | None]]:
        """Every (method, budget) pair, the full model first, the policies held to the oracle grid last."""
        held = [(name, g) for name in self.held for g in self.config.oracle_grid]
        return [(FULL, None)] + [(m.name, b) for m in self.methods for b in self.config.budgets] + held

    def pending(self) -> int:
        return sum(self.journal.get(t.uid, m, b) is None for t in self.tasks for m, b in self.runs())

    def records(self) -> list[dict[str, Any]]:
        """This run's records (suite items x methods x budgets) in a stable order."""
        found = (self.journal.get(t.uid, m, b) for t in self.tasks for m, b in self.runs())
        return [r for r in found if r is not None]

    def run(self, show_progress: bool = True) -> list[dict[str, Any]]:
        """Evaluate every pending record, then return all of them."""
        total = self.pending()
        if total and not self.config.evidence_only:
            self._warm_up()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not show_progress, transient=True) as progress:
            bar = progress.add_task(f"{self.suite}: evaluating", total=total)
            items = list(enumerate(self.tasks))
            size = self.config.batch_size
            for start in range(0, len(items), size):
                for record in self._evaluate_items(items[start : start + size]):
                    self.journal.add(record)
                    budget = "" if record["budget"] is None else f" @ {record['budget']}"
                    progress.update(bar, advance=1, description=f"{self.suite}: {record['method']}{budget}")
        return self.records()

    def _warm_up(self) -> None:
        """One untimed generation, so the first timed one does not pay for allocation."""
        prompt = build_prompt(self.tokenizer, self.tasks[0].question, self.tasks[0].context)
        self.reducer.generate(prompt.input_ids, max_new_tokens=2, protect_last=prompt.protect_last)

    @torch.no_grad()
    def _evaluate_items(self, items: list[tuple[int, Task]]) -> Iterator[dict[str, Any]]:
        """Every pending record of ``items``; each method generates for all of them as one batch."""
        prompts = {task.uid: build_prompt(self.tokenizer, task.question, task.context) for _, task in items}
        self._evidence = {task.uid: locate_evidence(prompts[task.uid], task) for _, task in items}
        if self.config.evidence_only:
            yield from self._evidence_records(items, prompts)
            return
        fulls = {task.uid: self.journal.get(task.uid, FULL, None) for _, task in items}
        todo = [(i, t) for i, t in items if fulls[t.uid] is None]
        for (index, task), result in zip(todo, self._generate(todo, prompts, None, None), strict=True):
            fulls[task.uid] = self._record(index, task, FULL, None, result, batch=len(todo))
            fulls[task.uid]["answer_tokens"] = result.tokens[0].tolist()
        pending = {
            (m, b): [(i, t) for i, t in items if self.journal.get(t.uid, m, b) is None] for m, b in self.runs()[1:]
        }
        scored = [(i, t) for i, t in items if self.journal.get(t.uid, FULL, None) is None or any(
            (i, t) in rows for rows in pending.values())]  # fmt: skip
        if not scored:
            return
        agree = self.config.agreement
        if agree:  # the full model's answer, teacher-forced through the full model and each method
            forced = {t.uid: torch.cat((prompts[t.uid].input_ids, torch.tensor([fulls[t.uid]["answer_tokens"]])), 1)
                      for _, t in scored}  # fmt: skip
            outs = self._forced(scored, prompts, forced, None, None)
            full_logits = {t.uid: out.logits[0] for (_, t), out in zip(scored, outs, strict=True)}
            references = {uid: top_k(logits) for uid, logits in full_logits.items()}  # as the reference cache stores
            allowed = {t.uid: torch.unique(forced[t.uid][0]) for _, t in scored}
        for _, task in scored:
            if self.journal.get(task.uid, FULL, None) is None:
                if agree:  # measured like every method (KL 0, top-1 1), for its out-of-context mass
                    uid = task.uid
                    fulls[uid].update(asdict(agreement(full_logits[uid], references[uid], allowed[uid])))
                    fulls[uid]["confidence"] = confidence(full_logits[uid], fulls[uid]["answer_tokens"])
                else:
                    fulls[task.uid].update(kl=None, top1=None, out_of_context_mass=None)
                yield fulls[task.uid]
        policies = {m.name: m.policy for m in self.methods} | {name: m.policy for name, m in self.held.items()}
        for (name, budget), rows in pending.items():
            if not rows:
                continue
            policy, stream = policies[name], self._stream(name, budget)
            results = self._generate(rows, prompts, policy, stream or budget)
            # (rows, ratio) runs to teacher-force: the batch at its budget, or each row at the ratio it got
            runs = [(rows, budget)]
            proposals: list[float | None] = [None] * len(rows)
            if stream is not None:
                runs = [([row], ratio) for row, ratio in zip(rows, stream.given, strict=True)]
                proposals = list(stream.pending)
                stream.record(result.prefill.flops_ratio for result in results)
            outs = [None] * len(rows)
            if agree:
                outs = [out for run, ratio in runs for out in self._forced(run, prompts, forced, policy, ratio)]
            for (index, task), result, out, proposal in zip(rows, results, outs, proposals, strict=True):
                record = self._record(index, task, name, budget, result, fulls[task.uid]["answer"], len(rows))
                if stream is not None:
                    record["budget_proposal"] = proposal
                if out is None:
                    record.update(kl=None, top1=None, out_of_context_mass=None)
                else:
                    record.update(asdict(agreement(out.logits[0], references[task.uid], allowed[task.uid])))
                yield record

    def _stream(self, name: str, budget: float | None) -> BudgetController | None:
        """In average mode, the controller holding ``budget`` as the mean over the items ``name`` has
        answered so far (records already in the journal replayed in suite order, so a resumed run
        picks the stream up where it stopped); ``None`` in prompt mode."""
        if self.config.budget_mode != "average" or budget is None or name in self.held:
            return None
        if (name, budget) not in self._streams:
            stream = workload_budget(budget, "average", floor=self.config.floor, ceiling=self.config.ceiling)
            done = [r for t in self.tasks if (r := self.journal.get(t.uid, name, budget)) is not None]
            stream.replay((r["budget_proposal"] for r in done), (r["flops_ratio"] for r in done))
            self._streams[(name, budget)] = stream
        return self._streams[(name, budget)]

    def _evidence_records(self, items: list[tuple[int, Task]], prompts) -> Iterator[dict[str, Any]]:
        """Prefill decisions only: for each method, which of the gold answer's tokens reach the last
        layer. The layers after a method's last decision change nothing removed, so they never run."""
        policies = {m.name: m.policy for m in self.methods}
        for name, budget in self.runs():
            rows = [(i, t) for i, t in items if self.journal.get(t.uid, name, budget) is None]
            if not rows:
                continue
            built = [prompts[task.uid] for _, task in rows]
            if name == FULL:  # nothing is removed: no need to run it
                states: list[ReductionState | None] = [None] * len(rows)
            else:
                policy = policies[name]
                selected = self.reducer.select(
                    [p.input_ids[0] for p in built],
                    policy=policy,
                    budget=budget,
                    protect_last=[p.protect_last for p in built],
                )
                states = list(selected) if isinstance(selected, ReductionBatch) else [selected]
            for (index, task), prompt, state in zip(rows, built, states, strict=True):
                if state is None:
                    ratios, reaches = (1.0, 1.0), torch.ones(len(prompt), dtype=torch.bool)
                else:
                    ratios = (self.reducer.projected_flops(state) / self.reducer.full_flops(state),
                              self.reducer.projected_kv_ratio(state))  # fmt: skip
                    reaches = state.reaches_top()
                yield self._base_record(index, task, name, budget, len(prompt), ratios, reaches) | {
                    "answer": None, "correct": None, "hallucinated": None, "unsupported": None, "said_prior": None,
                    "partial": None, "echo": None, "other_value": None, "prefill_s": None, "decode_s": None,
                    "batch": len(rows), "new_tokens": None,
                }  # fmt: skip

    def _base_record(
        self,
        index: int,
        task: Task,
        method: str,
        budget: float | None,
        prompt_tokens: int,
        ratios: tuple[float, float],
        reaches_top: Tensor,
    ) -> dict[str, Any]:
        """What every record says: the item, the method, its FLOPs and KV ratios, and the evidence kept."""
        whole, share = evidence_kept(self._evidence.get(task.uid), reaches_top)
        return {
            "item": task.uid,
            "index": index,
            "kind": task.kind,
            "method": method,
            "budget": budget,
            "prompt_tokens": prompt_tokens,
            "flops_ratio": ratios[0],
            "kv_ratio": ratios[1],
            "evidence": whole,  # every token of one occurrence of the gold answer reached the last layer
            "evidence_share": share,
            **({"meta": task.meta} if task.meta else {}),
        }

    def _generate(self, rows, prompts, policy, budget) -> list[GenerationResult]:
        """Greedy answers of ``rows`` under ``policy`` (``None``: the full model), as one batch."""
        if not rows:
            return []
        built = [prompts[task.uid] for _, task in rows]
        results = self.reducer.generate(
            [p.input_ids[0] for p in built],
            policy=policy,
            budget=budget,
            max_new_tokens=self.config.max_new_tokens,
            protect_last=[p.protect_last for p in built],
        )
        return results

    def _forced(self, rows, prompts, forced, policy, budget) -> list:
        """Continuation logits of the full model's answers under ``policy``, as one batch."""
        built = [prompts[task.uid] for _, task in rows]
        return self.reducer.run(
            [forced[task.uid][0] for _, task in rows],
            policy=policy,
            budget=budget,
            logits="continuation",
            prompt_length=[len(p) for p in built],
            protect_last=[p.protect_last for p in built],
        )

    def _record(
        self,
        index: int,
        task: Task,
        method: str,
        budget: float | None,
        result: GenerationResult,
        full_text: str | None = None,
        batch: int = 1,
    ) -> dict[str, Any]:
        """One finished run; ``full_text`` is the full model's answer (``None``: this is the full model).

        In a batch of ``batch`` items the wall times are the batch's, shared equally among its items.
        """
        text = self.tokenizer.decode(result.tokens[0], skip_special_tokens=True).strip()
        full_text = text if full_text is None else full_text
        prefill = result.prefill
        ratios = (prefill.flops_ratio, prefill.kv_bytes / prefill.kv_bytes_full)
        reaches = prefill.state.reaches_top()
        return self._base_record(index, task, method, budget, prefill.state.prompt_length, ratios, reaches) | {
            "answer": text,
            "correct": answer_correct(text, task),
            "partial": partial_answer(text, task),  # a strict part of the gold answer (a number's prefix)
            # content words in neither the context, the question nor the full model's answer
            "hallucinated": hallucinated(text, task, full_text),
            # content words in neither the context nor the question (comparable with the full model)
            "unsupported": unsupported_words(text, task.context, task.question) if task.grounded else None,
            "said_prior": answer_correct(text, _prior_task(task)) if task.prior else None,
            "echo": echoes_question(text, task.question),  # says the question back instead of answering
            "other_value": names_other_value(text, task),  # a wrong answer naming another value of the context
            "prefill_s": result.prefill_seconds / batch,
            "decode_s": result.decode_seconds / batch,
            "batch": batch,
            "new_tokens": int(result.tokens.shape[1]),
        }


def _prior_task(task: Task) -> Task:
    """The task with the model's prior belief as the answer: matching it means ignoring the context."""
    return Task(task.kind, task.question, task.context, task.prior, (task.prior,) if task.prior else ())
