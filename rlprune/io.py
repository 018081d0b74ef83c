"""Files written whole or not at all, and read only when they are regular files of bounded size.

A crash never leaves a half-written result behind; a FIFO, a device or a huge file given where a
file is expected is refused instead of blocking or filling memory. Every path written or locked is
checked first (:func:`check_writable`): a regular file or nothing, in a folder that can be written.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rlprune.errors import RLPruneError

MAX_TEXT_BYTES = 64 << 20
"""Most bytes a text file (a context, a prompt or suite file) may hold; a bigger one is refused unread."""
MAX_JSON_BYTES = 16 << 20
"""Most bytes a JSON file of settings or results (run.json, a best-static table) may hold."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a JSON document may have (Python's parser recurses)."""


def _default_mode() -> int:
    """The mode a plain ``open`` would give a new file (mkstemp makes files private)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[str], object], what: str = "file") -> None:
    """Call ``write(staging_path)``, then move the staged file onto ``path`` in one step (checked first
    by :func:`check_writable`: a FIFO, a device or a folder at ``path`` is refused, never replaced)."""
    path = check_writable(path, what)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    try:
        write(staging)
        os.chmod(staging, _default_mode())
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


def atomic_write_text(path: str | Path, text: str, what: str = "file") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda staging: Path(staging).write_text(text), what)


def check_writable(path: str | Path, what: str = "file") -> Path:
    """``path`` as a :class:`Path` if it may be written: nothing there, or a regular file this process can
    write (symlinks followed), inside an existing folder it can write to. Anything else (a FIFO, which an
    open would block on, a device, a socket, a folder, a read-only file or folder) is one clear error."""
    path = Path(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        status = None
    except OSError as error:
        raise _unwritable(path, what, error.strerror or str(error)) from None
    if status is not None and not stat.S_ISREG(status.st_mode):
        shown = _KINDS.get(stat.S_IFMT(status.st_mode), "a special file")
        raise _unwritable(path, what, f"it is {shown}, not a regular file; remove it or choose another path")
    folder = path.parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise _unwritable(path, what, f"its folder {folder} {problem}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _unwritable(path, what, f"its folder {folder} is not writable (permission denied)")
    if status is not None and not os.access(path, os.W_OK):
        raise _unwritable(path, what, "it is read-only (permission denied)")
    return path


def check_folder(path: str | Path, what: str = "--out") -> Path:
    """``path`` as a :class:`Path` if a folder may be made or used there: not empty (``Path("")`` would
    silently mean the current folder), and an existing folder or nothing at all (symlinks followed: a
    dangling link, a file, a FIFO or a device is refused by what it is)."""
    text = os.fspath(path)
    if not text.strip():
        raise RLPruneError(f"{what} is empty (an unset shell variable?); give a folder, such as runs/x")
    path = Path(text)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise RLPruneError(f"{what} {path} is a link to nothing; remove it or choose another folder") from None
        return path
    except OSError as error:
        raise RLPruneError(f"{what} {path} cannot be used: {error.strerror or error}") from None
    if not stat.S_ISDIR(status.st_mode):
        shown = {stat.S_IFREG: "a file"}.get(stat.S_IFMT(status.st_mode)) or _KINDS.get(
            stat.S_IFMT(status.st_mode), "a special file"
        )
        raise RLPruneError(f"{what} {path} is {shown}, not a folder; choose another path")
    return path


def open_append(path: str | Path, what: str = "file") -> Any:
    """``path`` opened for appending text, created if absent: checked by :func:`check_writable`, then
    opened non-blocking (a FIFO swapped in meanwhile cannot block the open) and checked again once open."""
    path = check_writable(path, what)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:  # ENXIO: a FIFO without a reader
        raise _unwritable(path, what, error.strerror or str(error)) from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        shown = _KINDS.get(stat.S_IFMT(mode), "a special file")
        raise _unwritable(path, what, f"it is {shown}, not a regular file; remove it or choose another path")
    os.set_blocking(descriptor, True)
    return open(descriptor, "a", encoding="utf-8", closefd=True)  # noqa: SIM115 - the caller closes it


def _unwritable(path: Path, what: str, problem: str) -> RLPruneError:
    return RLPruneError(f"{what} {path} cannot be written: {problem}")


class JSONError(RLPruneError):
    """Text that is not the JSON asked for: malformed, too deeply nested, or repeating a key."""


def read_bytes(path: str | Path, what: str = "file", limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``limit`` of them.

    A FIFO, device, socket or folder is refused without reading, so nothing blocks or reads
    forever: the kind is checked before opening, the file is opened non-blocking (a FIFO swapped
    in meanwhile cannot block the open) and checked again once open. The limit holds while reading,
    whatever the file system says the size is.
    """
    path = Path(path)
    check_regular_file(path, what, limit)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(descriptor, "rb", closefd=True) as handle:
            _check_regular(os.fstat(descriptor).st_mode, path, what)
            data = handle.read(limit + 1)
    except OSError as error:
        raise _unreadable(path, what, error) from None
    if len(data) > limit:
        raise _too_big(path, what, limit)
    return data


