"""The ``rlprune`` command line: ``info``, ``generate``, ``train``, ``export``, ``eval`` and ``train-output``."""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rlprune.errors import InvalidActionError, InvalidPromptError, RLPruneError, describe_os_error

app = typer.Typer(
    name="rlprune",
    help="Learned token pruning and merging for frozen causal language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)

ModelOption = Annotated[
    str,
    typer.Option("--model", "-m", help="Alias (smollm2-135m, gemma3-270m), local model folder or .gguf file."),
]
DeviceOption = Annotated[str, typer.Option(help="Where the model runs: cpu, cuda, cuda:N or mps.")]
DtypeOption = Annotated[str, typer.Option(help="Model weights' dtype: float32, bfloat16 or float16.")]
PlacementOption = Annotated[str | None, typer.Option(help="Override the preset's model device / dtype.")]


def user_errors(command: F) -> F:
    """Report :class:`RLPruneError` as one readable line and exit 1, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RLPruneError as error:
            message = str(error)
        except OSError as error:  # the machine's fault (permissions, full disk, a file in the way)
            message = describe_os_error(error)
        except UnicodeDecodeError as error:
            message = f"a file is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    return wrapper  # type: ignore[return-value]


@app.command()
@user_errors
def info(model: ModelOption = "smollm2-135m", device: DeviceOption = "cpu", dtype: DtypeOption = "float32") -> None:
    """Show the model's shape, parameter count and the cache folder."""
    from rlprune.flops import ModelDims
    from rlprune.models import count_parameters, load_model, rlprune_home

    lm, _ = load_model(model, device=device, dtype=dtype)
    dims = ModelDims.from_model(lm)
    table = Table(title=f"rlprune info: {model}", show_header=False)
    rows = {
        "architecture": f"{lm.config.model_type} ({type(lm).__name__})",
        "layers": dims.layers,
        "hidden size": dims.hidden,
        "attention heads": f"{dims.heads} query, {dims.kv_heads} key/value, head dim {dims.head_dim}",
        "MLP size": dims.intermediate,
        "sliding windows": _windows(dims.windows),
        "device": str(lm.device),
        "vocabulary": dims.vocab,
        "max positions": getattr(lm.config, "max_position_embeddings", "?"),
        "parameters": f"{count_parameters(lm):,}",
        "dtype": str(lm.dtype).removeprefix("torch."),
        "attention kernel": lm.config._attn_implementation,
        "cache folder": str(rlprune_home()),
    }
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)


