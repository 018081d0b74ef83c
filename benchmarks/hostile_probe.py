"""A hostile-input probe: over 300 inputs a careless or adversarial user could give, through the CLI and the
Python API, on the ``tiny-random`` model. Each must either succeed sensibly or end in one clean rlprune
error; a traceback from deep inside a library, a silently ignored input, a hang or a model left altered
is a failure.

    python benchmarks/hostile_probe.py [-k SUBSTRING] [--verbose]

Prints one line per failure and a summary (cases, clean, failures by class). Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from typer.testing import CliRunner

from rlprune import load_model
from rlprune.cli import app
from rlprune.errors import RLPruneError
from rlprune.policies import save_policy

CONTEXT = "The keeper of the harbour is Ada Crane. Boats rest on the shingle. " * 3
QUESTION = "Who is the keeper?"
CASE_SECONDS = 60
OK, REFUSE, EITHER = "ok", "refuse", "either"


class Hang(Exception):
    """A case ran past its time."""


@dataclass
class Case:
    """One hostile input: ``run`` returns a CLI result or a Python value; ``expect`` says what is right."""

    name: str
    kind: str
    run: Callable[[], object]
    expect: str = REFUSE
    names: str = ""  # a fragment the refusal must hold (the option or field)
    check: Callable[[object], str | None] | None = None  # for successes: a problem, or None


class Probe:
    """Builds the cases and runs them, one model shared by the Python cases."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.model, self.tokenizer = load_model("tiny-random")
        self.ids = self.tokenizer(CONTEXT + QUESTION, return_tensors="pt").input_ids
        self.reference = self.model(self.ids).logits.clone()
        self.counter = 0
        self.cases: list[Case] = []

    # -- helpers ------------------------------------------------------------------------------------

    def fresh(self, stem: str = "p") -> Path:
        self.counter += 1
        path = self.root / f"{stem}{self.counter}"
        return path

    def add(self, *args, **kwargs) -> None:
        self.cases.append(Case(*args, **kwargs))

    def cli(self, *args: object) -> Callable[[], object]:
        return lambda: CliRunner().invoke(app, [str(a) for a in args])

    def suite(self, text: str | bytes, name: str = "s.jsonl") -> Path:
        path = self.fresh("suite") / name
        path.parent.mkdir()
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return path

    def good_suite(self) -> Path:
        return self.suite(json.dumps({"context": CONTEXT, "question": QUESTION, "answer": "Ada Crane"}) + "\n")

    def evidence(self, suite: Path, out: Path | str, *extra: object) -> Callable[[], object]:
        return self.cli(
            "eval", "--suite", suite, "--model", "tiny-random", "--evidence-only", "--baselines", "fastv",
            "--budgets", "0.5", "--out", out, *extra,
        )  # fmt: skip

    def checkpoint(self, policy, edit: Callable[[dict], None] | None = None, text: str | None = None) -> Path:
        folder = self.fresh("ckpt")
        save_policy(policy, folder, model=self.model)
        if edit or text is not None:
            config = json.loads((folder / "config.json").read_text())
            if edit:
                edit(config)
            (folder / "config.json").write_text(text if text is not None else json.dumps(config))
        return folder

    def model_altered(self) -> str | None:
        if "forward" in self.model.__dict__:
            return "the model's forward is still patched"
        if not torch.equal(self.model(self.ids).logits, self.reference):
            return "the model's logits changed"
        return None

    # -- judging ------------------------------------------------------------------------------------

    def judge(self, case: Case) -> tuple[str, str]:
        """(class, detail): class is 'clean' or a failure class."""
        old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(Hang()))
        signal.alarm(CASE_SECONDS)
        try:
            value = case.run()
            error = None
        except Hang:
            return "hang", f"no answer in {CASE_SECONDS} s"
        except RLPruneError as caught:
            value, error = None, caught
        except Exception as caught:  # noqa: BLE001 - the probe's whole point
            frame = traceback.extract_tb(caught.__traceback__)[-1]
            return "traceback", f"{type(caught).__name__}: {str(caught)[:120]} at {frame.filename}:{frame.lineno}"
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        altered = self.model_altered()
        if altered:
            return "altered", altered
        if error is None and hasattr(value, "exit_code"):  # a CLI result
            output = value.output
            if value.exception is not None and not isinstance(value.exception, SystemExit):
                if isinstance(value.exception, Hang):
                    return "hang", f"no answer in {CASE_SECONDS} s"
                frame = traceback.extract_tb(value.exception.__traceback__)[-1]
                kind = type(value.exception).__name__
                return "traceback", f"{kind}: {str(value.exception)[:120]} at {frame.filename}:{frame.lineno}"
            if value.exit_code != 0:
                if "Traceback" in output:
                    return "traceback", output.strip().splitlines()[-1][:160]
                error = " ".join(output.split())
        elif error is not None:
            error = str(error)
        if error is not None:
            if case.expect == OK:
                return "wrongly-refused", error[:200]
            if case.names and not _names(error, case.names):
                return "message", f"does not name {case.names!r}: {error[:200]}"
            return "clean", error[:120]
        if case.expect == REFUSE:
            return "silent", f"accepted: {str(getattr(value, 'output', value))[:160]!r}"
        problem = case.check(value) if case.check else None
        return ("wrong-result", problem) if problem else ("clean", "ok")

    def run(self, only: str | None, verbose: bool) -> int:
        results: list[tuple[Case, str, str]] = []
        began = time.perf_counter()
        for case in self.cases:
            if only and only not in case.name:
                continue
            cwd = os.getcwd()
            try:
                verdict, detail = self.judge(case)
            finally:
                os.chdir(cwd)
            results.append((case, verdict, detail))
            if verbose or verdict != "clean":
                print(f"[{verdict:>14}] {case.kind:<10} {case.name}: {detail}", flush=True)
        failures = Counter(v for _, v, _ in results if v != "clean")
        clean = sum(1 for _, v, _ in results if v == "clean")
        print(f"\n{len(results)} cases, {clean} clean, {sum(failures.values())} failures "
              f"({time.perf_counter() - began:.0f} s)")  # fmt: skip
        for verdict, count in failures.most_common():
            print(f"  {verdict}: {count}")
            for case, v, _ in results:
                if v == verdict:
                    print(f"    {case.kind}/{case.name}")
        by_kind = Counter(c.kind for c, _, _ in results)
        print("by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())))
        return 1 if failures else 0


def _names(error: str, fragment: str) -> bool:
    """Whether a refusal names ``fragment``, written as an option (``--budget-mode``), a field
    (``budget_mode``) or in words (``budget mode``)."""
    text = " ".join(error.split())
    bare = fragment.lstrip("-")
    return any(form in text for form in (fragment, bare.replace("-", "_"), bare.replace("-", " ").replace("_", " ")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="only", help="only cases whose name holds this")
    parser.add_argument("--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    from hostile_probe_cases import add_all  # noqa: PLC0415 - the cases live beside this script

    with tempfile.TemporaryDirectory(prefix="rlprune-probe-") as tmp:
        os.chdir(tmp)  # a case that writes into the current folder writes here
        probe = Probe(Path(tmp))
        add_all(probe)
        try:
            return probe.run(args.only, args.verbose)
        finally:
            for path in Path(tmp).rglob("*"):  # read-only folders made by the cases
                if path.is_dir() and not path.is_symlink():
                    path.chmod(0o755)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
