"""Division keys: one canonical spelling of a division, used by the import, the fallbacks and the API.

A retailer's division names are free text ("Women's Apparel", "Home & Décor"). The lake, the
group codes, the fallback payloads (`__fallback__#<key>`) and the read API's `?division=` all use
the division's **key**: accents folded to ASCII, lower case, apostrophes dropped, every other run
of characters that are not letters or digits turned into one `_`, no `_` at either end, at most
`MAX_KEY_LENGTH` characters. So "Women's Apparel" -> `womens_apparel`, "Home & Décor" ->
`home_decor`, "women" -> `women`. The function is idempotent: a key is its own key.

`division_key_column` is the same rule as Spark built-ins, for the jobs.
"""
from __future__ import annotations

import re
import unicodedata

MAX_KEY_LENGTH = 64
KEY_PATTERN = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
_APOSTROPHES = re.compile(r"['\u2019`]")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def division_key(name: str) -> str:
    """The canonical key of a division name; ValueError when nothing of it is a letter or digit."""
    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    key = _NOT_ALNUM.sub("_", _APOSTROPHES.sub("", ascii_name.lower())).strip("_")[:MAX_KEY_LENGTH].rstrip("_")
    if not key:
        raise ValueError(f"division {name!r} has no letter or digit: it cannot be a division key")
    return key


def is_division_key(text: str) -> bool:
    return len(text) <= MAX_KEY_LENGTH and bool(KEY_PATTERN.match(text))