@app.command()
@user_errors
def generate(
    prompt: Annotated[
        str,
        typer.Argument(
            help="The question or instruction, or @FILE.jsonl: one prompt per line ({question, context} or "
            "{prompt}), answered in batches, one JSON line each."
        ),
    ],
    model: ModelOption = "smollm2-135m",
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    context: Annotated[
        str | None, typer.Option(help="A passage the question is about; @FILE reads it from a file.")
    ] = None,
    schedule: Annotated[
        str, typer.Option(help='Reduction schedule, "LAYER:OP[:RATIO[:SCORER]],...", e.g. "2:prune:0.5,12:merge:0.3".')
    ] = "",
    policy: Annotated[
        str | None,
        typer.Option(
            help="A policy checkpoint folder or a baseline: none, random, fastv, snapkv, pyramid, tome, "
            "static:SCHEDULE (parameters as fastv:layer=2,ratio=0.5)."
        ),
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="Target prefill FLOPs ratio in (0, 1] for --policy (default: its own).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Most tokens to generate.")] = 64,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature.")] = 1.0,
    top_k: Annotated[int, typer.Option(min=0, help="Sample from the k most likely tokens (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for sampling.")] = 0,
    protect_last: Annotated[
        int | None, typer.Option(help="Final tokens never removed (default: the question and what follows).")
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Do not apply the chat template.")] = False,
    repeats: Annotated[int, typer.Option(min=1, help="Timing repeats for the prefill comparison.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    adapter: Annotated[
        Path | None, typer.Option(help="A LoRA adapter from `rlprune train-output` (RUN/adapter), merged in.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts of an @FILE.jsonl generated together.")] = 8,
) -> None:
    """Generate with a reduced prefill and compare it with the full model."""
    from rlprune.inference import check_budget
    from rlprune.models import load_model
    from rlprune.policies import decider, resolve_policy
    from rlprune.policies.base import run_budget
    from rlprune.prompts import build_prompt
    from rlprune.reduction import parse_schedule
    from rlprune.runner import Reducer

    if policy is not None and schedule:
        raise InvalidActionError("give either --schedule or --policy, not both")
    if budget is not None and policy is None:
        raise InvalidActionError("--budget needs --policy (a checkpoint or a baseline such as snapkv)")
    check_budget(budget)
    schedule_actions = parse_schedule(schedule)
    if context is not None and context.startswith("@"):
        from rlprune.io import read_text

        context = read_text(context[1:], "context file")
    lm, tokenizer = load_model(model, device=device, dtype=dtype)
    reducer = Reducer(lm)
    chosen = resolve_policy(policy, lm) if policy is not None else None  # checked against the base weights
    budget = run_budget(chosen, budget) if chosen is not None else None  # a learned policy's own when not given
    if adapter is not None:
        from rlprune.output import apply_adapter

        lm = apply_adapter(lm, adapter)
        reducer = Reducer(lm)
    if chosen is not None:
        actions, layers = decider(chosen, reducer, budget), chosen.decision_layers(reducer.dims.layers)
    else:
        actions, layers = schedule_actions, None
    sampling = {"do_sample": sample, "temperature": temperature, "top_k": top_k, "top_p": top_p}
    if prompt.startswith("@"):
        if context is not None or protect_last is not None or raw:
            raise InvalidActionError(
                "with @FILE.jsonl, each line gives its own context; drop --context, --protect-last, --raw"
            )
        _generate_file(
            Path(prompt[1:]), reducer, tokenizer, actions, layers, batch_size, max_new_tokens, sampling, budget
        )
        return
    built = build_prompt(tokenizer, prompt, context, chat=not raw)
    input_ids = built.input_ids.to(lm.device)
    keep_last = built.protect_last if protect_last is None else protect_last
    result = reducer.generate(
        input_ids,
        actions,
        decision_layers=layers,
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=torch.Generator(lm.device).manual_seed(seed),
        protect_last=keep_last,
    )
    text = tokenizer.decode(result.tokens[0], skip_special_tokens=True).strip()
    prefill = result.prefill
    full_s = _median_seconds(lambda: lm(input_ids, logits_to_keep=1), repeats, lm.device)
    reduced_s = _median_seconds(
        lambda: reducer.run(input_ids, actions, decision_layers=layers, protect_last=keep_last), repeats, lm.device
    )
    report = {
        "text": text,
        "prompt_tokens": len(built),
        "tokens_per_layer": prefill.tokens_per_layer,
        "flops_full": prefill.flops_full,
        "flops_reduced": prefill.flops,
        "flops_ratio": prefill.flops_ratio,
        "kv_bytes_full": prefill.kv_bytes_full,
        "kv_bytes_reduced": prefill.kv_bytes,
        "prefill_s_full": full_s,
        "prefill_s_reduced": reduced_s,
        "model": model,
        "device": str(lm.device),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "schedule": schedule,
        "policy": policy,
        "budget": budget,
        "adapter": None if adapter is None else str(adapter),
    }
    _warn_budget(budget, prefill.flops_ratio)
    if as_json:
        print(json.dumps(report))
        return
    console.print(f"[bold]Answer:[/] {text}", highlight=False)
    console.print(_layer_table(prefill.tokens_per_layer, prefill.state.actions))
    console.print(_summary_table(report))


@app.command()
@user_errors
def train(
    env: Annotated[
        str | None,
        typer.Option(
            "--env", help="Environment preset name or path (envs/*.toml); default: grounded-qa, on --resume the run's."
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="Training recipe name or path (train/*.toml); default: ppo-local, on --resume the run's."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, logs, summary, exported policy.")] = Path(
        "runs/latest"
    ),
    model: Annotated[str | None, typer.Option("--model", "-m", help="Must match the preset's model (checked).")] = None,
    backend: Annotated[
        str | None, typer.Option(help="sb3 (one machine) or ray (RLlib env runners); default: the recipe's.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Parallel environments (sb3) or env runners (ray); default: the recipe's.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help='Ray cluster to join ("auto" or HOST:PORT); default: a local Ray.')
    ] = None,
    timesteps: Annotated[int | None, typer.Option(min=1, help="Override the recipe's timesteps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the recipe's seed.")] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out from its last checkpoint (or finish it), with the run's recipe and preset.",
        ),
    ] = False,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--override",
            help="On --resume, let this field differ from the run's (repeatable). Safe: run.timesteps, run.n_envs "
            "(workers), run.envs, run.torch_threads, run.checkpoint_every, run.eval_every, ray.address, "
            "ray.sample_timeout_s, env.device, env.dtype. --timesteps/--workers/--device/--dtype need none.",
        ),
    ] = None,
    device: PlacementOption = None,
    dtype: PlacementOption = None,
) -> None:
    """Train a reduction policy with PPO, then export it to OUT/policy."""
    from rlprune.envs import EnvConfig
    from rlprune.train.recipe import BACKENDS, Recipe
    from rlprune.train.run import read_run_meta

    stored = read_run_meta(out) if resume else None  # on --resume, what is not given is the run's
    if stored is None:
        env, recipe = env or "grounded-qa", recipe or "ppo-local"
    preset_model = EnvConfig.load(env).model if env is not None else stored.get("model")
    if model is not None and model != preset_model:
        raise InvalidActionError(f"--model {model} differs from the preset's model {preset_model}; edit the preset")
    loaded = Recipe.load(recipe) if recipe is not None else None
    chosen = backend or (loaded.backend if loaded is not None else stored.get("backend", "sb3"))
    if chosen not in BACKENDS:
        raise InvalidActionError(f"unknown backend {chosen!r}; use one of {', '.join(BACKENDS)}")
    if address is not None and chosen != "ray":
        raise InvalidActionError("--address needs --backend ray")
    if chosen == "ray":
        from rlprune.train.rllib import train as run_training

        backend_options = {"address": address}
    else:
        from rlprune.train.sb3 import train as run_training

        backend_options = {}
    summary = run_training(
        env,
        loaded,
        out,
        timesteps=timesteps,
        seed=seed,
        workers=workers,
        resume=resume,
        device=device,
        dtype=dtype,
        override=override or (),
        **backend_options,
    )
    if summary.get("already_finished"):
        console.print(f"{out} already finished: {summary['timesteps']} steps; nothing to train (--timesteps for more)")
    final = summary["final_validation"]
    out_table = Table(title=f"Trained {summary['timesteps']} steps in {summary['seconds']:.0f} s ({chosen})")
    for column in ("validation", "value"):
        out_table.add_column(column, justify="right")
    for key in ("reward", "flops_ratio", "kl", "budget_error"):
        out_table.add_row(key.replace("_", " "), f"{final[key]:.4f}")
    for budget, ratio in final["per_budget"].items():
        out_table.add_row(f"FLOPs ratio at budget {budget}", f"{ratio:.3f}")
    console.print(out_table)
    console.print(f"policy exported to {Path(out) / 'policy'}; summary in {Path(out) / 'summary.json'}")


