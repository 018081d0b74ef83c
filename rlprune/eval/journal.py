"""The evaluation journal: finished records, appended one line at a time, so a stopped run resumes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rlprune.errors import RLPruneError
from rlprune.io import check_writable, open_append, read_bytes

JOURNAL = "records.jsonl"
LOCK = ".lock"
REPORTS = ("results.json", "results.csv", "results.md", "pareto.png", "heatmap.png")
"""The reports an evaluation writes beside its journal; the journal marks them as rlprune's own."""
MAX_JOURNAL_BYTES = 1 << 30
"""Most bytes a journal may hold (about a million records)."""


class Journal:
    """Append-only JSONL of finished records; its first line fixes the settings they were made with.

    Every record carries its method's identity (a hash of the checkpoint files or of the baseline
    spec), so records of another checkpoint under the same name are refused, never mixed. A lock
    file keeps a second evaluation out of the folder while this one writes to it.

    The journal also marks the folder's reports (:data:`REPORTS`) as rlprune's own: a folder with a
    report but no journal holds a file rlprune did not write, and is refused rather than overwritten.
    """

    def __init__(self, path: Path, settings: dict[str, Any], identities: dict[str, str], fresh: bool = False) -> None:
        self.path, self.identities = path, identities
        self.records: dict[tuple[str, str, float | None], dict[str, Any]] = {}
        self.set_aside: Path | None = None  # where ``fresh`` moved the earlier journal
        check_writable(path, "evaluation journal in --out")
        if not (path.is_file() and path.stat().st_size):  # no journal yet: no report here is rlprune's
            _refuse_foreign_reports(path.parent)
        self._lock = _lock(path.with_name(LOCK))
        try:
            if fresh and path.exists():
                self.set_aside = _free_name(path.with_name(JOURNAL + ".old"))  # every earlier journal is kept
                os.replace(path, self.set_aside)
                print(f"note: the earlier records in {path.parent} are kept in {self.set_aside}", file=sys.stderr)
            if path.is_file() and path.stat().st_size:
                self._read(settings)
            else:
                with open_append(path, "evaluation journal in --out") as handle:
                    handle.write(json.dumps({"settings": settings}) + "\n")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let another evaluation use the folder."""
        if not self._lock.closed:
            self._lock.close()

    @staticmethod
    def key(uid: str, method: str, budget: float | None) -> tuple[str, str, float | None]:
        return (uid, method, budget)

    def get(self, uid: str, method: str, budget: float | None) -> dict[str, Any] | None:
        return self.records.get(self.key(uid, method, budget))

    def add(self, record: dict[str, Any]) -> None:
        record = {**record, "method_id": self.identities[record["method"]]}
        with open_append(self.path, "evaluation journal in --out") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[self.key(record["item"], record["method"], record["budget"])] = record

    def _read(self, settings: dict[str, Any]) -> None:
        data = read_bytes(self.path, "evaluation journal", MAX_JOURNAL_BYTES)
        if not data.endswith(b"\n"):  # a line torn by an interruption: cut it, so the next record starts clean
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
        lines = data.decode("utf-8", errors="replace").splitlines()
        try:
            header = json.loads(lines[0])["settings"]
            if not isinstance(header, dict):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):
            raise RLPruneError(
                f"{self.path} is not an rlprune evaluation journal; choose another --out or pass --force-new"
            ) from None
        changed = sorted(k for k in settings.keys() | header.keys() if settings.get(k) != header.get(k))
        if changed:  # a setting missing on one side counts as None there
            raise RLPruneError(
                f"{self.path.parent} holds results made with other settings ({', '.join(changed)}); "
                "use another --out folder or pass --force-new to start it over"
            )
        for line in lines[1:]:
            try:
                record = json.loads(line)
                key = self.key(record["item"], record["method"], record["budget"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a damaged line: that record is redone
            expected = self.identities.get(record["method"])
            if expected is not None and record.get("method_id") != expected:
                raise RLPruneError(
                    f"{self.path.parent} holds results of {record['method']!r} made from another checkpoint or "
                    "spec under the same name; use another --out folder or pass --force-new to start it over"
                )
            self.records[key] = record


def _free_name(path: Path) -> Path:
    """``path`` if nothing is there, else the first free ``path.1``, ``path.2`` ..."""
    number, free = 0, path
    while free.exists():
        number += 1
        free = path.with_name(f"{path.name}.{number}")
    return free


def _refuse_foreign_reports(folder: Path) -> None:
    """Refuse a folder without a journal that holds a report: rlprune did not write that file, so it
    is never replaced."""
    found = [name for name in REPORTS if os.path.lexists(folder / name)]
    if found:
        raise RLPruneError(
            f"--out {folder} holds {', '.join(found)} but no {JOURNAL}: rlprune did not write "
            f"{'it' if len(found) == 1 else 'them'} and will not replace {'it' if len(found) == 1 else 'them'}; "
            "choose another --out folder, or move the file(s) away"
        )


def _lock(path: Path):
    """An exclusive lock on ``path``, held while the returned file stays open."""
    import fcntl

    handle = open_append(path, "evaluation lock in --out")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RLPruneError(
            f"another evaluation is writing to {path.parent}; wait for it to finish or use another --out"
        ) from None
    return handle
