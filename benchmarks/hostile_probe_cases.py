"""The cases of benchmarks/hostile_probe.py, by kind: policies meeting the wrong model, suite text,
output paths, baseline specs and list options."""

from __future__ import annotations

import json
import os

from hostile_probe import CONTEXT, EITHER, OK, QUESTION, REFUSE, Probe

import rlprune
from rlprune.data.tasks import Task, answer_correct, load_jsonl
from rlprune.policies import (
    ReductionPolicy,
    SpanHeadPolicy,
    TokenReductionPolicy,
    load_policy,
    resolve_policy,
)

ROOT = os.geteuid() == 0
"""Permissions do not bind root: the cases that need them are left out."""
LATER = {"rank": 4, "channels": 4, "kernel": 3, "min_keep": 0.3}


def add_all(probe: Probe) -> None:
    from hostile_probe_options import baselines, blocks, options, paths  # noqa: PLC0415 - beside this file

    policies(probe)
    checkpoints(probe)
    suites(probe)
    grading(probe)
    paths(probe)
    baselines(probe)
    options(probe)
    blocks(probe)


# -- a policy object meets the model ----------------------------------------------------------------


def policies(p: Probe) -> None:
    m, t = p.model, p.tokenizer

    def gen(policy, **kw):
        return lambda: rlprune.generate(m, t, QUESTION, context=CONTEXT, policy=policy(), max_new_tokens=2, **kw)

    def applied(policy):
        def run():
            with rlprune.apply(m, policy(), budget=0.5):
                m(p.ids)

        return run

    foreign = {
        "span-layer-negative": (lambda: SpanHeadPolicy(64, -1), "decision_layer"),
        "span-layer-99": (lambda: SpanHeadPolicy(64, 99), "decision_layer"),
        "span-width-32": (lambda: SpanHeadPolicy(32, 1), "hidden_size"),
        "span-width-128-later": (lambda: SpanHeadPolicy(128, 1, later={"decision_layer": 2, **LATER}), "hidden_size"),
        "span-later-equal": (lambda: SpanHeadPolicy(64, 2, later={"decision_layer": 2, **LATER}), "later"),
        "span-later-before": (lambda: SpanHeadPolicy(64, 2, later={"decision_layer": 1, **LATER}), "later"),
        "span-later-negative": (lambda: SpanHeadPolicy(64, 1, later={"decision_layer": -2, **LATER}), "later"),
        "span-sentence-ends-259": (
            lambda: SpanHeadPolicy(64, 1, unit="sentence", sentence_ends=[259]),
            "sentence_ends",
        ),
        "span-sentence-ends-negative": (
            lambda: SpanHeadPolicy(64, 1, unit="sentence", sentence_ends=[-1]),
            "sentence_ends",
        ),
        "span-budget-grid-zero": (
            lambda: SpanHeadPolicy(64, 1, budget_grid=(0.0, 0.5), budget_hidden=(8,)),
            "budget_grid",
        ),
        "span-budget-grid-above-one": (
            lambda: SpanHeadPolicy(64, 1, budget_grid=(0.5, 1.5), budget_hidden=(8,)),
            "budget_grid",
        ),
        "layer-policy-negative": (lambda: ReductionPolicy(hidden=(8,), decision_layers=(-1, 2)), "decision_layers"),
        "layer-policy-empty": (lambda: ReductionPolicy(hidden=(8,), decision_layers=()), "decision_layers"),
    }
    for name, (build, field) in foreign.items():
        p.add(f"{name}/generate", "policy", gen(build), REFUSE, field)
        p.add(f"{name}/apply", "policy", applied(build), REFUSE, field)
        p.add(f"{name}/resolve", "policy", lambda b=build: resolve_policy(b(), m), REFUSE, field)
    fitting = {
        "span-layer-3": lambda: SpanHeadPolicy(64, 3),
        "span-later-3": lambda: SpanHeadPolicy(64, 1, later={"decision_layer": 3, **LATER}),
        "span-sentence-ends-258": lambda: SpanHeadPolicy(64, 1, unit="sentence", sentence_ends=[4, 258]),
        "layer-policy-0-3": lambda: ReductionPolicy(hidden=(8,), decision_layers=(0, 3)),
    }
    fitting["token-policy-unsorted"] = lambda: TokenReductionPolicy(hidden=(8,), decision_layers=(3, 1))
    fitting["token-policy-repeated"] = lambda: TokenReductionPolicy(hidden=(8,), decision_layers=(2, 2))
    for name, build in fitting.items():
        p.add(f"{name}/generate", "policy", gen(build), OK)
        p.add(f"{name}/apply", "policy", applied(build), OK)