@app.command(name="train-head")
@user_errors
def train_head(
    out: Annotated[Path, typer.Option(help="Where the span-head policy checkpoint is written.")] = Path(
        "runs/span-head"
    ),
    model: ModelOption = "smollm2-135m",
    layer: Annotated[int, typer.Option(min=0, help="The decision layer whose hidden states the head reads.")] = 2,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training prompts.")] = 12,
    long_per_cell: Annotated[
        int, typer.Option(min=1, help="Training needles per kind, length and depth (train-split essays).")
    ] = 3,
    short_items: Annotated[int, typer.Option(min=1, help="Short grounded training questions (train split).")] = 240,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a checkpoint already in OUT.")] = False,
) -> None:
    """Train a span head (question-conditioned scores on the model's hidden states) by supervision on
    where each training task's answer is, and export it as a policy (a few minutes on 2 CPU cores)."""
    from rlprune.train.span_head import SpanHeadConfig, train_span_head

    if (out / "config.json").exists() and not force:
        raise InvalidActionError(f"{out} already holds a policy; pass --force to overwrite it or choose another --out")
    config = SpanHeadConfig(
        model=model,
        decision_layer=layer,
        epochs=epochs,
        long_per_cell=long_per_cell,
        short_items=short_items,
        seed=seed,
    )
    summary = train_span_head(config, out)
    console.print(
        f"{summary['examples']} training prompts, loss {summary['loss'][0]:.3f} -> {summary['loss'][-1]:.3f}; "
        f"policy written to {out}; try `rlprune eval --suite niah --evidence-only --policy {out}`",
        highlight=False,
    )


