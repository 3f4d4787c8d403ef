"""Division keys: one canonical spelling of a division, used by the import, the fallbacks and the API.

A retailer's division names are free text ("Women's Apparel", "Home & Décor"). The lake, the
group codes, the fallback payloads (`__fallback__#<key>`) and the read API's `?division=` all use
the division's **key**: accents folded to ASCII, lower case, apostrophes dropped, every other run
of characters that are not letters or digits turned into one `_`, no `_` at either end, at most
`MAX_KEY_LENGTH` characters. So "Women's Apparel" -> `womens_apparel`, "Home & Décor" ->
`home_decor`, "women" -> `women`. The function is idempotent: a key is its own key.

`division_key_column` is the same rule as Spark built-ins, for the jobs. Spark has no Unicode
normalisation, so its accent folding is a `translate` table built from `unicodedata` (every
character of the Basic Multilingual Plane whose NFKD form has exactly one ASCII character, e.g.
"é" -> "e", "Ø" is dropped as Python drops it). It equals `division_key` for ASCII names and for
accented Latin letters; a character that folds to several ASCII characters (a ligature such as
"ﬁ", "½", "Ǆ") or lies outside that plane is dropped by the column but kept by the function. So
`flashfeed import` is the place that canonicalises (it stores keys); the jobs' expression is the
safety net that keys a lake written by an older import (free text) the same way.
"""
from __future__ import annotations

import functools
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


# --- the same rule as a Spark column expression (built-ins only) ------------------------------
BMP_END = 0x10000                    # characters up to here go into the fold table
SURROGATES = range(0xD800, 0xE000)   # not characters: never in a string


@functools.cache
def _fold_table() -> tuple[str, str]:
    """(from, to) for Spark's `translate`: every non-ASCII BMP character whose NFKD form keeps
    exactly one ASCII character, and that character."""
    sources, targets = [], []
    for code in range(0x80, BMP_END):
        if code in SURROGATES:
            continue
        folded = unicodedata.normalize("NFKD", chr(code)).encode("ascii", "ignore").decode("ascii")
        if len(folded) == 1:
            sources.append(chr(code))
            targets.append(folded)
    return "".join(sources), "".join(targets)


def division_key_column(column):
    """`division_key` as a Spark Column of the column (name or Column) of division names: accents
    folded (`_fold_table`), other non-ASCII dropped, lower case, apostrophes dropped, runs of other
    characters as one `_`, trimmed, at most MAX_KEY_LENGTH. Null where the name has no letter or
    digit (the function raises there) or is null. pyspark is imported here, not at module import."""
    from pyspark.sql import functions as F

    name = F.col(column) if isinstance(column, str) else column
    sources, targets = _fold_table()
    key = F.regexp_replace(F.translate(name, sources, targets), r"[^\x00-\x7F]", "")
    key = F.regexp_replace(F.lower(key), r"['`]", "")
    key = F.regexp_replace(F.regexp_replace(key, r"[^a-z0-9]+", "_"), r"^_+|_+$", "")
    key = F.regexp_replace(F.substring(key, 1, MAX_KEY_LENGTH), r"_+$", "")
    return F.when(key != "", key)