# -- a checkpoint edited by hand ----------------------------------------------------------------------


def checkpoints(p: Probe) -> None:
    m = p.model

    def edit(config: dict, path: str, value: object) -> None:
        keys = path.split(".")
        node = config
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    span = lambda: SpanHeadPolicy(64, 1)  # noqa: E731
    later = lambda: SpanHeadPolicy(64, 1, later={"decision_layer": 2, **LATER})  # noqa: E731
    edits = {
        "hidden-size-string": (span, "network.hidden_size", "64", "hidden_size"),
        "decision-layer-float": (span, "network.decision_layer", 1.5, "decision_layer"),
        "decision-layer-null": (span, "network.decision_layer", None, "decision_layer"),
        "decision-layer-bool": (span, "network.decision_layer", True, "decision_layer"),
        "decision-layer-huge": (span, "network.decision_layer", 10**30, "decision_layer"),
        "unit-unknown": (span, "network.unit", "paragraph", "unit"),
        "sentence-ends-huge": (span, "network.sentence_ends", [10**12], "sentence_ends"),
        "sentence-ends-string": (span, "network.sentence_ends", "4", "sentence_ends"),
        "later-layer-99": (later, "network.later.decision_layer", 99, "decision_layers"),
        "later-min-keep-2": (later, "network.later.min_keep", 2.0, "min_keep"),
        "later-min-keep-nan": (later, "network.later.min_keep", float("nan"), "min_keep"),
        "kind-unknown": (span, "kind", "wizard", "kind"),
    }
    for name, (build, field, value, named) in edits.items():

        def made(build=build, field=field, value=value):
            folder = p.checkpoint(build())
            config = json.loads((folder / "config.json").read_text())
            try:
                edit(config, field, value)
            except (KeyError, TypeError):
                config[field.split(".")[-1]] = value
            (folder / "config.json").write_text(json.dumps(config))
            return folder

        p.add(f"ckpt-{name}/load", "checkpoint", lambda made=made: load_policy(made(), m), REFUSE, named)
    texts = {
        "config-list": "[]",
        "config-empty": "",
        "config-bom": None,  # filled below
        "config-nan": None,
        "config-duplicate-key": None,
    }
    for name in texts:

        def made(name=name):
            folder = p.checkpoint(SpanHeadPolicy(64, 1))
            raw = (folder / "config.json").read_text()
            if name == "config-bom":
                raw = "\ufeff" + raw
            elif name == "config-nan":
                raw = raw.replace('"hidden_size": 64', '"hidden_size": NaN')
            elif name == "config-duplicate-key":
                raw = raw.replace('"hidden_size": 64', '"hidden_size": 64, "hidden_size": 64')
            else:
                raw = texts[name]
            (folder / "config.json").write_text(raw)
            return folder

        p.add(f"ckpt-{name}/load", "checkpoint", lambda made=made: load_policy(made(), m), REFUSE, "config.json")

    def weights(action: str):
        def run():
            folder = p.checkpoint(SpanHeadPolicy(64, 1))
            weights = folder / "policy.safetensors"
            if action == "truncated":
                weights.write_bytes(weights.read_bytes()[:40])
            elif action == "empty":
                weights.write_bytes(b"")
            elif action == "directory":
                weights.unlink()
                weights.mkdir()
            elif action == "fifo":
                weights.unlink()
                os.mkfifo(weights)
            elif action == "dev-zero":
                weights.unlink()
                weights.symlink_to("/dev/zero")
            elif action == "unreadable":
                weights.chmod(0)
            return load_policy(folder, m)

        return run

    for action in ("truncated", "empty", "directory", "fifo", "dev-zero", *(() if ROOT else ("unreadable",))):
        p.add(f"ckpt-weights-{action}/load", "checkpoint", weights(action), REFUSE, "policy.safetensors")

    def cli_generate(made):
        def run():
            folder = made()
            return p.cli("generate", QUESTION, "--model", "tiny-random", "--policy", folder, "--max-new-tokens", 2)()

        return run

    p.add(
        "ckpt-later-layer-4/cli-generate",
        "checkpoint",
        cli_generate(lambda: p.checkpoint(later(), lambda c: edit(c, "network.later.decision_layer", 4))),
        REFUSE,
        "decision_layers",
    )
    p.add(
        "ckpt-decision-layer-string/cli-generate",
        "checkpoint",
        cli_generate(lambda: p.checkpoint(span(), lambda c: edit(c, "network.decision_layer", "1"))),
        REFUSE,
        "decision_layer",
    )