def hash_file(digest: Any, path: str | Path, what: str = "file", limit: int = MAX_TEXT_BYTES) -> None:
    """Feed the regular file at ``path`` to ``digest`` (a :mod:`hashlib` object) in chunks, refused as
    :func:`read_bytes` refuses, and never past ``limit`` bytes: memory stays bounded whatever the size."""
    path = Path(path)
    check_regular_file(path, what, limit)
    seen = 0
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(descriptor, "rb", closefd=True) as handle:
            _check_regular(os.fstat(descriptor).st_mode, path, what)
            while chunk := handle.read(1 << 20):
                seen += len(chunk)
                if seen > limit:
                    raise _too_big(path, what, limit)
                digest.update(chunk)
    except OSError as error:
        raise _unreadable(path, what, error) from None


def check_regular_file(path: str | Path, what: str = "file", limit: int = MAX_TEXT_BYTES) -> None:
    """Refuse ``path`` unless it is a regular file (symlinks followed) of at most ``limit`` bytes.

    Before a file is opened: by :func:`read_bytes`, and by callers whose library opens the file
    itself (safetensors), so a file this process may not read is said to be unreadable, not missing.
    """
    path = Path(path)
    try:
        status = os.stat(path)
    except OSError as error:
        raise _unreadable(path, what, error) from None
    _check_regular(status.st_mode, path, what)
    if status.st_size > limit:
        raise _too_big(path, what, limit)
    if not os.access(path, os.R_OK):  # a library that opens the file itself may call this "missing"
        raise _unreadable(path, what, PermissionError())


def read_text(path: str | Path, what: str = "file", limit: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file's content; a missing, unreadable, non-regular, too big or non-UTF-8 file is one clear error."""
    path = Path(path)
    try:
        return read_bytes(path, what, limit).decode("utf-8")
    except UnicodeDecodeError as error:
        raise RLPruneError(
            f"{what} {path} is not UTF-8 text (byte {error.start} is invalid); save it as UTF-8"
        ) from None


def read_json(path: str | Path, what: str = "JSON file", limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file's content, read as :func:`read_bytes` reads and parsed as :func:`parse_json` parses."""
    path = Path(path)
    try:
        return parse_json(read_bytes(path, what, limit))
    except JSONError as error:
        raise JSONError(f"{what} {path} is not valid JSON: {error}") from None


def parse_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON strictly: a :class:`JSONError` for bad UTF-8 or syntax, nesting deeper than
    ``max_depth`` (checked before parsing, so the parser never recurses out of stack) or an object
    that repeats a key (``json`` would silently keep the last value).

    The error message is the problem alone (``key 'a' appears twice in one object ...``), for the
    caller to say where it is.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise JSONError(f"not UTF-8 text (byte {error.start} is invalid)") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise JSONError(f"arrays or objects nest {depth} levels deep, deeper than the {max_depth} allowed")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise JSONError(f"{error.msg} (line {error.lineno}, column {error.colno})") from None
    except ValueError as error:  # an integer of more digits than Python converts
        raise JSONError(str(error)) from None


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
"""A JSON string; its closing quote is optional, so a match never fails and backtracks: linear time."""
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text`` (brackets inside strings do not count)."""
    brackets = np.frombuffer(_NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii"), dtype=np.uint8)
    if not brackets.size:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused if it repeats a key."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            shown = key if len(key) <= 60 else key[:57] + "..."
            raise JSONError(f"key {shown!r} appears twice in one object; keys may not appear more than once")
        seen.add(key)
    return dict(pairs)


_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _unreadable(path: Path, what: str, error: OSError) -> RLPruneError:
    if isinstance(error, FileNotFoundError):
        return RLPruneError(f"{what} {path} does not exist")
    if isinstance(error, IsADirectoryError):  # became a folder after the check
        return _not_regular(path, what, stat.S_IFDIR)
    if isinstance(error, PermissionError):
        return RLPruneError(f"{what} {path} cannot be read (permission denied)")
    return RLPruneError(f"{what} {path} cannot be read ({error.strerror or error})")


def _too_big(path: Path, what: str, limit: int) -> RLPruneError:
    return RLPruneError(f"{what} {path} is too big: over the {_bytes(limit)} a {what} may hold; give a smaller one")


def _check_regular(mode: int, path: Path, what: str) -> None:
    if not stat.S_ISREG(mode):
        raise _not_regular(path, what, stat.S_IFMT(mode))


def _not_regular(path: Path, what: str, kind: int) -> RLPruneError:
    shown = _KINDS.get(kind, "a special file")
    return RLPruneError(f"{what} {path} cannot be read: it is {shown}, not a regular file; give a file")


def _bytes(size: int) -> str:
    """``size`` for a message: whole MiB or KiB when exact, else bytes."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size:,} bytes"
