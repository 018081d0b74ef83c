"""The evaluation harness: suites, metrics, records that resume, and the files it publishes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rlprune import load_model, save_policy
from rlprune.cli import app
from rlprune.engine import Reducer
from rlprune.envs import EnvConfig
from rlprune.errors import RLPruneError
from rlprune.eval import FULL, SUITES, EvalConfig, Evaluation, aggregate, evaluate, load_suite, parse_budgets
from rlprune.eval.report import bootstrap_interval, differences
from rlprune.metrics import agreement, degenerate, top_k, unsupported_words
from rlprune.policies import ReductionPolicy

PASSAGE = "The harbour of Saltmarsh is quiet in winter. Boats rest on the shingle and nets dry in the sun. "


def write_suite(path, lines):
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    """A suite as a user would write it: aliases, a bare prompt, no kinds or priors."""
    path = tmp_path_factory.mktemp("suite") / "harbour.jsonl"
    return write_suite(
        path,
        [
            {
                "context": PASSAGE * 3 + "The keeper is Ada Crane.",
                "question": "Who is the keeper?",
                "answer": "Ada Crane",
            },
            {"context": PASSAGE * 2, "question": "What rests on the shingle?", "answers": ["boats", "the boats"]},
            {"prompt": "Write one line about the sea."},
        ],
    )


def test_a_jsonl_suite_written_by_hand_runs_end_to_end(tiny, suite_file, tmp_path):
    model, tokenizer = tiny
    config = EvalConfig(
        str(suite_file),
        model="tiny-random",
        baselines=("snapkv", "tome"),
        budgets=(0.7, 0.85),
        max_new_tokens=4,
        bootstrap_samples=200,
    )
    rows = evaluate(config, tmp_path, model=model, tokenizer=tokenizer, show_progress=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["records"]) == 3 * (1 + 2 * 2)  # items x (full + methods x budgets)
    assert {r["method"] for r in rows} == {FULL, "snapkv", "tome"}
    full = next(r for r in rows if r["method"] == FULL)
    assert full["kl"] == pytest.approx(0.0, abs=1e-6) and full["top1"] == 1.0 and full["flops_ratio"] == 1.0
    assert full["hallucination"] == 0.0  # by definition: its own answer is a source
    for row in rows:
        if row["method"] != FULL:
            assert row["kv_ratio"] < 1.0 and row["kl"] >= 0.0
        assert 0.0 <= row["accuracy"] <= 1.0  # two of three items have gold answers
        low, high = row["accuracy_ci"]
        assert low <= row["accuracy"] <= high
        lengths = [
            r["new_tokens"] for r in results["records"] if (r["method"], r["budget"]) == (row["method"], row["budget"])
        ]
        assert row["mean_new_tokens"] == pytest.approx(sum(lengths) / len(lengths))
    for record in results["records"]:  # a passage leaves room to meet the budget; a bare prompt may not
        if record["index"] < 2 and record["method"] != FULL:
            assert record["flops_ratio"] == pytest.approx(record["budget"], abs=0.08)
    bare = [r for r in results["records"] if r["index"] == 2]
    assert all(r["correct"] is None and r["hallucinated"] is None for r in bare)
    table = (tmp_path / "results.md").read_text()
    assert "| snapkv | 0.7 | 3 |" in table and "prefill speedup" in table and "answer tokens" in table
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert {"method", "budget", "accuracy_low", "accuracy_high", "flops_ratio"} <= set(header)
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_run_redoes_only_unfinished_records(tiny, suite_file, tmp_path, monkeypatch):
    model, tokenizer = tiny
    config = EvalConfig(
        str(suite_file),
        model="tiny-random",
        baselines=("fastv",),
        budgets=(0.5,),
        max_new_tokens=3,
        bootstrap_samples=100,
    )
    evaluate(config, tmp_path, model=model, tokenizer=tokenizer, show_progress=False)
    journal = tmp_path / "records.jsonl"
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 + 3 * 2
    kept = lines[:4]  # header and three records; the next one torn mid-write
    journal.write_text("\n".join(kept) + "\n" + lines[4][: len(lines[4]) // 2])
    calls = []
    original = Reducer.generate
    monkeypatch.setattr(Reducer, "generate", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    evaluation = Evaluation(config, tmp_path, model=model, tokenizer=tokenizer)
    assert evaluation.pending() == 3
    records = evaluation.run(show_progress=False)
    assert len(calls) == 1 + 3  # the warm-up, then exactly the three unfinished records
    assert len(records) == 6 and len({(r["item"], r["method"]) for r in records}) == 6


def test_results_of_other_settings_are_not_mixed(tiny, suite_file, tmp_path):
    model, tokenizer = tiny
    first = EvalConfig(str(suite_file), baselines=("random",), budgets=(0.5,), limit=1, max_new_tokens=2)
    Evaluation(first, tmp_path, model=model, tokenizer=tokenizer).run(show_progress=False)
    other = EvalConfig(str(suite_file), baselines=("random",), budgets=(0.5,), limit=1, max_new_tokens=5)
    with pytest.raises(RLPruneError, match="max_new_tokens"):
        Evaluation(other, tmp_path, model=model, tokenizer=tokenizer)


def test_a_policy_checkpoint_is_evaluated_by_folder_name(tiny, suite_file, tmp_path):
    model, tokenizer = tiny
    save_policy(ReductionPolicy(decision_layers=(1, 2, 3)), tmp_path / "mine", model=model)
    config = EvalConfig(
        str(suite_file),
        policies=(str(tmp_path / "mine"),),
        baselines=(),
        budgets=(0.6,),
        limit=1,
        max_new_tokens=2,
        bootstrap_samples=100,
    )
    rows = evaluate(config, tmp_path / "out", model=model, tokenizer=tokenizer, show_progress=False)
    mine = next(r for r in rows if r["method"] == "mine")  # an untrained policy keeps every token
    assert mine["flops_ratio"] == 1.0 and mine["kl"] == pytest.approx(0.0, abs=1e-5) and mine["top1"] == 1.0


def test_malformed_suite_lines_are_reported_with_their_numbers(tmp_path):
    path = write_suite(tmp_path / "bad.jsonl", [{"question": "ok?", "answer": "yes"}, "{not json", {"answers": "x"}])
    result = CliRunner().invoke(app, ["eval", "--suite", str(path), "--model", "tiny-random", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "line 2: not JSON" in result.output and "line 3:" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budgets", "0.5,1.5"], "(0, 1]"),
        (["--budgets", "half"], "comma-separated numbers"),
        (["--suite", "no-such-suite"], "unknown suite"),
        (["--baselines", "fastvv"], "nor a baseline"),
    ],
)
def test_bad_arguments_get_one_line_errors(args, message, tmp_path):
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-random", "--out", str(tmp_path), *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_parse_budgets():
    assert parse_budgets("0.3, 0.5,0.7") == (0.3, 0.5, 0.7)
    with pytest.raises(RLPruneError):
        parse_budgets("0")


def test_grounded_qa_suite_is_the_training_presets_held_out_test_split():
    _, tasks = load_suite("grounded-qa")
    assert tasks == EnvConfig.load("grounded-qa").tasks.tasks("test")
    train = {t.uid for t in EnvConfig.load("grounded-qa").tasks.tasks("train")}
    assert not train & {t.uid for t in tasks}


def test_every_built_in_suite_loads_and_limit_cuts_it():
    for name, spec in SUITES.items():
        suite, tasks = load_suite(name, limit=5)
        assert suite == name and len(tasks) == 5 and spec.description
    _, counterfactual = load_suite("counterfactual", limit=3)
    assert all(t.prior and t.prior != t.answer for t in counterfactual)
    _, instructions = load_suite("instructions", limit=3)
    assert all(not t.answers for t in instructions)


def test_unsupported_words_ignore_function_words_and_plurals():
    context = "The keeper of the lighthouse is Ada Crane. Boats rest on the shingle."
    assert unsupported_words("The keeper is Ada Crane.", context) == []
    answer = "According to the text, the boat rests in the harbour."
    assert unsupported_words(answer, context, "what rests?") == ["harbour"]
    assert unsupported_words("It is Bob Marley.", context) == ["bob", "marley"]
    assert unsupported_words("It is Bob Marley.", context, "Bob Marley") == []


def test_agreement_is_exact_for_identical_logits_and_detects_a_shift():
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    full = top_k(logits)
    allowed = torch.arange(25)
    same = agreement(logits, full, allowed)
    assert same.kl == pytest.approx(0.0, abs=1e-6) and same.top1 == 1.0
    expected_mass = 1 - logits.softmax(-1)[:, :25].sum(-1).mean().item()
    assert same.out_of_context_mass == pytest.approx(expected_mass, abs=1e-6)
    shifted = agreement(logits.roll(1, dims=-1), full, allowed)
    assert shifted.kl > 0.1 and shifted.top1 < 1.0


def test_bootstrap_interval_covers_the_mean_and_keeps_pairs():
    rng = np.random.default_rng(1)
    values = rng.random(200)
    low, high = bootstrap_interval([values], np.mean, samples=500)
    assert low < values.mean() < high and high - low < 0.2
    assert bootstrap_interval([[3.0] * 10], np.mean, samples=100) == (3.0, 3.0)
    full = rng.random(50) + 1
    reduced = full / 2  # every item exactly twice as fast: any resample of pairs says 2
    low, high = bootstrap_interval([full, reduced], lambda a, b: a.sum() / b.sum(), samples=200)
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)


def test_speedups_pair_each_method_with_the_full_model_on_the_same_items():
    def record(item, method, budget, prefill, decode, tokens=5):
        return {
            "item": item,
            "method": method,
            "budget": budget,
            "correct": True,
            "hallucinated": False,
            "unsupported": [],
            "said_prior": None,
            "out_of_context_mass": 0.1,
            "kl": 0.0,
            "top1": 1.0,
            "flops_ratio": 1.0 if budget is None else budget,
            "kv_ratio": 1.0,
            "prefill_s": prefill,
            "decode_s": decode,
            "new_tokens": tokens,
            "answer": "It is Ada.",
            "kind": "grounded",
        }

    records = [record("a", FULL, None, 1.0, 1.0), record("b", FULL, None, 3.0, 1.0), record("c", FULL, None, 1, 1)]
    records += [record("a", "m", 0.5, 0.5, 0.5), record("b", "m", 0.5, 1.5, 0.5)]
    records += [record("c", "m", 0.5, 9.0, 0.5)]  # one record slowed down by a busy machine
    rows = {r["method"]: r for r in aggregate(records, samples=100)}
    assert rows["m"]["prefill_speedup"] == pytest.approx(2.0)  # the median of 2, 2 and 1/9
    assert rows["m"]["decode_speedup"] == pytest.approx(2.0)
    assert rows[FULL]["prefill_speedup"] == pytest.approx(1.0)
    assert rows["m"]["said_prior"] is None and rows["m"]["said_prior_ci"] is None


def test_degeneration_means_a_repeated_run_of_eight_words():
    assert not degenerate("The last lighthouse keeper was Tobias Wren.")
    loop = "The lighthouse on the northern headland was automated in 1953, and the "
    assert degenerate("Tobias Wren, a man named / " + loop + loop)
    assert not degenerate("one two three four five six seven one two three four five six eight")


def test_paired_differences_compare_the_same_items():
    def record(item, method, budget, correct):
        return {"item": item, "method": method, "budget": budget, "correct": correct}

    items = [f"i{k}" for k in range(120)]
    records = [record(i, FULL, None, True) for i in items]
    records += [record(i, "policy", 0.5, k % 4 != 0) for k, i in enumerate(items)]  # 75%
    records += [record(i, "base", 0.5, k % 2 == 0) for k, i in enumerate(items)]  # 50%, overlapping
    rows = {r["versus"]: r for r in differences(records, "policy", samples=300)}
    assert rows["base"]["difference"] == pytest.approx(0.25) and rows["base"]["items"] == 120
    assert 0 < rows["base"]["difference_ci"][0] < 0.25 < rows["base"]["difference_ci"][1]
    assert rows[FULL]["difference"] == pytest.approx(-0.25) and rows[FULL]["difference_ci"][1] < 0


def test_a_batched_evaluation_records_what_one_item_at_a_time_records(tiny, suite_file, tmp_path):
    """Items generated together get the same answers and scores; each is still journalled on its own."""
    model, tokenizer = tiny
    records = {}
    for size in (1, 3):
        config = EvalConfig(
            str(suite_file), model="tiny-random", baselines=("snapkv",), budgets=(0.6,), max_new_tokens=5,
            bootstrap_samples=100, batch_size=size,
        )  # fmt: skip
        evaluate(config, tmp_path / str(size), model=model, tokenizer=tokenizer, show_progress=False)
        records[size] = json.loads((tmp_path / str(size) / "results.json").read_text())["records"]
    assert len(records[1]) == len(records[3]) == 3 * 2
    for one, batched in zip(records[1], records[3], strict=True):
        assert (one["item"], one["method"], one["answer"]) == (batched["item"], batched["method"], batched["answer"])
        assert one["flops_ratio"] == pytest.approx(batched["flops_ratio"])
        assert one["kl"] == pytest.approx(batched["kl"], abs=1e-4)
        assert (one["batch"], batched["batch"]) == (1, 3)


def test_jsonl_lines_with_extra_fields_evaluate_and_group_by_splits_the_tables(tiny, tmp_path):
    model, tokenizer = tiny
    lines = [
        {"id": f"q{i}", "kind": "near" if i % 2 else "far", "source": "hand", "context": PASSAGE * (2 + i),
         "question": "Who is the keeper?", "answer": "Ada"}
        for i in range(4)
    ]  # fmt: skip
    suite = write_suite(tmp_path / "extra.jsonl", lines)
    config = EvalConfig(str(suite), model="tiny-random", baselines=("snapkv",), budgets=(0.6,), max_new_tokens=3,
                        bootstrap_samples=100, group_by="kind")  # fmt: skip
    evaluate(config, tmp_path / "out", model=model, tokenizer=tokenizer, show_progress=False)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(results["by_kind"]) == ["far", "near"]  # the line's own kind, not the task type
    assert all(row["items"] == 2 for rows in results["by_kind"].values() for row in rows)
    assert {r["meta"]["id"] for r in results["records"]} == {"q0", "q1", "q2", "q3"}
    text = (tmp_path / "out" / "results.md").read_text()
    assert "near (2 items)" in text and "far (2 items)" in text
    evaluate(
        EvalConfig(**{**vars(config), "group_by": "source"}), tmp_path / "out", model=model, tokenizer=tokenizer,
        show_progress=False,
    )  # fmt: skip
    assert json.loads((tmp_path / "out" / "results.json").read_text())["by_source"] == {}  # one group: no split


def test_evaluation_runs_without_gymnasium(tmp_path):
    """Evaluation has nothing to do with RL: it imports and runs with gymnasium blocked."""
    import subprocess
    import sys

    suite = write_suite(tmp_path / "s.jsonl", [{"context": PASSAGE * 2, "question": "Who?", "answer": "Ada"}])
    args = ["eval", "--suite", str(suite), "--model", "tiny-random", "--baselines", "snapkv", "--budgets", "0.5",
            "--max-new-tokens", "3", "--bootstrap", "100", "--out", str(tmp_path / "o")]  # fmt: skip
    code = (
        "import sys; sys.modules['gymnasium'] = None\n"
        "from typer.testing import CliRunner\n"
        "from rlprune.cli import app\n"
        f"r = CliRunner().invoke(app, {args!r})\n"
        "print(r.exit_code, r.output[-300:])\n"
        "assert 'gymnasium' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("0 "), done.stdout + done.stderr
    assert (tmp_path / "o" / "results.json").is_file()


def test_a_long_context_grid_gets_a_heatmap_and_groups_by_length(tiny, tmp_path, monkeypatch):
    from rlprune.data.long import LongSuite
    from rlprune.eval import suites

    monkeypatch.setitem(
        suites.SUITES, "niah-tiny", LongSuite("niah", lengths=(150, 300), depths=(0.0, 1.0), per_cell=1)
    )
    model, tokenizer = tiny
    config = EvalConfig("niah-tiny", model="tiny-random", baselines=("snapkv",), budgets=(0.6,), max_new_tokens=3,
                        bootstrap_samples=100, group_by="length")  # fmt: skip
    evaluate(config, tmp_path, model=model, tokenizer=tokenizer, show_progress=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(results["by_length"]) == ["150", "300"]
    assert {r["meta"]["depth"] for r in results["records"]} == {0.0, 1.0}
    assert (tmp_path / "heatmap.png").stat().st_size > 10_000


def test_per_cell_and_depths_reshape_a_long_grid_and_agreement_can_be_skipped(tiny, tmp_path, monkeypatch):
    from rlprune.data.long import LongSuite
    from rlprune.eval import suites

    monkeypatch.setitem(suites.SUITES, "niah-tiny", LongSuite("niah", lengths=(150, 300), per_cell=2))
    _, tasks = suites.load_suite("niah-tiny", per_cell=1, depths=(0.0, 1.0))
    assert [(t.meta["length"], t.meta["depth"]) for t in tasks] == [(150, 0.0), (150, 1.0), (300, 0.0), (300, 1.0)]
    for bad in ({"per_cell": 1, "spec": "grounded-qa"}, {"depths": (0.5, 1.5)}, {"per_cell": 0}):
        with pytest.raises(RLPruneError, match="per-cell|depths"):
            suites.load_suite(bad.pop("spec", "niah-tiny"), **bad)

    model, tokenizer = tiny
    config = EvalConfig("niah-tiny", model="tiny-random", baselines=("snapkv",), budgets=(0.6,), max_new_tokens=3,
                        bootstrap_samples=100, per_cell=1, depths=(0.5,), agreement=False)  # fmt: skip
    rows = evaluate(config, tmp_path, model=model, tokenizer=tokenizer, show_progress=False)
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert len(records) == 4 and all(r["kl"] is None and r["top1"] is None for r in records)
    assert all(r["kl"] is None and r["flops_ratio"] is not None for r in rows)
    agreeing = replace(config, agreement=True)
    with pytest.raises(RLPruneError, match="other settings.*agreement"):  # records of both kinds never mix
        evaluate(agreeing, tmp_path, model=model, tokenizer=tokenizer, show_progress=False)


def test_time_to_first_token_is_reported_by_prompt_length():
    from rlprune.eval.report import length_bucket, speed_by_length

    assert [length_bucket(n) for n in (10, 512, 513, 4096, 9000)] == [
        "1-512",
        "1-512",
        "513-1024",
        "2049-4096",
        ">8192",
    ]
    records = [
        {"item": i, "method": method, "budget": budget, "prompt_tokens": tokens, "prefill_s": seconds,
         "decode_s": 1.0, "new_tokens": 11}
        for i, tokens in enumerate((300, 400, 1500))
        for method, budget, seconds in ((FULL, None, tokens / 1000), ("snapkv", 0.5, tokens / 2000))
    ]  # fmt: skip
    rows = speed_by_length(records)
    assert [(r["bucket"], r["method"]) for r in rows] == [
        ("1-512", FULL), ("1-512", "snapkv"), ("1025-2048", FULL), ("1025-2048", "snapkv")
    ]  # fmt: skip
    assert rows[0]["items"] == 2 and rows[0]["ttft_ms"] == pytest.approx(350.0)
    assert rows[1]["ttft_speedup"] == pytest.approx(2.0) and rows[0]["ttft_speedup"] == pytest.approx(1.0)
    assert rows[3]["decode_tok_s"] == pytest.approx(10.0)


def test_evidence_only_records_what_generation_records_without_generating(tiny, suite_file, tmp_path, monkeypatch):
    """The evidence and FLOPs of an evidence-only run equal those of a full run; nothing is generated."""
    model, tokenizer = tiny
    base = EvalConfig(str(suite_file), baselines=("snapkv", "snapkv:pool=-2:+6"), budgets=(0.7,), max_new_tokens=3,
                      bootstrap_samples=100, agreement=False)  # fmt: skip
    generated = Evaluation(base, tmp_path / "gen", model=model, tokenizer=tokenizer).run(show_progress=False)
    monkeypatch.setattr(Reducer, "generate", lambda *a, **k: pytest.fail("an evidence-only run generated"))
    only = replace(base, evidence_only=True)
    rows = evaluate(only, tmp_path / "ev", model=model, tokenizer=tokenizer, show_progress=False)
    records = json.loads((tmp_path / "ev" / "results.json").read_text())["records"]
    key = lambda r: (r["item"], r["method"], r["budget"])  # noqa: E731
    by_key = {key(r): r for r in generated}
    assert len(records) == len(generated) == 3 * 3
    for record in records:
        assert record["answer"] is None and record["correct"] is None
        twin = by_key[key(record)]
        assert record["evidence"] == twin["evidence"] and record["evidence_share"] == twin["evidence_share"]
        assert record["flops_ratio"] == pytest.approx(twin["flops_ratio"], abs=1e-9)
        assert record["kv_ratio"] == pytest.approx(twin["kv_ratio"], abs=1e-9)
    assert [r["evidence"] for r in records if r["index"] == 2] == [None] * 3  # a bare prompt has no evidence
    full = next(r for r in rows if r["method"] == FULL)
    assert full["evidence"] == 1.0 and full["accuracy"] is None
    assert "evidence kept" in (tmp_path / "ev" / "results.md").read_text()
    with pytest.raises(RLPruneError, match="evidence_only"):  # never mixed with generated records
        Evaluation(base, tmp_path / "ev", model=model, tokenizer=tokenizer)


POOLED = Path(__file__).resolve().parents[1] / "benchmarks" / "pooled_comparison.py"
PUBLISHED = Path(__file__).resolve().parents[1] / "eval" / "results" / "heldout-pool" / "results.json"


def _pooled(folders: list[Path], method: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(POOLED), *map(str, folders), "--method", method, "--bootstrap", "20", *extra]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _folder(path: Path, records: list[dict]) -> Path:
    path.mkdir()
    (path / "results.json").write_text(json.dumps({"records": records}))
    return path


def test_pooling_two_folders_counts_the_records_they_share_once(tmp_path):
    records = json.loads(PUBLISHED.read_text())["records"]
    items = sorted({r["item"] for r in records})[:40]
    records = [r for r in records if r["item"] in items]
    full = [r for r in records if r["method"] == FULL]
    ours, theirs = "runs/span-rl/policy", "runs/span-sup/policy"
    whole = _folder(tmp_path / "whole", [r for r in records if r["method"] in (FULL, ours, theirs)])
    first = _folder(tmp_path / "first", full + [r for r in records if r["method"] == ours])
    second = _folder(tmp_path / "second", full + [r for r in records if r["method"] == theirs])
    one, two = _pooled([whole], ours), _pooled([first, second], ours)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    tables = [[line for line in run.stdout.splitlines() if "pooled from" not in line] for run in (one, two)]
    assert tables[0] == tables[1]
    assert "full model" in one.stdout and "40 items" in one.stdout
    ours_correct = {(r["item"], r["budget"]): r["correct"] for r in records if r["method"] == ours}
    theirs_correct = {(r["item"], r["budget"]): r["correct"] for r in records if r["method"] == theirs}
    for budget in (0.3, 0.5):  # the won and lost items of both halves add up to the accuracy difference
        prefix = f"| {ours} | {theirs} | {budget} |"
        lines = [line for line in one.stdout.splitlines() if line.startswith(prefix)]
        rows = [re.findall(r"(\d+) / (\d+) \(\d+\)", line) for line in lines]
        won_lost = [int(count) for pair in next(row for row in rows if row) for count in pair]
        net = sum(ours_correct[i, budget] - theirs_correct[i, budget] for i in items)
        assert won_lost[0] - won_lost[1] + won_lost[2] - won_lost[3] == net


def test_pooling_counts_per_suite_the_items_a_method_misses_where_the_full_model_answers(tmp_path):
    records = json.loads(PUBLISHED.read_text())["records"]
    run = _pooled([_folder(tmp_path / "pool", records)], "runs/span-rl/policy")
    assert run.returncode == 0, run.stderr
    full = {r["item"]: r["correct"] for r in records if r["method"] == FULL}
    for method in ("runs/span-rl/policy", "best-static:mixed-hard"):
        for budget in (0.3, 0.5):
            prefix = f"| {method} | {budget} | "
            line = next(x for x in run.stdout.splitlines() if x.startswith(prefix) and "kept)" in x)
            total, *cells = line.strip("| ").split(" | ")[2:]
            counts = [tuple(map(int, re.fullmatch(r"(\d+) \((\d+) kept\)", cell).groups())) for cell in cells]
            mine = [r for r in records if r["method"] == method and r["budget"] == budget and full[r["item"]]]
            assert int(total) == sum(n for n, _ in counts) == sum(not r["correct"] for r in mine)
            assert sum(kept for _, kept in counts) == sum(not r["correct"] and r["evidence"] for r in mine)


def test_pooling_refuses_two_checkpoints_under_one_name(tmp_path):
    records = [r for r in json.loads(PUBLISHED.read_text())["records"] if r["method"] == "runs/span-rl/policy"][:4]
    other = [{**r, "method_id": "another checkpoint"} for r in records]
    run = _pooled([_folder(tmp_path / "a", records), _folder(tmp_path / "b", other)], "runs/span-rl/policy")
    assert run.returncode != 0 and "two checkpoints are named" in run.stderr
    apart = [{**r, "item": f"{r['item']}-b"} for r in other]  # the other folder's items, under their own ids
    folders = [_folder(tmp_path / "c", records), _folder(tmp_path / "d", apart)]
    same = _pooled(folders, "runs/span-rl/policy", "--same", "runs/span-rl/policy")
    assert same.returncode == 0, same.stderr
    items = 2 * len({r["item"] for r in records})
    assert f"{items} items pooled" in same.stdout  # both folders' records, declared one policy
