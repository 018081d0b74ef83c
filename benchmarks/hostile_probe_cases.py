"""The cases of benchmarks/hostile_probe.py, by kind: policies meeting the wrong model, suite text,
output paths, baseline specs and list options."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from hostile_probe import CONTEXT, EITHER, OK, QUESTION, REFUSE, Probe

import rlprune
from rlprune.data.tasks import Task, answer_correct, load_jsonl
from rlprune.eval import EvalConfig, Evaluation
from rlprune.policies import (
    ReductionPolicy,
    SpanHeadPolicy,
    TokenReductionPolicy,
    load_policy,
    make_baseline,
    resolve_policy,
)

ROOT = os.geteuid() == 0
"""Permissions do not bind root: the cases that need them are left out."""
LATER = {"rank": 4, "channels": 4, "kernel": 3, "min_keep": 0.3}


def add_all(probe: Probe) -> None:
    policies(probe)
    checkpoints(probe)
    suites(probe)
    grading(probe)
    paths(probe)
    baselines(probe)
    options(probe)


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


# -- output paths ---------------------------------------------------------------------------------------


def paths(p: Probe) -> None:
    def out_case(name: str, make, expect: str = REFUSE, named: str = "--out", *extra: object) -> None:
        def run():
            suite = p.good_suite()
            out = make()
            return p.evidence(suite, out, *extra)()

        p.add(f"out-{name}", "path", run, expect, named)

    def fifo_out():
        path = p.fresh("fifo")
        os.mkfifo(path)
        return path

    def in_out(name: str, make_child):
        def make():
            out = p.fresh("out")
            out.mkdir()
            make_child(out / name)
            return out

        return make

    def readonly():
        folder = p.fresh("ro")
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return folder / "out"

    def readonly_out():
        folder = p.fresh("ro")
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return folder

    def link(target: str):
        def make():
            path = p.fresh("link")
            path.symlink_to(target)
            return path

        return make

    def a_file():
        path = p.fresh("file")
        path.write_text("mine")
        return path

    out_case("whitespace", lambda: "   ")
    out_case("fifo", fifo_out)
    out_case("regular-file", a_file)
    out_case("under-a-file", lambda: a_file() / "sub")
    if not ROOT:
        out_case("read-only-parent", readonly)
        out_case("read-only-itself", readonly_out)
    out_case("symlink-dev-null", link("/dev/null"))
    out_case("symlink-dangling", link("/nonexistent/zzz"), EITHER)
    out_case("records-fifo", in_out("records.jsonl", os.mkfifo), REFUSE, "records.jsonl")
    out_case("lock-fifo", in_out(".lock", os.mkfifo), REFUSE, ".lock")
    out_case("records-directory", in_out("records.jsonl", Path.mkdir), REFUSE, "records.jsonl")
    out_case("lock-directory", in_out(".lock", Path.mkdir), REFUSE, ".lock")
    out_case("records-dev-zero", in_out("records.jsonl", lambda q: q.symlink_to("/dev/zero")), REFUSE, "records.jsonl")
    out_case("results-foreign", in_out("results.json", lambda q: q.write_text('{"mine": 1}')), REFUSE, "results.json")
    out_case("results-csv-foreign", in_out("results.csv", lambda q: q.write_text("a,b\n")), EITHER, "results.csv")
    out_case("pareto-fifo", in_out("pareto.png", os.mkfifo), REFUSE, "pareto.png")
    out_case("results-md-directory", in_out("results.md", Path.mkdir), REFUSE, "results.md")
    out_case("records-garbage", in_out("records.jsonl", lambda q: q.write_text("not json\n")), REFUSE, "records.jsonl")
    if not ROOT:
        out_case(
            "records-unreadable", in_out("records.jsonl", lambda q: (q.write_text(""), q.chmod(0))), REFUSE, "records"
        )
    out_case("name-too-long", lambda: p.root / ("x" * 300), REFUSE, "")
    out_case("name-newline", lambda: p.root / "a\nb", EITHER, "")
    out_case("dash", lambda: p.root / "-", EITHER, "")
    out_case("deep-new", lambda: p.root / "n1" / "n2" / "n3", OK, "")

    def cwd_dot():
        folder = p.fresh("cwd")
        folder.mkdir()
        (folder / "results.json").write_text('{"mine": 1}')
        os.chdir(folder)
        return "."

    out_case("dot-with-foreign-results", cwd_dot, REFUSE, "results.json")

    def harness(out_factory, named):
        def run():
            suite = p.good_suite()
            config = EvalConfig(
                str(suite), model="tiny-random", baselines=("fastv",), budgets=(0.5,), evidence_only=True
            )
            return Evaluation(config, out_factory(), model=p.model, tokenizer=p.tokenizer).run()

        return run

    p.add("out-api-fifo", "path", harness(fifo_out, ""), REFUSE, "")
    p.add("out-api-records-fifo", "path", harness(in_out("records.jsonl", os.mkfifo), ""), REFUSE, "records.jsonl")
    p.add("out-api-empty-string", "path", harness(lambda: "", ""), REFUSE, "")


# -- baseline specs ---------------------------------------------------------------------------------


def baselines(p: Probe) -> None:
    m, t = p.model, p.tokenizer
    specs = {
        "fastv:ratio=0": EITHER,
        "fastv:ratio=1": EITHER,
        "fastv:ratio=1.5": REFUSE,
        "fastv:ratio=nan": REFUSE,
        "fastv:ratio=inf": REFUSE,
        "fastv:ratio=-0.1": REFUSE,
        "fastv:ratio=": REFUSE,
        "fastv:layer=3.0": REFUSE,
        "fastv:layer=1e1": REFUSE,
        "fastv:layer=0x2": REFUSE,
        "fastv:layer=": REFUSE,
        "fastv:layer=1,layer=2": REFUSE,
        "fastv:": REFUSE,
        "fastv::": REFUSE,
        "FASTV": REFUSE,
        " fastv ": EITHER,
        "fastv:bogus=1": REFUSE,
        "fastv:layer =2": EITHER,
        "fastv:scorer=bogus": REFUSE,
        "snapkv:pool=0": REFUSE,
        "snapkv:pool=-1": REFUSE,
        "snapkv:pool=abc": REFUSE,
        "snapkv:pool=-5:+5": EITHER,
        "snapkv:unit=0": REFUSE,
        "snapkv:unit=sentence": EITHER,
        "snapkv:unit=paragraph": REFUSE,
        "pyramid:stages=1.5": REFUSE,
        "pyramid:stages=3": OK,
        "pyramid:stages=2,ratio=1": EITHER,
        "tome:start=3,ratio=0.99": EITHER,
        "tome:ratio=1.01": REFUSE,
        "random:seed=-1": EITHER,
        "random:seed=99999999999999999999999": EITHER,
        "random:layer=3": OK,
        "gemfilter:layer=0": EITHER,
        "gemfilter": EITHER,
        "static:": REFUSE,
        "static:9:prune:0.5": REFUSE,
        "static:1:prune:2": REFUSE,
        "static:1:bogus:0.5": REFUSE,
        "static:1:prune:0.5:bogusscorer": REFUSE,
        "static:1:prune:0.5,1:prune:0.5": REFUSE,
        "static:-1:prune:0.5": REFUSE,
        "best-static:nosuch": REFUSE,
        "none:layer=2": REFUSE,
    }
    for spec, expect in specs.items():
        p.add(f"baseline {spec!r}/resolve", "baseline", lambda s=spec: resolve_policy(s, m), expect)
        if expect != OK:
            continue
        p.add(
            f"baseline {spec!r}/generate",
            "baseline",
            lambda s=spec: rlprune.generate(m, t, QUESTION, context=CONTEXT, policy=s, max_new_tokens=2),
            OK,
        )
    cli_specs = {
        "fastv:layer=2,ratio=0.5": (OK, ""),
        "fastv:layer=2,ratio=0.5,snapkv:layer=1": (OK, ""),
        "random,random": (REFUSE, "random"),
        "none,fastv": (EITHER, ""),
        "all,fastv": (REFUSE, "all"),
        ",": (REFUSE, "--baselines"),
        "": (REFUSE, "--baselines"),
        " , fastv": (REFUSE, "--baselines"),
        "fastv:layer=2,,snapkv": (REFUSE, "--baselines"),
        "foo": (REFUSE, "foo"),
        "fastv:layer=9": (REFUSE, "layer"),
        "tome:start=2,pyramid:stages=3": (OK, ""),
    }
    for spec, (expect, named) in cli_specs.items():

        def run(spec=spec):
            return p.cli(
                "eval", "--suite", p.good_suite(), "--model", "tiny-random", "--evidence-only", "--baselines", spec,
                "--budgets", "0.5", "--out", p.fresh("out"),
            )()  # fmt: skip

        p.add(f"cli --baselines {spec!r}", "baseline", run, expect, named)
    p.add("make_baseline(None)", "baseline", lambda: make_baseline(None), REFUSE)
    p.add("make_baseline(3)", "baseline", lambda: make_baseline(3), REFUSE)


# -- list options and arguments -----------------------------------------------------------------------


def options(p: Probe) -> None:
    m, t = p.model, p.tokenizer

    def ev(*extra: object, evidence: bool = True):
        def run():
            return p.cli(
                "eval", "--suite", p.good_suite(), "--model", "tiny-random", *(["--evidence-only"] * evidence),
                "--baselines", "fastv" if evidence else "none", "--max-new-tokens", 2, "--out", p.fresh("out"), *extra,
            )()  # fmt: skip

        return run

    budgets = {
        "": REFUSE, " ": REFUSE, "0.5,,0.7": REFUSE, "0.5,0.5": REFUSE, "0": REFUSE, "1.0001": REFUSE,
        "nan": REFUSE, "inf": REFUSE, "-0.5": REFUSE, "0.5;0.7": REFUSE, "5e-1": OK, "0.5, 0.7": OK,
        "1": EITHER, "0.50,0.5": REFUSE,
    }  # fmt: skip
    for value, expect in budgets.items():
        p.add(f"cli --budgets {value!r}", "option", ev("--budgets", value), expect, "--budgets")
    long_suite = ["--suite", "niah", "--limit", "1"]
    for value, expect in {
        "": REFUSE,
        ",": REFUSE,
        "0,0": REFUSE,
        "1.5": REFUSE,
        "-0": EITHER,
        "0.5": EITHER,
        "0.5,": REFUSE,
    }.items():

        def run(value=value):
            return p.cli(
                "eval", *long_suite, "--model", "tiny-random", "--evidence-only", "--baselines", "fastv",
                "--budgets", "0.5", "--depths", value, "--out", p.fresh("out"),
            )()  # fmt: skip

        p.add(f"cli --depths {value!r}", "option", run, expect, "--depths" if expect == REFUSE else "")
    for value in ("", ",", "0.5,0.5", "2", "0"):
        p.add(
            f"cli --oracle-grid {value!r}",
            "option",
            ev(
                "--budgets",
                "0.5",
                "--budget-mode",
                "average",
                "--oracle-grid",
                value,
                "--policy",
                "fastv",
                evidence=False,
            ),
            REFUSE,
            "--oracle-grid",
        )
    p.add(
        "cli --oracle-grid without average",
        "option",
        ev("--budgets", "0.5", "--oracle-grid", "0.5"),
        REFUSE,
        "--oracle-grid",
    )
    p.add("cli --floor without average", "option", ev("--budgets", "0.5", "--floor", "0.2"), REFUSE, "--floor")
    p.add(
        "cli --floor above --ceiling",
        "option",
        ev("--budgets", "0.5", "--budget-mode", "average", "--floor", "0.8", "--ceiling", "0.3"),
        REFUSE,
        "--floor",
    )
    p.add(
        "cli --budget-mode bogus", "option", ev("--budgets", "0.5", "--budget-mode", "bogus"), REFUSE, "--budget-mode"
    )
    p.add("cli --policy ''", "option", ev("--budgets", "0.5", "--policy", ""), REFUSE, "--policy")
    p.add(
        "cli --policy twice",
        "option",
        ev("--budgets", "0.5", "--policy", "fastv", "--policy", "fastv"),
        REFUSE,
        "fastv",
    )
    p.add("cli --group-by ''", "option", ev("--budgets", "0.5", "--group-by", ""), REFUSE, "--group-by")
    p.add("cli --limit 0", "option", ev("--budgets", "0.5", "--limit", "0"), REFUSE, "--limit")
    p.add("cli --per-cell on jsonl", "option", ev("--budgets", "0.5", "--per-cell", "2"), REFUSE, "--per-cell")

    def gen_cli(*extra: object):
        return p.cli("generate", QUESTION, "--model", "tiny-random", "--max-new-tokens", 2, *extra)

    gen_cases = {
        "--budget 0": (["--policy", "fastv", "--budget", "0"], REFUSE, "--budget"),
        "--budget nan": (["--policy", "fastv", "--budget", "nan"], REFUSE, "--budget"),
        "--budget 1.5": (["--policy", "fastv", "--budget", "1.5"], REFUSE, "--budget"),
        "--budget without policy": (["--budget", "0.5"], REFUSE, "--budget"),
        "--schedule ''": (["--schedule", ""], REFUSE, "--schedule"),
        "--schedule 9:prune:0.5": (["--schedule", "9:prune:0.5"], REFUSE, "layer"),
        "--schedule and --policy": (["--schedule", "1:prune:0.5", "--policy", "fastv"], REFUSE, "--schedule"),
        "--protect-last -1": (["--policy", "fastv", "--protect-last", "-1"], REFUSE, "--protect-last"),
        "--protect-last 100000": (["--policy", "fastv", "--protect-last", "100000"], EITHER, "--protect-last"),
        "--context @missing": (["--context", "@/nonexistent/ctx.txt"], REFUSE, "ctx.txt"),
        "--context @fifo": (["--context", "@FIFO"], REFUSE, ""),
        "--floor without average": (["--policy", "fastv", "--floor", "0.2"], REFUSE, "--floor"),
        "--budget-mode average single prompt": (["--policy", "fastv", "--budget-mode", "average"], REFUSE, "average"),
    }
    for name, (extra, expect, named) in gen_cases.items():

        def run(extra=extra):
            if "@FIFO" in extra:
                fifo = p.fresh("ctx")
                os.mkfifo(fifo)
                extra = [str(e).replace("FIFO", str(fifo)) for e in extra]
            return gen_cli(*extra)()

        p.add(f"cli generate {name}", "option", run, expect, named)

    api = {
        "budget=0": dict(policy="fastv", budget=0),
        "budget=nan": dict(policy="fastv", budget=float("nan")),
        "budget='0.5'": dict(policy="fastv", budget="0.5"),
        "budget=True": dict(policy="fastv", budget=True),
        "max_new_tokens=0": dict(policy="fastv", max_new_tokens=0),
        "max_new_tokens=-1": dict(policy="fastv", max_new_tokens=-1),
        "max_new_tokens=True": dict(policy="fastv", max_new_tokens=True),
        "max_new_tokens=2.5": dict(policy="fastv", max_new_tokens=2.5),
        "policy=''": dict(policy=""),
        "policy=3": dict(policy=3),
        "budget_mode='avg'": dict(policy="fastv", budget_mode="avg"),
    }
    for name, kwargs in api.items():
        first = {"max_new_tokens": 2} if "max_new_tokens" not in kwargs else {}
        p.add(
            f"api generate {name}",
            "option",
            lambda kw=kwargs, first=first: rlprune.generate(m, t, QUESTION, context=CONTEXT, **first, **kw),
            REFUSE,
            name.split("=")[0],
        )
    for name, prompts in {"[]": [], "['']": [""], "[None]": [None], "['ok', 5]": ["ok", 5]}.items():
        p.add(
            f"api generate prompts={name}",
            "option",
            lambda pr=prompts: rlprune.generate(m, t, pr, policy="fastv", max_new_tokens=2),
            REFUSE,
        )
    configs = {
        "budgets=()": dict(budgets=()),
        "budgets=(0.5, 0.5)": dict(budgets=(0.5, 0.5)),
        "budgets=(2,)": dict(budgets=(2.0,)),
        "baselines=('',)": dict(baselines=("",), budgets=(0.5,)),
        "baselines=('fastv', 'fastv')": dict(baselines=("fastv", "fastv"), budgets=(0.5,)),
        "policies=('',)": dict(policies=("",), budgets=(0.5,)),
        "oracle_grid=() average": dict(budgets=(0.5,), budget_mode="average", oracle_grid=(), evidence_only=False),
    }
    for name, kwargs in configs.items():

        def run(kwargs=kwargs):
            kwargs = {"evidence_only": True, "max_new_tokens": 2, "baselines": ("fastv",), **kwargs}
            config = EvalConfig(str(p.good_suite()), model="tiny-random", **kwargs)
            return Evaluation(config, p.fresh("out"), model=m, tokenizer=t).run()

        expect = EITHER if "oracle_grid" in name else REFUSE
        p.add(f"api EvalConfig {name}", "option", run, expect, name.split("=")[0].rstrip("s"))
