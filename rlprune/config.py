"""Strict loading of TOML presets and recipes into dataclasses.

Every key must be a field and every value must have the field's type, so a typo or a bad value
fails with a message that names it instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from rlprune.errors import RLPruneError
from rlprune.io import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
"""The source checkout this copy of rlprune runs from (in an installed copy: the site-packages folder)."""
PACKAGE_DATA = Path(__file__).resolve().parent / "_data"
"""The presets, recipes, best-static tables and released policies that travel in the wheel."""


def data_roots() -> list[Path]:
    """Where data is looked up by name, first match wins: the working directory, the source checkout
    (when this copy runs from one), then the package data of an installed copy."""
    roots = [Path.cwd()]
    if (ROOT / "pyproject.toml").is_file():  # an installed copy's ROOT is site-packages: never searched
        roots.append(ROOT)
    roots.append(PACKAGE_DATA)
    unique: dict[Path, Path] = {}
    for root in roots:
        unique.setdefault(root.resolve(), root)
    return list(unique.values())


def data_path(folder: str | Path, name: str) -> Path | None:
    """``FOLDER/NAME`` in the first of :func:`data_roots` that has it (``folder`` is relative, such as
    ``envs`` or ``eval/best-static``), or ``None`` if none does."""
    for root in data_roots():
        candidate = root / folder / name
        if candidate.exists():
            return candidate
    return None


def data_names(folder: str | Path, suffix: str = "") -> list[str]:
    """The sorted names, less ``suffix``, of the entries ending in ``suffix`` in ``FOLDER`` of any of
    :func:`data_roots`."""
    names = {
        entry.name.removesuffix(suffix)
        for root in data_roots()
        if (root / folder).is_dir()
        for entry in (root / folder).iterdir()
        if entry.name.endswith(suffix) and not entry.name.startswith(".")
    }
    return sorted(names)


class ConfigError(RLPruneError):
    """A preset or recipe has an unknown key or a bad value."""


KINDS = {"envs": "env preset", "train": "recipe"}
"""What the TOML files of each configuration folder are called in messages."""


def find_config(name_or_path: str | Path, folder: str) -> Path:
    """A TOML file given by path, or by name in ``FOLDER/`` of the first of :func:`data_roots` that has it."""
    path = Path(name_or_path)
    kind = KINDS.get(folder, f"{folder} preset")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the {kind} by name ({_known(folder)}) or as a .toml file")
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise ConfigError(f"{path} does not exist")
        return path  # load_toml refuses a FIFO or device there
    candidate = data_path(folder, f"{name_or_path}.toml")
    if candidate is not None and candidate.is_file():
        return candidate
    raise ConfigError(f"unknown {kind} {str(name_or_path)!r}; known: {_known(folder)}")


def _known(folder: str) -> str:
    """The names of the TOML files in ``FOLDER/`` across :func:`data_roots`."""
    return ", ".join(data_names(folder, ".toml")) or "none"


MAX_TOML_BYTES = 1 << 20
"""Most bytes a preset or recipe may hold (they are a few hundred); a bigger one is refused unread."""


def load_toml(path: Path) -> dict[str, Any]:
    """A preset's or recipe's tables; it must be a regular UTF-8 file of at most :data:`MAX_TOML_BYTES`."""
    try:
        return tomllib.loads(read_text(path, "TOML file", MAX_TOML_BYTES))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(f"{path} is not valid TOML: its arrays or tables nest too deeply") from None
    except RLPruneError as error:  # missing, not a regular file, too big or not UTF-8
        raise ConfigError(str(error)) from None


def from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        for option in options:
            try:
                return _convert(option, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} = {value!r} has the wrong type; expected {_name(hint)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r} must be a list")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        _, item = typing.get_args(hint)
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r} must be a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r} must be an integer")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ConfigError(f"{where} = {value!r} must be a {hint.__name__}")
        return value
    return value


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