@app.command(name="train-output")
@user_errors
def train_output(
    model: ModelOption = "smollm2-135m",
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    suite: Annotated[
        str, typer.Option(help="Tasks with gold answers: short-answers, arithmetic, grounded-qa, ... or a .jsonl file.")
    ] = "short-answers",
    reward: Annotated[str, typer.Option(help="r_eff (shorter than the base model, as accurate), r_max or r_exact.")] = (
        "r_eff"
    ),
    target_tokens: Annotated[
        int | None, typer.Option(min=1, help="Target answer length for r_max / r_exact (default: half the base's).")
    ] = None,
    hallucination: Annotated[
        float, typer.Option(min=0.0, help="Weight of the hallucination penalty on prompts with a context.")
    ] = 0.0,
    steps: Annotated[int, typer.Option(min=1, help="GRPO optimisation steps.")] = 30,
    prompts_per_step: Annotated[int, typer.Option(min=1, help="Prompts per step.")] = 4,
    generations: Annotated[int, typer.Option(min=2, help="Completions sampled per prompt.")] = 4,
    max_completion_tokens: Annotated[int, typer.Option(min=1, help="Longest completion.")] = 64,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="LoRA learning rate.")] = 3e-4,
    train_prompts: Annotated[
        int, typer.Option(min=1, help="Training prompts drawn from the suite's train split.")
    ] = 64,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Run folder: adapter/, summary.json, trainer logs.")] = Path("runs/output"),
) -> None:
    """Train a LoRA adapter with GRPO (TRL) so the model answers with fewer tokens."""
    from rlprune.output.train import OutputTrainConfig
    from rlprune.output.train import train_output as run_training

    config = OutputTrainConfig(
        model=model,
        device=device,
        dtype=dtype,
        suite=suite,
        reward=reward,
        target_tokens=target_tokens,
        hallucination=hallucination,
        steps=steps,
        prompts_per_step=prompts_per_step,
        generations=generations,
        max_completion_tokens=max_completion_tokens,
        learning_rate=learning_rate,
        train_prompts=train_prompts,
        seed=seed,
    )
    summary = run_training(config, out)
    last = summary["history"][-1] if summary["history"] else {}
    console.print(
        f"base model: {summary['base_mean_length']:.1f} tokens per answer, accuracy {summary['base_accuracy']:.1%}; "
        f"last step: reward {last.get('reward', float('nan')):+.3f}, "
        f"{last.get('completions/mean_length', float('nan')):.1f} tokens sampled per answer",
        highlight=False,
    )
    console.print(
        f"adapter written to {summary['adapter']}; compare with `rlprune eval --adapter {summary['adapter']}`"
    )


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A training run folder.")],
    out: Annotated[Path, typer.Option(help="Where to write the policy checkpoint.")],
    force: Annotated[bool, typer.Option("--force", help="Replace what OUT already holds.")] = False,
) -> None:
    """Export a run's best policy (or its last) as a checkpoint folder."""
    from rlprune.train.run import export as export_run

    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise RLPruneError(f"{out} already exists and is not empty; choose another --out or pass --force to replace it")
    folder = export_run(run_dir, out)
    console.print(f"policy written to {folder}")


