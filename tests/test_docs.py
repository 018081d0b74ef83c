"""The docs a newcomer reads stay short, and their relative links lead somewhere.

No model, no network: reads README.md, docs/*.md, .ci/run and the Makefile only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KB = 1024
SIZE_LIMITS = {"README.md": 10 * KB, "docs/evaluation.md": 20 * KB}

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link and image targets outside code, without external URLs and same-page anchors."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = [match.group(1) for match in LINK.finditer(prose)]
    return [t for t in targets if not EXTERNAL.match(t) and not t.startswith("#")]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    return broken


@pytest.mark.parametrize("name", sorted(SIZE_LIMITS))
def test_page_stays_within_its_size(name: str) -> None:
    size = len((ROOT / name).read_bytes())
    assert size <= SIZE_LIMITS[name], f"{name} is {size} bytes; keep it within {SIZE_LIMITS[name]}"


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page: Path) -> None:
    assert broken_links(page) == [], f"{page.relative_to(ROOT)} links to files that do not exist"


def test_link_finder_sees_links_and_skips_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "See [here](present.md#part) and ![plot](missing.png) and [web](https://example.com)\n"
        "and [same page](#part), `[not](a-link.md)`.\n"
        "```\n[inside](fenced.md)\n```\n",
        encoding="utf-8",
    )
    (tmp_path / "present.md").write_text("# Part\n", encoding="utf-8")
    assert relative_links(page.read_text(encoding="utf-8")) == ["present.md#part", "missing.png"]
    assert broken_links(page) == ["missing.png"]


def test_readme_names_make_test_and_ci_runs_it() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test" in readme
    ci_commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "make test" in ci_commands, ".ci/run must run `make test`"
    assert re.search(r"^test:", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
