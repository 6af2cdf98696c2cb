"""Names as comparable words: what matches an icon's name to a query, or to another set's name.

`words` splits on separators and camelCase ("folderPlus_Icon" -> folder, plus, icon), `fold_plural`
folds a plural `s` ("files" -> file; "class", "bus", "news" are kept), and `name_key` is a name or
query as those words ("Shopping carts" and `shopping-cart` -> "shopping cart"). Search's exact-name
boost, keyword search, the corpus's links to the library and the external benchmark's matching
all use these, so an icon is "named" one way everywhere.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from icon_pipeline.core.package_data import data_file

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[a-z0-9]+")
# "don't", "it's": the clitic is no word of its own (a stray "t" would match letter-t)
_CLITIC = re.compile(r"(?<=[a-z])['\u2019](?:t|s|d|ll|m|re|ve)\b")


@lru_cache(maxsize=1)
def not_plurals() -> frozenset[str]:
    """Words ending in s that are not plurals (data/search_words.json)."""
    return frozenset(json.loads(data_file("search_words.json").read_text("utf-8"))["not_plurals"])


def words(text: str) -> list[str]:
    """Every lowercased word of a text, stop words included: "folderPlus_Icon" -> folder, plus, icon."""
    spaced = _CAMEL.sub(" ", text).lower()
    return _WORD.findall(_CLITIC.sub("", spaced))


def fold_plural(word: str) -> str:
    # "files" -> "file", "boxes" stays as is apart from the final s; "class"/"bus"/"news" are kept.
    if (
        len(word) > 3
        and word.endswith("s")
        and not word.endswith(("ss", "us", "is"))
        and word not in not_plurals()
    ):
        return word[:-1]
    return word


def name_key(text: str) -> str:
    """A name or query as comparable words: `shopping-cart`, "Shopping carts" -> "shopping cart";
    every word counts (`letter-a` is "letter a", not "letter")."""
    return " ".join(fold_plural(word) for word in words(text))


def word_set(texts: list[str] | tuple[str, ...]) -> frozenset[str]:
    """Every folded word of some texts: what "shares a word" compares."""
    return frozenset(fold_plural(word) for text in texts for word in words(str(text)))
