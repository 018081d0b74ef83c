"""Atomic writes: all or nothing, with the permissions of an ordinary file."""

from __future__ import annotations

import os

import pytest

from rlprune.io import atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_staging_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")

    def crash(staging: str) -> None:
        with open(staging, "w") as handle:
            handle.write("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]


def test_written_files_get_the_mode_of_a_plain_open(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.md", "table")
        (tmp_path / "b.md").write_text("table")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.md").read_text() == "table"
    assert (tmp_path / "a.md").stat().st_mode & 0o777 == (tmp_path / "b.md").stat().st_mode & 0o777 == 0o644