@app.command(name="best-static")
@user_errors
def best_static(
    env: Annotated[str, typer.Option("--env", help="Environment preset whose validation split is searched.")] = (
        "mixed-hard"
    ),
    budgets: Annotated[str, typer.Option(help="Budgets to find the best schedule for, comma-separated.")] = "0.3,0.5",
    items: Annotated[int, typer.Option(min=1, help="Validation prompts each schedule is scored on.")] = 24,
    out: Annotated[Path | None, typer.Option(help="Where to write the table (default: eval/best-static/ENV.json).")] = (
        None
    ),
    layers: Annotated[
        str | None,
        typer.Option(help="Decision layers searched, comma-separated (default: those of 2,4,8 the model has)."),
    ] = None,
    spans: Annotated[
        str, typer.Option(help='Span shapes searched besides each scorer\'s own, ";"-separated ("" for none).')
    ] = "pool=25;pool=-4:+16;unit=sentence",
    device: PlacementOption = None,
    dtype: PlacementOption = None,
) -> None:
    """Grid-search fixed schedules (layer x scorer x op x span shape) on validation: the `best-static` table."""
    from rlprune.envs import EnvConfig
    from rlprune.eval.best_static import check_table_path, search, write_table
    from rlprune.eval.harness import parse_budgets
    from rlprune.policies.baselines import table_path

    preset = EnvConfig.load(env)
    placement = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
    try:
        searched = None if layers is None else tuple(int(part) for part in layers.split(",") if part.strip())
    except ValueError:
        raise InvalidActionError(f"--layers {layers!r} must be comma-separated layer numbers such as 2,4,8") from None
    shapes = tuple(part.strip() for part in spans.split(";") if part.strip())
    path = check_table_path(out or table_path(Path(env).stem))  # before the search, not after it
    result = search(dataclasses.replace(preset, **placement), parse_budgets(budgets), items, searched, shapes)
    result["preset"] = env  # the name or path given, not the loaded configuration
    path = write_table(result, path)
    for budget, entry in result["best"].items():
        console.print(f"budget {budget}: {entry['schedule']} (score {entry['score']:.3f})", highlight=False)
    console.print(f"table written to {path}; use it as the baseline `best-static:{path}`")


