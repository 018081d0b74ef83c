"""The layout of docs/layout.md: no module over 500 lines, the import rules hold, and each top-level
data folder says which package reads it.

The rules are import-linter contracts in pyproject.toml (``[tool.importlinter]``); ``make lint``
runs them too. Here they run whenever import-linter is installed (the ``dev`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rlprune"
MAX_LINES = 500


def test_no_module_is_over_500_lines():
    sizes = {path.relative_to(ROOT): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert sizes, f"no modules found under {PACKAGE}"
    too_long = {str(path): lines for path, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"split these modules (at most {MAX_LINES} lines each): {too_long}"


def layer_names() -> set[str]:
    """Every module or package the layers contract names, optional ones included."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    return {name for layer in layers for name in re.split(r"[|:]", layer.replace("(", "").replace(")", "")) if name}


def test_every_top_level_module_has_a_layer():
    """A new module or package under rlprune/ must be placed in a layer, or its imports go unchecked."""
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    unplaced = sorted((modules | packages) - {name.strip() for name in layer_names()})
    assert not unplaced, f"add {unplaced} to a layer of [tool.importlinter] in pyproject.toml (see docs/layout.md)"


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="import-linter is not installed")
def test_import_contracts_hold():
    # this checkout's rlprune, whichever copy is installed; no cache written into the checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    args = [sys.executable, "-c", command, "--no-cache", "--no-logo"]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("folder", ["envs", "train", "policies", "eval"])
def test_each_data_folder_says_which_package_reads_it(folder):
    """A top-level data folder and the rlprune/ package of the same name are never confused."""
    readme = (ROOT / folder / "README.md").read_text()
    assert f"`rlprune/{folder}/`" in readme and (PACKAGE / folder / "__init__.py").is_file()
    links = re.findall(r"\]\(([^)#\s]+)", readme)
    assert [link for link in links if not (ROOT / folder / link).exists()] == []
