"""``rlprune generate``: answer with a reduced prefill and compare it with the full model."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.table import Table

from rlprune.budget import BudgetController
from rlprune.cli.common import DeviceOption, DtypeOption, ModelOption, console, err_console, user_errors
from rlprune.errors import InvalidActionError, InvalidPromptError

PromptArgument = Annotated[
    str,
    typer.Argument(
        help="The question or instruction, or @FILE.jsonl: one prompt per line ({question, context} or "
        "{prompt}), answered in batches, one JSON line each."
    ),
]
ContextOption = Annotated[str | None, typer.Option(help="A passage the question is about; @FILE reads it from a file.")]
ScheduleOption = Annotated[
    str | None,
    typer.Option(help='Reduction schedule, "LAYER:OP[:RATIO[:SCORER]],...", e.g. "2:prune:0.5,12:merge:0.3".'),
]
PolicyOption = Annotated[
    str | None,
    typer.Option(
        help="A policy checkpoint folder, a shipped policy's name (smollm2-135m-span, ...) or a baseline: none, "
        "random, fastv, snapkv, gemfilter, pyramid, tome, static:SCHEDULE (parameters as fastv:layer=2,ratio=0.5)."
    ),
]
BudgetOption = Annotated[
    float | None, typer.Option(help="Target prefill FLOPs ratio in (0, 1] for --policy (default: its own).")
]
ProtectLastOption = Annotated[
    int | None, typer.Option(help="Final tokens never removed (default: the question and what follows).")
]
BudgetModeOption = Annotated[
    str,
    typer.Option(
        help="prompt: every prompt at --budget; average: --budget is the mean over an @FILE.jsonl's prompts, "
        "each at the ratio the policy proposes for it (rlprune.budget)."
    ),
]
RatioBoundOption = Annotated[
    float | None, typer.Option(help="With --budget-mode average: a bound on one prompt's ratio.")
]
AdapterOption = Annotated[
    Path | None, typer.Option(help="A LoRA adapter from `rlprune train-output` (RUN/adapter), merged in.")
]


@user_errors
def generate(
    prompt: PromptArgument,
    model: ModelOption = "smollm2-135m",
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    context: ContextOption = None,
    schedule: ScheduleOption = None,
    policy: PolicyOption = None,
    budget: BudgetOption = None,
    budget_mode: BudgetModeOption = "prompt",
    floor: RatioBoundOption = None,
    ceiling: RatioBoundOption = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Most tokens to generate.")] = 64,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature.")] = 1.0,
    top_k: Annotated[int, typer.Option(min=0, help="Sample from the k most likely tokens (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for sampling.")] = 0,
    protect_last: ProtectLastOption = None,
    raw: Annotated[bool, typer.Option("--raw", help="Do not apply the chat template.")] = False,
    repeats: Annotated[int, typer.Option(min=1, help="Timing repeats for the prefill comparison.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    adapter: AdapterOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts of an @FILE.jsonl generated together.")] = 8,
) -> None:
    """Generate with a reduced prefill and compare it with the full model."""
    from rlprune.prompts import build_prompt

    if schedule is not None and not schedule.strip():
        raise InvalidActionError(
            "--schedule is empty; give LAYER:OP[:RATIO] items such as 2:prune:0.5, or leave it out"
        )
    schedule = schedule or ""
    schedule_actions, context = _check_options(schedule, policy, budget, context)
    reducer, tokenizer, method, budget = _reducer(
        model, device, dtype, policy, budget, adapter, schedule_actions, (budget_mode, floor, ceiling)
    )
    sampling = {"do_sample": sample, "temperature": temperature, "top_k": top_k, "top_p": top_p}
    if prompt.startswith("@"):
        if context is not None or protect_last is not None or raw:
            raise InvalidActionError(
                "with @FILE.jsonl, each line gives its own context; drop --context, --protect-last, --raw"
            )
        _generate_file(Path(prompt[1:]), reducer, tokenizer, method, batch_size, max_new_tokens, sampling, budget)
        return
    built = build_prompt(tokenizer, prompt, context, chat=not raw)
    keep_last = built.protect_last if protect_last is None else protect_last
    report, prefill = _generate_prompt(
        reducer, tokenizer, built, method, keep_last, max_new_tokens, sampling, seed, repeats
    )
    lm = reducer.model
    averaged = isinstance(budget, BudgetController)
    report |= {
        "model": model,
        "device": str(lm.device),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "schedule": schedule,
        "policy": policy,
        "budget": budget.budget.target if averaged else budget,
        "budget_mode": budget_mode,
        "adapter": None if adapter is None else str(adapter),
    }
    _warn_budget(budget.budget.target if averaged else budget, prefill.flops_ratio)  # one prompt: its mean
    if as_json:
        print(json.dumps(report))
        return
    console.print(f"[bold]Answer:[/] {report['text']}", highlight=False)
    console.print(_layer_table(prefill.tokens_per_layer, prefill.state.actions))
    console.print(_summary_table(report))


def _check_options(schedule: str, policy: str | None, budget: float | None, context: str | None) -> tuple[Any, Any]:
    """Refuse contradictory options before the model loads; the parsed schedule and the context text."""
    from rlprune.inference import check_budget
    from rlprune.reduction import parse_schedule

    if policy is not None and schedule:
        raise InvalidActionError("give either --schedule or --policy, not both")
    if budget is not None and policy is None:
        raise InvalidActionError("--budget needs --policy (a checkpoint or a baseline such as snapkv)")
    check_budget(budget)
    schedule_actions = parse_schedule(schedule)
    if context is not None and context.startswith("@"):
        from rlprune.io import read_text

        context = read_text(context[1:], "context file")
    return schedule_actions, context


def _reducer(
    model: str,
    device: str,
    dtype: str,
    policy: str | None,
    budget: float | None,
    adapter: Path | None,
    schedule,
    mode: tuple[str, float | None, float | None] = ("prompt", None, None),
) -> tuple[Any, Any, dict[str, Any], Any]:
    """Load the model (the adapter merged in) and the policy: the reducer, the tokenizer, what decides the
    prefill (the reducer's ``policy=`` and ``budget=``, else the schedule as ``actions=``) and the budget
    (a :class:`~rlprune.budget.BudgetController` in average mode)."""
    from rlprune.budget import workload_budget
    from rlprune.engine import Reducer
    from rlprune.engine.policy import run_budget
    from rlprune.models import load_model
    from rlprune.policies import resolve_policy

    lm, tokenizer = load_model(model, device=device, dtype=dtype)
    reducer = Reducer(lm)
    chosen = resolve_policy(policy, lm) if policy is not None else None  # checked against the base weights
    budget = run_budget(chosen, budget) if chosen is not None else None  # a learned policy's own when not given
    budget_mode, floor, ceiling = mode
    if budget_mode != "prompt" and chosen is None:
        raise InvalidActionError("--budget-mode average needs --policy (a checkpoint or a baseline)")
    budget = workload_budget(budget, budget_mode, floor=floor, ceiling=ceiling)
    if adapter is not None:
        from rlprune.output import apply_adapter

        lm = apply_adapter(lm, adapter)
        reducer = Reducer(lm)
    method = {"actions": schedule} if chosen is None else {"policy": chosen, "budget": budget}
    return reducer, tokenizer, method, budget


def _generate_prompt(
    reducer, tokenizer, built, method, keep_last: int, max_new_tokens: int, sampling, seed: int, repeats: int
) -> tuple[dict[str, Any], Any]:
    """Generate the answer to one prompt and time its prefill, full and reduced; the report and the prefill."""
    lm = reducer.model
    input_ids = built.input_ids.to(lm.device)
    result = reducer.generate(
        input_ids,
        **method,
        max_new_tokens=max_new_tokens,
        **sampling,
        generator=torch.Generator(lm.device).manual_seed(seed),
        protect_last=keep_last,
    )
    prefill = result.prefill
    full_s = _median_seconds(lambda: lm(input_ids, logits_to_keep=1), repeats, lm.device)
    reduced_s = _median_seconds(lambda: reducer.run(input_ids, **method, protect_last=keep_last), repeats, lm.device)
    report = {
        "text": tokenizer.decode(result.tokens[0], skip_special_tokens=True).strip(),
        "prompt_tokens": len(built),
        "tokens_per_layer": prefill.tokens_per_layer,
        "flops_full": prefill.flops_full,
        "flops_reduced": prefill.flops,
        "flops_ratio": prefill.flops_ratio,
        "kv_bytes_full": prefill.kv_bytes_full,
        "kv_bytes_reduced": prefill.kv_bytes,
        "prefill_s_full": full_s,
        "prefill_s_reduced": reduced_s,
    }
    return report, prefill


def _warn_budget(budget: float | None, flops_ratio: float, where: str = "") -> None:
    """Say so on stderr when the realised FLOPs ratio misses the asked budget by more than the tolerance."""
    from rlprune.inference import BUDGET_TOLERANCE, budget_missed

    if budget_missed(budget, flops_ratio):
        err_console.print(
            f"[yellow]warning:[/] {where}the prefill ran at FLOPs ratio {flops_ratio:.3f}, "
            f"more than {BUDGET_TOLERANCE} from the budget {budget:g} "
            "(a short prompt leaves little to remove; a policy may keep more)",
            highlight=False,
        )


def _generate_file(path: Path, reducer, tokenizer, method, batch_size: int, max_new_tokens: int, sampling, budget=None):
    """Answer every prompt of a JSONL file in batches; print one JSON line per prompt, in order."""
    from rlprune.data.tasks import load_jsonl
    from rlprune.prompts import build_prompt

    tasks = load_jsonl(path)
    if not tasks:
        raise InvalidPromptError(f"{path} holds no prompts")
    for start in range(0, len(tasks), batch_size):
        group = tasks[start : start + batch_size]
        built = [build_prompt(tokenizer, task.question, task.context) for task in group]
        results = reducer.generate(
            [b.input_ids[0] for b in built],
            **method,
            protect_last=[b.protect_last for b in built],
            max_new_tokens=max_new_tokens,
            generator=torch.Generator(reducer.model.device).manual_seed(start),
            **sampling,
        )
        if isinstance(budget, BudgetController):
            budget.record(result.prefill.flops_ratio for result in results)
        for offset, (task, result) in enumerate(zip(group, results, strict=True)):
            prefill = result.prefill
            line = {
                "index": start + offset,
                "question": task.question,
                "text": tokenizer.decode(result.tokens[0], skip_special_tokens=True).strip(),
                "prompt_tokens": int(prefill.state.prompt_length),
                "tokens_per_layer": prefill.tokens_per_layer,
                "flops_ratio": prefill.flops_ratio,
                "kv_ratio": prefill.kv_bytes / prefill.kv_bytes_full,
                "batch_prefill_s": result.prefill_seconds,
            }
            if not isinstance(budget, BudgetController):
                _warn_budget(budget, prefill.flops_ratio, f"prompt {start + offset}: ")
            print(json.dumps(line), flush=True)
    if isinstance(budget, BudgetController):  # the mean, and why it missed the target if it did
        err_console.print(budget.summary(), highlight=False, soft_wrap=True)


def _median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up, the device synchronised."""
    from rlprune.timing import Stopwatch

    with torch.no_grad():
        fn()  # warm-up
        clock, times = Stopwatch(device), []
        for _ in range(repeats):
            fn()
            times.append(clock.lap())
    return statistics.median(times)


def _layer_table(tokens_per_layer: list[int], actions: dict) -> Table:
    """Tokens per layer, consecutive layers with the same count on one row."""
    table = Table(title="Tokens per layer")
    for column in ("layers", "action", "tokens"):
        table.add_column(column, justify="right" if column == "tokens" else "left")
    start = 0
    acted = {layer: action for layer, action in actions.items() if not action.is_noop}
    for i in range(1, len(tokens_per_layer) + 1):
        if i == len(tokens_per_layer) or tokens_per_layer[i] != tokens_per_layer[start] or i in acted:
            span = f"{start}" if i - 1 == start else f"{start}-{i - 1}"
            action = acted.get(start)
            table.add_row(span, str(action) if action else "", str(tokens_per_layer[start]))
            start = i
    return table


def _summary_table(report: dict) -> Table:
    """FLOPs, KV cache and prefill seconds, full against reduced, with the measured speedup."""
    table = Table(title="Prefill, reduced vs full")
    for column in ("", "full", "reduced", "reduced / full"):
        table.add_column(column, justify="right")
    rows = [
        ("FLOPs", "flops_full", "flops_reduced", lambda v: f"{v / 1e9:.2f} G"),
        ("KV cache", "kv_bytes_full", "kv_bytes_reduced", lambda v: f"{v / 2**20:.2f} MiB"),
        ("seconds", "prefill_s_full", "prefill_s_reduced", lambda v: f"{v:.3f} s"),
    ]
    for name, full, reduced, fmt in rows:
        table.add_row(name, fmt(report[full]), fmt(report[reduced]), f"{report[reduced] / report[full]:.3f}")
    speedup = report["prefill_s_full"] / report["prefill_s_reduced"]
    table.caption = f"{report['prompt_tokens']} prompt tokens; measured prefill speedup {speedup:.2f}x"
    return table
