"""Hostile files: only regular files are read, never past a bound, and strict JSON is strict.

A FIFO, a device, a socket or a folder where a file is expected is refused at once (an alarm fails
a test that would block), a file bigger than its bound is refused while reading, JSON nested deeper
than the bound or repeating a key is refused naming the problem, a policy config with a key this
release does not know is refused, and a learned policy used without a budget runs at its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import tiny_model
from typer.testing import CliRunner

from hostile.test_inputs_and_faults import assert_clean_error, invoke
from rlprune.config import ConfigError, load_toml
from rlprune.data.tasks import load_jsonl
from rlprune.engine.policy import run_budget
from rlprune.errors import InvalidActionError, RLPruneError
from rlprune.io import MAX_JSON_DEPTH, JSONError, check_regular_file, parse_json, read_bytes, read_json, read_text
from rlprune.policies import (
    PolicyError,
    ReductionPolicy,
    SpanHeadPolicy,
    TokenReductionPolicy,
    load_policy,
    make_baseline,
    save_policy,
)
from rlprune.policies.kinds import KINDS

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "town ?"
runner = CliRunner()


@pytest.fixture(autouse=True)
def no_blocking():
    """Fail, instead of hanging, a test whose read blocks (a FIFO opened for reading waits for a writer)."""

    def expire(*_):
        raise TimeoutError("a read blocked: a FIFO or device was opened as a file")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# -- what can stand where a file is expected ----------------------------------------------------


def fifo(path: Path) -> None:
    os.mkfifo(path)


def fifo_link(path: Path) -> None:
    os.mkfifo(path.with_name(path.name + ".pipe"))
    path.symlink_to(path.with_name(path.name + ".pipe"))


def zero_link(path: Path) -> None:
    path.symlink_to("/dev/zero")


def null_link(path: Path) -> None:
    path.symlink_to("/dev/null")


def folder(path: Path) -> None:
    path.mkdir()


def unix_socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays


def dangling(path: Path) -> None:
    path.symlink_to(path.with_name("nowhere"))


Maker = Callable[[Path], None]
NOT_FILES: list[tuple[str, Maker, str]] = [
    ("fifo", fifo, "is a FIFO (named pipe), not a regular file"),
    ("symlink-to-fifo", fifo_link, "is a FIFO (named pipe), not a regular file"),
    ("symlink-to-dev-zero", zero_link, "is a character device, not a regular file"),
    ("symlink-to-dev-null", null_link, "is a character device, not a regular file"),
    ("folder", folder, "is a folder, not a regular file"),
    ("socket", unix_socket, "is a socket, not a regular file"),
    ("dangling-symlink", dangling, "does not exist"),
    ("missing", lambda path: None, "does not exist"),
]


@pytest.mark.parametrize(("make", "message"), [c[1:] for c in NOT_FILES], ids=[c[0] for c in NOT_FILES])
def test_only_regular_files_are_read(tmp_path, make, message):
    path = tmp_path / "context.txt"
    make(path)
    for read in (read_text, read_bytes, check_regular_file):
        with pytest.raises(RLPruneError) as raised:
            read(path, "context file")
        assert str(raised.value).startswith(f"context file {path} ") and message in str(raised.value)


@pytest.mark.parametrize(("size", "limit", "refused"), [(10, 10, False), (11, 10, True), (5 << 20, 4 << 20, True)])
def test_reads_stop_at_their_limit(tmp_path, size, limit, refused):
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * size)
    if not refused:
        assert read_text(path, "context file", limit) == "x" * size
        return
    with pytest.raises(RLPruneError, match=f"context file {path} is too big: over the .* a context file may hold"):
        read_text(path, "context file", limit)


def test_the_limit_holds_while_reading_whatever_stat_says(tmp_path, monkeypatch):
    """A file that grows after the size check is still cut off at the limit, not read whole."""
    path = tmp_path / "growing.txt"
    path.write_bytes(b"x" * 5)
    monkeypatch.setattr("rlprune.io.check_regular_file", lambda *args: None)  # as if stat had said 0 bytes
    path.write_bytes(b"x" * 100)
    with pytest.raises(RLPruneError, match="too big: over the 10 bytes"):
        read_bytes(path, "context file", 10)


# -- every reader of the product refuses them ---------------------------------------------------


def _context(tmp_path: Path, make: Maker, tiny_model_dir: Path):
    make(tmp_path / "context.txt")
    return invoke("generate", QUESTION, "--raw", "--context", f"@{tmp_path / 'context.txt'}", "--model", tiny_model_dir)


def _prompts(tmp_path: Path, make: Maker, tiny_model_dir: Path):
    make(tmp_path / "prompts.jsonl")
    return invoke("generate", f"@{tmp_path / 'prompts.jsonl'}", "--model", tiny_model_dir, "--max-new-tokens", 2)


def _suite(tmp_path: Path, make: Maker, tiny_model_dir: Path):
    make(tmp_path / "suite.jsonl")
    return invoke("eval", "--suite", tmp_path / "suite.jsonl", "--model", tiny_model_dir, "--out", tmp_path / "out")


def _policy_file(name: str):
    def run(tmp_path: Path, make: Maker, tiny_model_dir: Path):
        policy = save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "policy", model=tiny_model("llama"))
        (policy / name).unlink()
        make(policy / name)
        return invoke("generate", QUESTION, "--raw", "--policy", policy, "--budget", 0.5, "--model", tiny_model_dir)

    return run


READERS = {
    "context": _context,
    "prompt-file": _prompts,
    "suite": _suite,
    "policy-config": _policy_file("config.json"),
    "policy-weights": _policy_file("policy.safetensors"),
}


@pytest.mark.parametrize("make", [fifo, zero_link], ids=["fifo", "dev-zero"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_the_cli_refuses_fifos_and_devices_in_one_line(tmp_path, tiny_model_dir, reader, make):
    result = READERS[reader](tmp_path, make, tiny_model_dir)
    kind = "FIFO (named pipe)" if make is fifo else "character device"
    assert_clean_error(result, f"is a {kind}, not a regular file")


@pytest.mark.parametrize("make", [fifo, zero_link, folder], ids=["fifo", "dev-zero", "folder"])
def test_presets_and_recipes_must_be_regular_files(tmp_path, make):
    path = tmp_path / "preset.toml"
    make(path)
    with pytest.raises(ConfigError, match=f"TOML file {path} cannot be read: it is a"):
        load_toml(path)


def test_a_huge_or_deeply_nested_toml_is_refused(tmp_path):
    path = tmp_path / "preset.toml"
    path.write_text("a = " + "[" * 100_000)
    with pytest.raises(ConfigError, match="nest too deeply"):
        load_toml(path)
    path.write_text("# " + "x" * (1 << 20))
    with pytest.raises(ConfigError, match="too big: over the 1 MiB"):
        load_toml(path)


def test_a_best_static_table_that_is_a_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "table.json")
    with pytest.raises(RLPruneError, match="no best-static table at"):
        make_baseline(f"best-static:{tmp_path / 'table.json'}")


def test_a_run_file_is_strict_json(tmp_path):
    from rlprune.train.common.folder import RunFolderError, read_run_meta

    (tmp_path / "run.json").write_text(json.dumps({"recipe": {}, "env": "smoke", "x": [[[1]]]}))
    assert read_run_meta(tmp_path)["env"] == "smoke"
    (tmp_path / "run.json").write_text('{"recipe": {}, "env": "smoke", "env": "other"}')
    with pytest.raises(RunFolderError, match="key 'env' appears twice"):
        read_run_meta(tmp_path)


# -- strict JSON -------------------------------------------------------------------------------

JSON_CASES = [
    ("depth-at-bound", "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, None),
    ("depth-over-bound", "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "65 levels deep"),
    ("objects-over-bound", '{"a":' * 65 + "1" + "}" * 65, "deeper than the 64 allowed"),
    ("hundred-thousand-deep", "[" * 100_000 + "]" * 100_000, "deeper than the 64 allowed"),
    ("unclosed-deep", "[" * 100_000, "deeper than the 64 allowed"),
    ("brackets-in-strings", json.dumps({"a": "[[[[" * 100, "b": '\\"[{' * 100}), None),
    ("repeated-key", '{"a": 1, "a": 2}', "key 'a' appears twice in one object"),
    ("repeated-nested-key", '{"a": {"b": 1, "c": 2, "b": 3}}', "key 'b' appears twice"),
    ("same-key-in-two-objects", '[{"a": 1}, {"a": 2}]', None),
    ("not-json", "{nope", "Expecting property name"),
    ("empty", "", "Expecting value"),
    ("huge-integer", "1" * 5000, "digits"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES])
def test_json_is_parsed_strictly(text, message):
    if message is None:
        assert parse_json(text) == json.loads(text)
        return
    with pytest.raises(JSONError) as raised:
        parse_json(text)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_bytes(b'{"x": "\xff"}')
    with pytest.raises(JSONError, match=f"run file {path} is not valid JSON: not UTF-8 text"):
        read_json(path, "run file")


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (['{"question": "q", "question": "r"}'], "line 1: not JSON (key 'question' appears twice"),
        (['{"question": "q"}', '{"question": "q", "meta": {"k": 1, "k": 2}}'], "line 2: not JSON (key 'k' appears"),
        (['{"question": "q"}', "[" * 5000 + "]" * 5000], "line 2: not JSON (arrays or objects nest 5000 levels"),
    ],
    ids=["repeated-field", "repeated-nested-key", "deep-line"],
)
def test_suite_lines_are_strict_json(tmp_path, lines, problem):
    path = tmp_path / "suite.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RLPruneError, match="malformed line") as raised:
        load_jsonl(path)
    assert problem in str(raised.value)


def test_a_deeply_nested_policy_config_is_one_error_line(tmp_path, tiny_model_dir):
    policy = save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "p", model=tiny_model("llama"))
    (policy / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    result = invoke("generate", QUESTION, "--raw", "--policy", policy, "--budget", 0.5, "--model", tiny_model_dir)
    assert_clean_error(result, "is not valid JSON (arrays or objects nest 100000 levels deep")


# -- policy configs: no unknown keys -----------------------------------------------------------


def _saved(kind: str, folder: Path) -> Path:
    policies = {
        "layer": lambda: ReductionPolicy(decision_layers=(1, 2)),
        "token": lambda: TokenReductionPolicy(decision_layers=(1, 2)),
        "span": lambda: SpanHeadPolicy(64, decision_layer=2, rank=4, channels=2, kernel=3),
    }
    return save_policy(policies[kind](), folder, model=tiny_model("llama"))


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("layer", "extra"),
        ("token", "notes"),
        ("span", "action_spec"),
        ("span", "default_budget"),  # a span head keeps it in network
        ("layer", "Format"),
    ],
)
def test_unknown_top_level_keys_are_refused(tmp_path, kind, key):
    folder = _saved(kind, tmp_path / "p")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {key: 0.5}))
    with pytest.raises(PolicyError) as raised:
        load_policy(folder)
    message = str(raised.value)
    assert f"unknown key {key!r}" in message and f"a {kind}-level policy's keys are" in message
    assert all(known in message for known in KINDS[kind].top_keys)


@pytest.mark.parametrize("value", [0, -0.5, 1.5, True, "0.5", float("nan"), [0.5]])
def test_a_bad_default_budget_is_refused(tmp_path, value):
    folder = _saved("layer", tmp_path / "p")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"default_budget": value}))
    with pytest.raises(PolicyError, match="default_budget is .*; budgets lie in"):
        load_policy(folder)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "policies").iterdir() if p.is_dir()))
def test_every_shipped_policy_loads_with_its_own_budget(name):
    policy = load_policy(ROOT / "policies" / name)
    assert 0 < policy.default_budget <= 1
    assert run_budget(policy, None) == policy.default_budget and run_budget(policy, 0.3) == 0.3


# -- a learned policy without a budget runs at its own ------------------------------------------

VALIDATED = {"validation": {"per_budget": {"0.4": 0.41, "0.6": 0.6, "0.8": 0.79}}}


@pytest.mark.parametrize(
    ("training", "own", "expected"),
    [
        (VALIDATED, None, 0.6),  # the median of the budgets it was validated at
        ({"validation": {"per_budget": {"0.3": 0.3, "0.5": 0.5}}}, None, 0.4),
        (VALIDATED, 0.35, 0.35),  # one set on the policy wins
        ({}, None, None),  # training's own checkpoints before validation record none
    ],
    ids=["median-of-three", "median-of-two", "set-on-policy", "none"],
)
def test_the_default_budget_is_recorded_and_restored(tmp_path, training, own, expected):
    policy = ReductionPolicy(decision_layers=(1, 2))
    policy.default_budget = own
    folder = save_policy(policy, tmp_path / "p", model=tiny_model("llama"), training=training)
    assert json.loads((folder / "config.json").read_text())["default_budget"] == expected
    assert load_policy(folder).default_budget == expected


def test_an_older_checkpoint_falls_back_to_its_validation_budgets(tmp_path):
    folder = save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "p", training=VALIDATED)
    config = json.loads((folder / "config.json").read_text())
    del config["default_budget"]
    (folder / "config.json").write_text(json.dumps(config))
    assert load_policy(folder).default_budget == 0.6


def test_a_learned_policy_without_any_budget_is_refused():
    with pytest.raises(InvalidActionError, match="records no budget of its own; give one \\(--budget"):
        run_budget(ReductionPolicy(decision_layers=(1, 2)), None)
    assert run_budget(make_baseline("snapkv"), None) is None  # rule-based methods keep their own ratios


@pytest.fixture
def seen_budgets(monkeypatch) -> list[tuple[float, float | None]]:
    """(observed, passed) budgets of every call of a layer policy's ``act``."""
    seen, act = [], ReductionPolicy.act

    def spy(self, features, budget, deterministic=True):
        seen.append((features.budget, budget))
        return act(self, features, budget, deterministic)

    monkeypatch.setattr(ReductionPolicy, "act", spy)
    return seen


