"""The cases of benchmarks/hostile_probe.py that meet the file system and the options: output paths,
baseline specs, list options and arguments, and ``apply`` across blocks and threads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch
from hostile_probe import CONTEXT, EITHER, OK, QUESTION, REFUSE, Probe
from hostile_probe_cases import ROOT

import rlprune
from rlprune.eval import EvalConfig, Evaluation
from rlprune.policies import make_baseline, resolve_policy

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


# -- apply across blocks and threads; budget arguments ---------------------------------------------------


def blocks(p: Probe) -> None:
    import threading

    from rlprune.budget import AverageBudget, BudgetController

    m, t, ids = p.model, p.tokenizer, p.ids

    def full_logits_equal(value):
        return None if torch.equal(value, p.reference) else "a plain call did not run the full model"

    def interleaved(order: tuple[int, ...]):
        def run():
            blocks = [rlprune.apply(m, spec, budget=0.5) for spec in ("fastv", "snapkv", "tome")]
            for block in blocks:
                block.__enter__()
                m(ids)
            for index in order:
                blocks[index].__exit__(None, None, None)
            return m(ids).logits

        return run

    for order in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (2, 0, 1)):
        p.add(f"apply exits in order {order}", "apply", interleaved(order), OK, "", full_logits_equal)

    def raising_inside():
        try:
            with rlprune.apply(m, "fastv", budget=0.5):
                m(ids)
                raise KeyError("user code fails inside the block")
        except KeyError:
            pass
        return m(ids).logits

    p.add("apply with an exception inside", "apply", raising_inside, OK, "", full_logits_equal)

    def threads(plain_alongside: bool):
        def run():
            errors: list[BaseException] = []
            seen: list[bool] = []

            def reduced():
                try:
                    for _ in range(3):
                        with rlprune.apply(m, "snapkv", budget=0.5):
                            m.generate(ids, max_new_tokens=2, do_sample=False)
                except BaseException as error:  # noqa: BLE001 - reported below
                    errors.append(error)

            def plain():
                for _ in range(3):
                    seen.append(torch.equal(m(ids).logits, p.reference))

            workers = [threading.Thread(target=reduced) for _ in range(2)]
            workers += [threading.Thread(target=plain)] if plain_alongside else []
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=50)
            if errors:
                raise errors[0]
            if not all(seen):
                raise AssertionError("a plain call in another thread ran reduced")
            return m(ids).logits

        return run

    p.add("apply in 2 threads", "apply", threads(False), OK, "", full_logits_equal)
    p.add("apply in 2 threads with plain calls alongside", "apply", threads(True), OK, "", full_logits_equal)

    def block(**kwargs):
        def run():
            with rlprune.apply(m, kwargs.pop("policy", "fastv"), **kwargs):
                m(ids)

        return run

    refused = {
        "budget=0": (dict(budget=0), "budget"),
        "budget=-inf": (dict(budget=float("-inf")), "budget"),
        "budget='half'": (dict(budget="half"), "budget"),
        "budget_mode='avg'": (dict(budget=0.5, budget_mode="avg"), "budget_mode"),
        "prompt mode with a controller": (
            dict(budget=BudgetController(AverageBudget(0.5)), budget_mode="prompt"),
            "prompt",
        ),
        "prompt mode with AverageBudget": (dict(budget=AverageBudget(0.5), budget_mode="prompt"), "prompt"),
        "floor above ceiling": (dict(budget=0.5, budget_mode="average", floor=0.8, ceiling=0.2), "floor"),
        "floor in prompt mode": (dict(budget=0.5, floor=0.2), "floor"),
        "protect_last=-3": (dict(budget=0.5, protect_last=-3), "protect_last"),
        "protect_last=1.5": (dict(budget=0.5, protect_last=1.5), "protect_last"),
        "policy=None": (dict(budget=0.5, policy=None), "polic"),
    }
    for name, (kwargs, named) in refused.items():
        p.add(f"apply {name}", "apply", block(**kwargs), REFUSE, named)
    p.add("BudgetController(0.9)", "apply", lambda: BudgetController(0.9), REFUSE, "AverageBudget")
    p.add("apply(None, 'fastv')", "apply", lambda: rlprune.apply(None, "fastv").__enter__(), REFUSE)
    p.add("apply(model.model, 'fastv')", "apply", lambda: rlprune.apply(m.model, "fastv").__enter__(), EITHER)
    for name, budget in {
        "AverageBudget(1.0)": AverageBudget(1.0),
        "controller(0.9)": BudgetController(AverageBudget(0.9)),
    }.items():
        p.add(f"apply {name} with a baseline", "apply", block(budget=budget), EITHER)
    p.add(
        "generate a list in average mode with a baseline",
        "apply",
        lambda: rlprune.generate(
            m, t, [QUESTION] * 3, context=CONTEXT, policy="fastv", budget=0.4, budget_mode="average", max_new_tokens=2
        ),  # fmt: skip
        EITHER,
    )
