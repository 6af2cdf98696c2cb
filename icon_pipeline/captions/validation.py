"""What a valid caption is: 5-8 search phrases of 1-4 lowercase words that say what an icon does.

`normalise_phrases` repairs what is only cosmetic (case, spacing, list markers, duplicates) so a
model answering "Hide Layer" is accepted as is; `validate_phrases` lists what is really wrong
(looks words such as "icon" or colour names, too long, too few) so the caller can regenerate.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from icon_pipeline.core.package_data import data_file

MIN_PHRASES = 5
MAX_PHRASES = 8
MAX_WORDS = 4

# Letters and digits plus the few joiners real queries use ("wi-fi", "c++", "q&a", "don't", "3.5mm").
_ALLOWED_PHRASE = re.compile(r"^[\w\-'&+./# ]+$")
_LIST_MARKER = re.compile(r"^(?:\d+[.)]\s+|[-*\u2022]\s+)")
_EDGE_PUNCTUATION = "\"'`.,;:!?()[]{}<>"


@dataclass(frozen=True)
class BannedTerms:
    """Looks words and phrases from data/banned_words.json; a phrase may contain none of them."""

    version: str
    words: frozenset[str]
    phrases: tuple[str, ...]
    phrase_pattern: re.Pattern[str]  # any banned phrase, as whole words


@lru_cache(maxsize=1)
def banned_terms() -> BannedTerms:
    raw = json.loads(data_file("banned_words.json").read_text("utf-8"))
    phrases = tuple(" ".join(p.lower().split()) for p in raw["phrases"])
    alternatives = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return BannedTerms(
        version=str(raw["version"]),
        words=frozenset(w.lower() for w in raw["words"]),
        phrases=phrases,
        phrase_pattern=re.compile(rf"(?<!\S)(?:{alternatives})(?!\S)"),
    )


def normalise_phrase(phrase: str) -> str:
    """Lowercase, NFKC, single spaces, no list markers or surrounding quotes/punctuation."""
    text = unicodedata.normalize("NFKC", phrase).strip()
    text = _LIST_MARKER.sub("", text)
    text = text.strip(_EDGE_PUNCTUATION + " \t\n")
    return " ".join(text.lower().split())


def normalise_phrases(phrases: list[object]) -> list[str]:
    """Normalise every string answer, drop empties and duplicates, keep the model's order."""
    seen: set[str] = set()
    out: list[str] = []
    for phrase in phrases:
        if not isinstance(phrase, str):
            continue
        clean = normalise_phrase(phrase)
        if clean and clean not in seen:
            seen.add(clean)
            out.append(clean)
    return out


def banned_in(phrase: str) -> str | None:
    """The first banned word or phrase the phrase contains (whole words only), or None."""
    terms = banned_terms()
    words = phrase.lower().split()
    for word in words:
        if word in terms.words:
            return f"word {word!r}"
    match = terms.phrase_pattern.search(" ".join(words))
    return f"phrase {match.group(0)!r}" if match else None


def phrase_problems(phrase: object) -> list[str]:
    """What is wrong with one phrase on its own (count and duplicates are checked by the caller)."""
    if not isinstance(phrase, str):
        return [f"phrase {phrase!r} is not a string"]
    if not phrase.strip():
        return ["empty phrase"]
    problems: list[str] = []
    words = phrase.split()
    if len(words) > MAX_WORDS:
        problems.append(f"phrase {phrase!r} has {len(words)} words (1-{MAX_WORDS} allowed)")
    if phrase != " ".join(words):
        problems.append(f"phrase {phrase!r} has extra whitespace")
    if phrase != phrase.lower():
        problems.append(f"phrase {phrase!r} is not lowercase")
    if not _ALLOWED_PHRASE.match(phrase):
        problems.append(f"phrase {phrase!r} has characters other than letters, digits and - ' & + . / #")
    if not any(ch.isalpha() for ch in phrase):
        problems.append(f"phrase {phrase!r} is a pure number or punctuation")
    banned = banned_in(phrase)
    if banned:
        problems.append(f"phrase {phrase!r} uses banned {banned}")
    return problems


# The offline captioner knows only an icon's name and tags: a bare name ("folder", no tags) gives one
# or two phrases, which still make the icon findable and trainable; a model is held to 5-8.
MIN_OFFLINE_PHRASES = 1


def validate_phrases(phrases: object, min_phrases: int = MIN_PHRASES) -> list[str]:
    """Every problem with a caption answer; an empty list means it is valid."""
    if not isinstance(phrases, list):
        return [f"expected a list of phrases, got {type(phrases).__name__}"]
    problems: list[str] = []
    if not min_phrases <= len(phrases) <= MAX_PHRASES:
        problems.append(f"expected {min_phrases}-{MAX_PHRASES} phrases, got {len(phrases)}")
    seen: set[str] = set()
    for phrase in phrases:
        problems.extend(phrase_problems(phrase))
        if isinstance(phrase, str):
            key = " ".join(phrase.split())
            if key in seen:
                problems.append(f"duplicate phrase {key!r}")
            seen.add(key)
    return problems


def is_valid_phrase(phrase: str) -> bool:
    return not phrase_problems(phrase)