@app.command(name="eval")
@user_errors
def evaluate(
    suite: Annotated[
        str,
        typer.Option(
            help="A built-in suite (test split: grounded-qa, mixed-hard, counterfactual, kv-retrieval, long-context, "
            "instructions; real-text grids: niah, niah-multikey, niah-multivalue, variable-tracking) or a .jsonl file."
        ),
    ] = "grounded-qa",
    model: ModelOption = "smollm2-135m",
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    policy: Annotated[
        list[str] | None, typer.Option(help="A policy checkpoint folder or baseline spec (repeatable).")
    ] = None,
    baselines: Annotated[
        str, typer.Option(help='"all" (random, fastv, snapkv, pyramid, tome), "none", or a comma-separated list.')
    ] = "all",
    budgets: Annotated[str, typer.Option(help="Target prefill FLOPs ratios, comma-separated.")] = "0.3,0.5,0.7",
    out: Annotated[Path, typer.Option(help="Folder for results.json/.csv/.md, pareto.png and the journal.")] = Path(
        "runs/eval"
    ),
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N items of the suite.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Most tokens per answer.")] = 32,
    bootstrap: Annotated[int, typer.Option(min=100, help="Bootstrap resamples for the 95% intervals.")] = 1000,
    adapter: Annotated[
        Path | None, typer.Option(help="A LoRA adapter from `rlprune train-output`, merged into the model.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Items generated together (times are then each item's share of its batch).")
    ] = 1,
    group_by: Annotated[
        str, typer.Option(help="Also report every metric per value of this field (a JSONL field, or kind).")
    ] = "kind",
    per_cell: Annotated[
        int | None, typer.Option(min=1, help="Items per depth x length cell of a long-context suite (niah, ...).")
    ] = None,
    depths: Annotated[
        str | None, typer.Option(help="Needle depths of a long-context suite, e.g. 0,0.5,1 (default 0 to 1 by 0.25).")
    ] = None,
    force_new: Annotated[
        bool,
        typer.Option(
            "--force-new",
            help="Set aside the records already in OUT (records.jsonl.old, .old.1 ...) and evaluate everything again.",
        ),
    ] = False,
    agreement: Annotated[
        bool,
        typer.Option(help="Teacher-force the full answer through every method (KL, top-1); off halves the time."),
    ] = True,
    evidence_only: Annotated[
        bool,
        typer.Option(
            "--evidence-only",
            help="No generation: only whether each method keeps the gold answer's tokens (minutes for hundreds).",
        ),
    ] = False,
) -> None:
    """Compare policies, baselines and the full model at matched FLOPs budgets (resumes in OUT)."""
    from rlprune.eval import EvalConfig, markdown_table, parse_baselines, parse_budgets, parse_depths
    from rlprune.eval import evaluate as run_evaluation
    from rlprune.eval.report import budget_misses
    from rlprune.inference import BUDGET_TOLERANCE

    config = EvalConfig(
        suite=suite,
        model=model,
        device=device,
        dtype=dtype,
        policies=tuple(policy or ()),
        baselines=parse_baselines(baselines),
        budgets=parse_budgets(budgets),
        limit=limit,
        max_new_tokens=max_new_tokens,
        bootstrap_samples=bootstrap,
        adapter=None if adapter is None else str(adapter),
        batch_size=batch_size,
        group_by=group_by,
        per_cell=per_cell,
        depths=None if depths is None else parse_depths(depths),
        agreement=agreement,
        evidence_only=evidence_only,
    )
    rows = run_evaluation(config, out, fresh=force_new)
    console.print(markdown_table(rows), highlight=False)
    for miss in budget_misses(rows):
        err_console.print(
            f"[yellow]warning:[/] {escape(miss)} misses its budget by more than {BUDGET_TOLERANCE}", highlight=False
        )
    console.print(f"results in {out}/results.md, results.csv, results.json and pareto.png")


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


def _generate_file(
    path: Path, reducer, tokenizer, actions, layers, batch_size: int, max_new_tokens: int, sampling, budget=None
):
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
            actions,
            decision_layers=layers,
            protect_last=[b.protect_last for b in built],
            max_new_tokens=max_new_tokens,
            generator=torch.Generator(reducer.model.device).manual_seed(start),
            **sampling,
        )
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
            _warn_budget(budget, prefill.flops_ratio, f"prompt {start + offset}: ")
            print(json.dumps(line), flush=True)


def _median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    from rlprune.timing import Stopwatch

    with torch.no_grad():
        fn()  # warm-up
        clock, times = Stopwatch(device), []
        for _ in range(repeats):
            fn()
            times.append(clock.lap())
    return statistics.median(times)


def _windows(windows: tuple[int | None, ...]) -> str:
    sliding = [i for i, w in enumerate(windows) if w is not None]
    if not sliding:
        return "none (every layer global)"
    return f"{len(sliding)} of {len(windows)} layers see {max(w for w in windows if w)} positions back"


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


def main() -> None:  # pragma: no cover - console entry point alias
    sys.exit(app())