@pytest.mark.parametrize(("given", "expected"), [([], 0.6), (["--budget", "0.45"], 0.45)], ids=["own", "given"])
def test_generate_without_budget_runs_a_learned_policy_at_its_own(
    tmp_path, tiny_model_dir, seen_budgets, given, expected
):
    policy = save_policy(
        ReductionPolicy(decision_layers=(1, 2)), tmp_path / "p", model=tiny_model("llama"), training=VALIDATED
    )
    result = invoke(
        "generate",
        QUESTION,
        "--raw",
        "--context",
        "the town . " * 10,
        "--policy",
        policy,
        *given,
        "--model",
        tiny_model_dir,
        "--max-new-tokens",
        2,
        "--repeats",
        1,
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["budget"] == expected
    assert seen_budgets and all(seen == (expected, expected) for seen in seen_budgets)


def test_generate_refuses_a_learned_policy_that_records_no_budget(tmp_path, tiny_model_dir):
    policy = save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "p", model=tiny_model("llama"))
    result = invoke("generate", QUESTION, "--raw", "--policy", policy, "--model", tiny_model_dir)
    assert_clean_error(result, "records no budget of its own; give one (--budget")


def test_the_python_api_runs_a_learned_policy_at_its_own_budget(tmp_path, seen_budgets):
    from conftest import tiny_tokenizer

    from rlprune import generate

    model = tiny_model("llama")
    folder = save_policy(ReductionPolicy(decision_layers=(1, 2)), tmp_path / "p", model=model, training=VALIDATED)
    generate(model, tiny_tokenizer(), QUESTION, policy=folder, budget=None, context="the town .", max_new_tokens=1)
    assert seen_budgets and all(seen == (0.6, 0.6) for seen in seen_budgets)
