"""Train the model itself to answer with fewer tokens: GRPO (TRL) on a LoRA adapter (peft).

The base weights stay untouched; the result is a small adapter folder (``adapter/``) that
``rlprune generate --adapter`` and ``rlprune eval --adapter`` merge into the base model at load.
Before training, the base model answers every training prompt once (greedy): its length and
correctness are the references ``r_eff`` compares against.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, TrainerCallback

from rlprune.data.generators import generate_suite
from rlprune.data.suites import SUITES
from rlprune.data.tasks import Task, load_jsonl
from rlprune.engine import Reducer
from rlprune.errors import RLPruneError
from rlprune.io import atomic_write_text
from rlprune.models import DEFAULT_MODEL, load_model
from rlprune.output.adapter import without_checkpointing_renames
from rlprune.output.rewards import REWARDS, HallucinationPenalty, is_correct
from rlprune.progress import Progress
from rlprune.prompts import build_prompt

ADAPTER = "adapter"


@dataclass(frozen=True)
class OutputTrainConfig:
    """A GRPO run that teaches the model to answer briefly."""

    model: str = DEFAULT_MODEL
    device: str = "cpu"  # cpu, cuda, cuda:N or mps (the trainer places the model there)
    dtype: str = "float32"
    suite: str = "short-answers"  # a built-in suite (its train split) or a JSONL file
    reward: str = "r_eff"  # r_eff, r_max or r_exact
    target_tokens: int | None = None  # for r_max / r_exact (default: half the base model's mean length)
    hallucination: float = 0.0  # weight of the hallucination penalty on prompts with a context
    steps: int = 30
    prompts_per_step: int = 4
    generations: int = 4  # completions sampled per prompt (GRPO's group)
    max_completion_tokens: int = 64
    learning_rate: float = 3e-4
    lora_rank: int = 16
    train_prompts: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise RLPruneError(f"unknown reward {self.reward!r}; use one of {', '.join(REWARDS)}")
        if min(self.steps, self.prompts_per_step, self.max_completion_tokens, self.train_prompts) < 1:
            raise RLPruneError("steps, prompts_per_step, max_completion_tokens and train_prompts must be positive")
        if self.generations < 2:
            raise RLPruneError("GRPO compares completions within a group: use at least 2 generations")
        if self.target_tokens is not None and self.target_tokens < 1:
            raise RLPruneError("target_tokens must be at least 1")


def training_tasks(suite: str, count: int, seed: int = 0) -> list[Task]:
    """Tasks with gold answers from a built-in suite's *train* split (the test split stays held out)."""
    if suite in SUITES:
        spec = SUITES[suite]
        tasks = generate_suite(spec.mix, "train", count, seed=seed, tokens=spec.tokens)
    elif Path(suite).is_file():
        tasks = load_jsonl(suite)[:count]
    else:
        raise RLPruneError(f"unknown suite {suite!r}; use one of {', '.join(SUITES)} or a .jsonl file")
    tasks = [t for t in tasks if t.answers]
    if not tasks:
        raise RLPruneError(f"suite {suite!r} has no tasks with gold answers to train on")
    return tasks


@torch.no_grad()
def base_references(model, tokenizer, tasks: list[Task], max_new_tokens: int) -> list[dict[str, Any]]:
    """The base model's greedy answer to each task: its length in tokens and whether it is correct."""
    reducer = Reducer(model)
    rows = []
    with Progress(transient=True) as progress:
        bar = progress.add_task("base model answers (once)", total=len(tasks))
        for task in tasks:
            prompt = build_prompt(tokenizer, task.question, task.context)
            result = reducer.generate(prompt.input_ids, max_new_tokens=max_new_tokens)
            text = tokenizer.decode(result.tokens[0], skip_special_tokens=True)
            rows.append({"ref_length": int(result.tokens.shape[1]), "ref_correct": is_correct(text, task.answers)})
            progress.advance(bar)
    return rows


def _user_message(task: Task) -> str:
    """The same user turn :func:`build_prompt` renders, so training and inference see one prompt format."""
    return task.question if task.context is None else f"{task.context.strip()}\n\nQuestion: {task.question.strip()}"


class _RewardLog(TrainerCallback):
    """Keeps TRL's per-step logs (reward, completion length) for the summary and shows progress."""

    def __init__(self, progress: Progress, bar) -> None:
        self.progress, self.bar, self.history = progress, bar, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self.history.append({"step": state.global_step, **{k: float(v) for k, v in logs.items()}})
            length = logs.get("completions/mean_length", float("nan"))
            self.progress.update(
                self.bar, completed=state.global_step, stats=f"reward {logs['reward']:+.3f}  length {length:.1f}"
            )


def _grpo_args(config: OutputTrainConfig, out: Path, *, use_cpu: bool):
    """TRL's GRPO arguments for ``config``: one optimisation step per batch of prompt groups, logs every step."""
    from trl import GRPOConfig

    with without_checkpointing_renames():
        return GRPOConfig(
            output_dir=str(out / "trainer"),
            max_steps=config.steps,
            per_device_train_batch_size=config.prompts_per_step * config.generations,
            gradient_accumulation_steps=1,
            num_generations=config.generations,
            max_completion_length=config.max_completion_tokens,
            learning_rate=config.learning_rate,
            beta=0.0,  # no reference-model KL: the adapter is small and the base stays available
            logging_steps=1,
            save_strategy="no",
            report_to=["tensorboard"],
            use_cpu=use_cpu,
            seed=config.seed,
            disable_tqdm=True,
        )


def train_output(config: OutputTrainConfig, out: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """Run GRPO with a LoRA adapter; writes ``out/adapter`` and ``out/summary.json``; returns the summary."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOTrainer

    out = Path(out)
    if (out / ADAPTER / "adapter_config.json").is_file():
        raise RLPruneError(f"{out} already holds an adapter; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(config.model, device=config.device, dtype=config.dtype)
    tasks = training_tasks(config.suite, config.train_prompts, config.seed)
    references = base_references(model, tokenizer, tasks, config.max_completion_tokens)
    mean_length = sum(r["ref_length"] for r in references) / len(references)
    target = config.target_tokens or max(1, round(mean_length / 2))
    reward_cls = REWARDS[config.reward]
    reward = reward_cls() if config.reward == "r_eff" else reward_cls(target_tokens=target)
    rewards = [reward] + ([HallucinationPenalty(config.hallucination)] if config.hallucination > 0 else [])
    rows = [
        {
            "prompt": [{"role": "user", "content": _user_message(task)}],
            "question": task.question,
            "context": task.context or "",
            "answers": list(task.answers),
            **reference,
        }
        for task, reference in zip(tasks, references, strict=True)
    ]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = _grpo_args(config, out, use_cpu=model.device.type == "cpu")
    peft_config = LoraConfig(
        r=config.lora_rank, lora_alpha=2 * config.lora_rank, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    started = time.time()
    with (
        without_checkpointing_renames(),
        Progress(*Progress.get_default_columns(), "{task.fields[stats]}", disable=quiet) as progress,
    ):
        bar = progress.add_task("GRPO", total=config.steps, stats="")
        log = _RewardLog(progress, bar)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=rewards,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[log],
        )
        trainer.remove_callback(PrinterCallback)  # the progress bar above reports instead
        trainer.train()
    trainer.model.save_pretrained(str(out / ADAPTER))
    summary = {
        "config": asdict(config),
        "target_tokens": target,
        "base_mean_length": mean_length,
        "base_accuracy": sum(r["ref_correct"] for r in references) / len(references),
        "seconds": round(time.time() - started, 1),
        "history": log.history,
        "adapter": str(out / ADAPTER),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
