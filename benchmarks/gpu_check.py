"""GPU check with no weights to download: random weights from real configs, on CUDA in bfloat16.

For SmolLM2-135M, Gemma 3 270M and a Llama-3-8B-class config (few layers, to fit any card):
  1. identity: the reducer without reduction reproduces the model's logits (bfloat16 tolerance)
     and greedy ``Reducer.generate`` yields ``model.generate``'s tokens; a layer-level and a
     token-level policy (random weights) decide from features computed on the device;
  2. prefill time full vs reduced (SnapKV-style selection at the budget) at 1k, 4k and 16k tokens,
     the realised speedup against the FLOPs speedup, and peak memory of each;
  3. batched reduced prefill: 8 prompts of 512 tokens as one batch against one at a time.

Runs in a few minutes on one H100; prints a table and writes JSON. From the repository root:

    python benchmarks/gpu_check.py [--device cuda] [--dtype bfloat16] [--lengths 1024,4096,16384] [--json out.json]

It imports ``rlprune`` from this checkout, so it also runs where the package is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig  # noqa: E402

from rlprune import Reducer, make_baseline  # noqa: E402
from rlprune.models import resolve_device, resolve_dtype  # noqa: E402
from rlprune.policies import ReductionPolicy, TokenReductionPolicy  # noqa: E402
from rlprune.timing import best_seconds, best_seconds_interleaved, synchronize  # noqa: E402


def configs(max_positions: int, big_layers: int) -> dict[str, object]:
    """The real shapes (published configs), with positions extended to the longest prompt."""
    return {
        "SmolLM2-135M": LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=max_positions,
            rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5,
        ),
        "Gemma-3-270M": Gemma3TextConfig(
            vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
            num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
            sliding_window=512, max_position_embeddings=max(max_positions, 32768), rope_theta=1000000.0,
            rope_local_base_freq=10000.0,
        ),
        f"Llama-3-8B ({big_layers} of 32 layers)": LlamaConfig(
            vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=big_layers,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=max_positions,
            rope_theta=500000.0,
        ),
    }  # fmt: skip


def build(config, device: torch.device, dtype: torch.dtype):
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.generation_config.eos_token_id = None
    return model.eval().requires_grad_(False)


def peak_bytes(fn, device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device)


@torch.no_grad()
def check_model(name, config, args, device, dtype, console) -> dict:
    started = time.perf_counter()
    model = build(config, device, dtype)
    reducer = Reducer(model)
    vocab = config.vocab_size
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(10, vocab, (1, 256), generator=generator).to(device)
    expected = model(ids).logits.float()
    got = reducer.run(ids, logits="all").logits.float()
    scale = expected.abs().max().item()
    identity = (got - expected).abs().max().item()
    top1 = (got.argmax(-1) == expected.argmax(-1)).float().mean().item()
    hf = model.generate(ids[:, :64], max_new_tokens=16, do_sample=False, pad_token_id=0)
    ours = reducer.generate(ids[:, :64], max_new_tokens=16, eos_token_id=[]).sequences
    policies_ok = True
    points = (2, max(3, reducer.dims.layers // 2))
    for policy in (ReductionPolicy(decision_layers=points), TokenReductionPolicy(decision_layers=points)):
        torch.manual_seed(2)
        for parameter in policy.parameters():
            parameter.data.normal_(0, 0.5)
        out = reducer.run(ids, policy=policy, budget=args.budget, protect_last=16)
        policies_ok &= bool(torch.isfinite(out.logits.float()).all()) and out.flops_ratio <= 1.0
    result = {
        "model": name,
        "policies_ok": policies_ok,
        "identity_max_abs": identity,
        "identity_tolerance": 2**-7 * scale,  # one bfloat16 step at the logits' scale
        "identity_top1_agreement": top1,
        "generate_parity": bool(torch.equal(hf, ours)),
        "lengths": [],
    }
    method = make_baseline("snapkv")
    for n in args.lengths:
        ids = torch.randint(10, vocab, (1, n), generator=generator).to(device)

        def full(ids=ids):
            return model(ids, logits_to_keep=1)

        def reduced(ids=ids):
            return reducer.run(ids, policy=method, budget=args.budget, protect_last=32)

        try:
            out = reduced()
            full_s = best_seconds(full, args.repeats, device)
            reduced_s = best_seconds(reduced, args.repeats, device)
            row = {
                "tokens": n,
                "flops_ratio": out.flops_ratio,
                "flops_speedup": 1 / out.flops_ratio,
                "full_ms": full_s * 1e3,
                "reduced_ms": reduced_s * 1e3,
                "realised_speedup": full_s / reduced_s,
                "peak_full_gib": peak_bytes(full, device) / 2**30,
                "peak_reduced_gib": peak_bytes(reduced, device) / 2**30,
                "kv_ratio": out.kv_bytes / out.kv_bytes_full,
            }
        except torch.OutOfMemoryError:
            row = {"tokens": n, "error": "out of memory"}
            torch.cuda.empty_cache()
        result["lengths"].append(row)
    rows = [torch.randint(10, vocab, (512,), generator=generator).to(device) for _ in range(args.batch)]

    def one_at_a_time():
        return [reducer.run(row, policy=method, budget=args.budget, protect_last=32) for row in rows]

    def batched():
        return reducer.run(rows, policy=method, budget=args.budget, protect_last=32)

    times = best_seconds_interleaved({"single": one_at_a_time, "batch": batched}, args.repeats, device)
    tokens = 512 * args.batch
    result["batch"] = {
        "size": args.batch,
        "single_tokens_per_s": tokens / times["single"],
        "batch_tokens_per_s": tokens / times["batch"],
        "speedup": times["single"] / times["batch"],
    }
    result["seconds"] = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--lengths", default="1024,4096,16384")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--big-layers", type=int, default=8, choices=range(4, 33), help="layers of the 8B config")
    parser.add_argument("--batch", type=int, default=8, help="prompts in the batched-prefill check")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.lengths = [int(n) for n in args.lengths.split(",")]
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    console = Console(width=140)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    console.print(f"{gpu}, torch {torch.__version__}, {dtype}, budget {args.budget}")
    results = []
    for name, config in configs(max(*args.lengths, 512) + 64, args.big_layers).items():
        result = check_model(name, config, args, device, dtype, console)
        results.append(result)
        console.print(
            f"{name}: identity max |diff| {result['identity_max_abs']:.3g} (tolerance "
            f"{result['identity_tolerance']:.3g}, top-1 agreement {result['identity_top1_agreement']:.1%}), "
            f"generate parity {result['generate_parity']}, policies {result['policies_ok']}, "
            f"{result['seconds']:.0f} s",
            highlight=False,
        )
    table = Table(title=f"Prefill, full vs SnapKV-style reduction at budget {args.budget} ({gpu}, {dtype})")
    for column in ("model", "tokens", "FLOPs speedup", "realised", "realised / FLOPs", "full ms", "reduced ms",
                   "peak GiB full", "peak GiB reduced", "KV ratio"):  # fmt: skip
        table.add_column(column, justify="right")
    for result in results:
        for row in result["lengths"]:
            if "error" in row:
                table.add_row(result["model"], str(row["tokens"]), row["error"], *[""] * 7)
                continue
            table.add_row(
                result["model"], str(row["tokens"]), f"{row['flops_speedup']:.2f}x", f"{row['realised_speedup']:.2f}x",
                f"{row['realised_speedup'] / row['flops_speedup']:.2f}", f"{row['full_ms']:.1f}",
                f"{row['reduced_ms']:.1f}", f"{row['peak_full_gib']:.2f}", f"{row['peak_reduced_gib']:.2f}",
                f"{row['kv_ratio']:.2f}",
            )  # fmt: skip
    console.print(table)
    for result in results:
        batch = result["batch"]
        console.print(
            f"{result['model']}: {batch['size']} prompts of 512 tokens at budget {args.budget}: "
            f"{batch['batch_tokens_per_s']:,.0f} prompt tokens/s batched against {batch['single_tokens_per_s']:,.0f} "
            f"one at a time ({batch['speedup']:.2f}x)",
            highlight=False,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": gpu, "dtype": str(dtype), "results": results}, indent=2))
    failed = [
        r["model"]
        for r in results
        if r["identity_max_abs"] > r["identity_tolerance"] or not (r["generate_parity"] and r["policies_ok"])
    ]
    if failed:
        console.print(f"[red]identity, generate parity or policies failed for {', '.join(failed)}[/]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
