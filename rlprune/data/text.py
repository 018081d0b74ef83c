"""Text as answer matching sees it: Unicode NFKC, case-folded, without punctuation or invisible characters.

Both sides of a match (the gold answer and the output) go through :func:`fold`, so a gold "Zoe" with a
combining diaeresis matches "Zoë", fullwidth "Ｐａｒｉｓ" matches "Paris", "ﬁsh" matches "fish" and
"Straße" matches "STRASSE". Format characters (zero-width spaces, direction marks) are invisible
and vanish, as punctuation does.
"""

from __future__ import annotations

import re
import string
import unicodedata

_ASCII_DROPPED = str.maketrans("", "", string.punctuation)
_INVISIBLE = frozenset({"Cc", "Cf", "Cs"})  # controls (other than whitespace), format characters, surrogates
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Dropped(dict):
    """A ``str.translate`` table filled per character on first sight: punctuation (ASCII, and every
    Unicode punctuation category) and invisible characters become nothing; whitespace and the rest stay."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        category = unicodedata.category(char)
        dropped = not char.isspace() and (category[0] == "P" or category in _INVISIBLE or char in string.punctuation)
        self[code] = "" if dropped else char
        return self[code]


_DROPPED = _Dropped()


def fold(text: str) -> str:
    """``text`` in NFKC, case-folded, with punctuation and invisible characters removed (ASCII: lower case
    without punctuation, as before Unicode was folded)."""
    if text.isascii():
        return text.lower().translate(_ASCII_DROPPED)
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return folded.translate(_DROPPED)


def visible(text: str) -> bool:
    """Whether ``text`` holds a character one can see: a letter, a digit or a symbol."""
    return any(unicodedata.category(char)[0] in "LNS" for char in text)


def surrogate_field(value: object, where: str = "") -> str | None:
    """Where in a parsed JSON value a string holds a lone surrogate (``"\\ud800"`` decodes to one, and
    it is not text: it cannot be written as UTF-8): ``question``, ``tags[2]``, ``source.name`` or
    ``a key of source``; ``None`` when there is none."""
    if isinstance(value, str):
        return where if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                return f"a key of {where}" if where else "a key"
            found = surrogate_field(item, f"{where}.{key}" if where else key)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = surrogate_field(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None