# -- suite text ------------------------------------------------------------------------------------------


def line(**fields) -> str:
    return json.dumps({"context": CONTEXT, "question": QUESTION, **fields}, ensure_ascii=False)


def suites(p: Probe) -> None:
    good = line(answer="Ada Crane")
    texts: dict[str, tuple[str | bytes, str, str]] = {
        "bom-start": ("\ufeff" + good + "\n", EITHER, ""),
        "crlf": (good + "\r\n" + line(answer="Ada", id=2) + "\r\n", OK, ""),
        "cr-only": (good + "\r" + line(answer="Ada", id=2) + "\r", OK, ""),
        "nfd-nfc-duplicates": (line(answer="Zo\u00eb") + "\n" + line(answer="Zoe\u0308") + "\n", REFUSE, "repeats"),
        "fullwidth-duplicate": (line(answer="Ada") + "\n" + line(answer="\uff21\uff44\uff41") + "\n", REFUSE, "line 2"),
        "answer-zwj": (line(answer="\u200d"), REFUSE, "answer"),
        "answer-bom-char": (line(answer="\ufeff"), REFUSE, "answer"),
        "answer-soft-hyphen": (line(answer="\u00ad"), REFUSE, "answer"),
        "answer-ideographic-space": (line(answer="\u3000"), REFUSE, "answer"),
        "answer-word-joiner": (line(answer="\u2060\u2061"), REFUSE, "answer"),
        "answer-combining-only": (line(answer="\u0301"), REFUSE, "answer"),
        "answer-variation-selector": (line(answer="\ufe0f"), REFUSE, "answer"),
        "answers-one-invisible": (line(answers=["Ada", "\u200b"]), REFUSE, "answer"),
        "answer-number": (line(answer=42), REFUSE, "answer"),
        "answers-string": (line(answers="Ada"), REFUSE, "answers"),
        "answers-empty-list": (line(answers=[]), EITHER, "answers"),
        "answers-null-item": (line(answers=[None]), REFUSE, "answers"),
        "answers-nested": (line(answers=[["Ada"]]), REFUSE, "answers"),
        "answer-answers-agree-nfkc": (line(answer="Ada", answers=["\uff21\uff44\uff41"]), OK, ""),
        "answer-answers-disagree": (line(answer="Ada", answers=["Crane"]), REFUSE, "answer"),
        "question-list": (json.dumps({"context": CONTEXT, "question": ["Who?"], "answer": "Ada"}), REFUSE, "question"),
        "question-em-space": (
            json.dumps({"context": CONTEXT, "question": "\u2003", "answer": "Ada"}),
            REFUSE,
            "question",
        ),
        "question-zwsp": (
            json.dumps({"context": CONTEXT, "question": "\u200b\u200b", "answer": "Ada"}),
            REFUSE,
            "question",
        ),
        "context-number": (json.dumps({"context": 5, "question": QUESTION, "answer": "Ada"}), REFUSE, "context"),
        "context-null": (json.dumps({"context": None, "question": QUESTION, "answer": "Ada"}), OK, ""),
        "prompt-number": (json.dumps({"prompt": 7}), REFUSE, "prompt"),
        "prompt-with-answer": (json.dumps({"prompt": "Say hi", "answer": "hi"}), REFUSE, "prompt"),
        "prompt-invisible": (json.dumps({"prompt": "\u200b"}), REFUSE, "prompt"),
        "empty-file": ("", REFUSE, "no tasks"),
        "blank-lines": ("\n\r\n  \n", REFUSE, "no tasks"),
        "line-null": ("null\n", REFUSE, "line 1"),
        "line-array": ("[]\n", REFUSE, "line 1"),
        "line-number": ("123\n", REFUSE, "line 1"),
        "two-objects-one-line": (good + good + "\n", REFUSE, "line 1"),
        "trailing-comma": (good[:-1] + ",}\n", REFUSE, "line 1"),
        "duplicate-key-same": (good[:-1] + ', "answer": "Ada Crane"}\n', REFUSE, "line 1"),
        "surrogate-low-escape": (good[:-1] + ', "note": "\\udc00"}\n', REFUSE, "surrogate"),
        "surrogate-in-key": (good[:-1] + ', "\\ud800": "x"}\n', REFUSE, "surrogate"),
        "surrogate-in-list-meta": (good[:-1] + ', "tags": ["a", "\\ud800"]}\n', REFUSE, "surrogate"),
        "surrogate-in-nested-meta": (good[:-1] + ', "meta": {"x": {"y": "\\udbff"}}}\n', REFUSE, "surrogate"),
        "surrogate-pair-valid": (good[:-1] + ', "note": "\\ud83d\\ude00"}\n', OK, ""),
        "surrogate-in-answers": (line(answers=["Ada"])[:-2] + ', "\\ud800"]}\n', REFUSE, "surrogate"),
        "meta-nan": (good[:-1] + ', "score": NaN}\n', REFUSE, "line 1"),
        "meta-infinity": (good[:-1] + ', "score": -Infinity}\n', REFUSE, "line 1"),
        "meta-deep-nesting": (good[:-1] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}\n", REFUSE, "line 1"),
        "meta-huge-int": (good[:-1] + ', "n": ' + "9" * 5000 + "}\n", EITHER, ""),
        "match-uppercase": (line(answer="Ada", match="ALL"), REFUSE, "match"),
        "nul-byte": (line(answer="Ada\u0000"), EITHER, ""),
        "latin1-bytes": ((line(answer="Zo") + "\n").encode() + b'{"question": "caf\xe9"}\n', REFUSE, "UTF-8"),
        "utf16-file": ((good + "\n").encode("utf-16"), REFUSE, ""),
        "huge-question": (json.dumps({"context": CONTEXT, "question": "boat " * 200000, "answer": "Ada"}), EITHER, ""),
        "answer-articles-only": (line(answer="The A an"), REFUSE, "answer"),
        "id-differs": (line(answer="Ada", id=1) + "\n" + line(answer="Ada", id=2) + "\n", OK, ""),
        "key-order-duplicate": (
            line(answer="Ada", id=1)
            + "\n"
            + json.dumps({"id": 1, "answer": "Ada", "question": QUESTION, "context": CONTEXT}),
            REFUSE,
            "repeats",
        ),
    }
    for name, (text, expect, named) in texts.items():
        p.add(f"suite-{name}/load", "suite", lambda text=text: load_jsonl(p.suite(text)), expect, named)
    for name in ("nfd-nfc-duplicates", "surrogate-in-nested-meta", "blank-lines", "meta-deep-nesting", "bom-start"):
        text, expect, named = texts[name]
        p.add(
            f"suite-{name}/cli-eval",
            "suite",
            lambda text=text: p.evidence(p.suite(text), p.fresh("out"))(),
            expect,
            named,
        )
    p.add("suite-directory/load", "suite", lambda: load_jsonl(p.fresh("dir").mkdir() or p.root), REFUSE, "")

    def fifo_suite():
        path = p.fresh("fifo.jsonl")
        os.mkfifo(path)
        return load_jsonl(path)

    p.add("suite-fifo/load", "suite", fifo_suite, REFUSE, "")
    p.add("suite-dev-zero/load", "suite", lambda: load_jsonl("/dev/zero"), REFUSE, "")


def grading(p: Probe) -> None:
    pairs = {
        "nfd-gold-nfc-output": ("Zoe\u0308", "It was Zo\u00eb."),
        "fullwidth-output": ("Ada", "\uff21\uff44\uff41 said so"),
        "ligature-output": ("fish", "a \ufb01sh swam"),
        "casefold-sharp-s": ("STRASSE", "the stra\u00dfe"),
        "zero-width-inside-output": ("Ada", "A\u200bda"),
        "nbsp-between-words": ("Ada Crane", "Ada\u00a0Crane"),
        "superscript-digit": ("2", "x\u00b2"),
    }
    expected = {"superscript-digit": None}
    for name, (gold, output) in pairs.items():

        def run(gold=gold, output=output):
            return answer_correct(output, Task("grounded", QUESTION, CONTEXT, gold, (gold,)))

        def check(value, name=name):
            want = expected.get(name, True)
            return None if want is None or value is want else f"graded {value}, expected {want}"

        p.add(f"grade-{name}", "suite", run, OK, "", check)
