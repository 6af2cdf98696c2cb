"""Tokenising one icon name: chunks, CamelCase and digit splits, sizes, densities and Figma variant
properties, into words with the separators between them."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from icon_pipeline.lexicon.words import load_word_lists

_CHUNK = re.compile(r"[^\W_]+")  # runs of letters/digits (Unicode-aware); everything else separates
_DPI_AT = re.compile(r"@(\d+(?:[.,]\d+)?)x(?![^\W_])", re.IGNORECASE)
_SIZE_GRID = re.compile(r"(\d{1,4})x(\d{1,4})", re.IGNORECASE)
_BARE_SCALE = re.compile(r"\d(?:\.\d+)?x", re.IGNORECASE)
# Figma variant components are named "Size=24, Style=Filled": a property key is never meaning
_PROPERTY = re.compile(r"([^\W\d_][^=,;/]*?)\s*=\s*([^=,;/]*)")
_DIGIT, _UPPER, _LOWER = 0, 1, 2


@dataclass(slots=True)
class Word:
    text: str  # lowercased
    chunk: int  # index of the segment it came from
    kind: str  # "alpha" (has a letter), "number", "size", "dpi"
    value: str = ""  # size or scale recorded in the variant


@dataclass(slots=True)
class ParsedName:
    words: list[Word]
    seps: list[str]  # seps[i]: the separator text before segment i
    segments: list[str]  # lowercased texts of the segments that hold a letter word (for affixes)
    segment_chunks: list[int]  # the chunk index of each of `segments`
    compound: bool  # some segment holds two or more words: separators are field separators
    dpi_marks: list[str]
    properties: list[tuple[str, str]]  # Figma variant properties ("size", "24"); value "" if kept


def _char_class(ch: str) -> int:
    if ch.isnumeric():
        return _DIGIT
    return _UPPER if ch.isupper() else _LOWER


def _split_segment(segment: str) -> list[str]:
    """Split one separator-free segment on case and digit boundaries, keeping 3d/4k/mp3/h264 whole."""
    parts: list[str] = []
    start = 0
    n = len(segment)
    classes = [_char_class(ch) for ch in segment]
    for i in range(1, n):
        prev, cur = classes[i - 1], classes[i]
        boundary = (prev != cur and _DIGIT in (prev, cur)) or (prev == _LOWER and cur == _UPPER)
        # "PDFFile" -> PDF File: the last capital of a run starts the next word
        if prev == _UPPER and cur == _UPPER and i + 1 < n and classes[i + 1] == _LOWER:
            boundary = True
        # "iOS", "iPhone", "eBook": a lone leading lowercase letter belongs to the word
        if prev == _LOWER and cur == _UPPER and i == 1:
            boundary = False
        if boundary:
            parts.append(segment[start:i])
            start = i
    parts.append(segment[start:])
    # Merge digits with short letter parts (3d, 4k, mp3, a11y): a size/number next to a real word
    # (Home24Regular) still splits.
    merged: list[str] = []
    for part in parts:
        if merged and _glues(merged[-1], part):
            merged[-1] += part
        else:
            merged.append(part)
    return merged


def _is_short_letters(part: str) -> bool:
    return len(part) <= 2 and not part.isnumeric()


def _glues(left: str, right: str) -> bool:
    left_digit, right_digit = left[-1].isnumeric(), right[0].isnumeric()
    if left_digit == right_digit:
        return False
    letters = right if left_digit else left
    # `left` may already be a merged "3d"; judge its letter tail only
    if not left_digit:
        letters = re.sub(r"^.*\d", "", left) or left
    return _is_short_letters(letters)


def is_field_sep(sep: str) -> bool:
    """`_`, space, `.`, `/`, `@`, runs of separators: between fields. A single `-` joins words."""
    return bool(sep) and sep != "-"


@lru_cache(maxsize=65536)
def parse_name(name: str) -> ParsedName:
    lists = load_word_lists()
    text = unicodedata.normalize("NFKC", name)
    dpi_marks = [f"@{m.group(1).replace(',', '.')}x" for m in _DPI_AT.finditer(text)]
    text = _DPI_AT.sub("_", text)
    properties: list[tuple[str, str]] = []

    def take_property(match: re.Match[str]) -> str:
        key, value = " ".join(match.group(1).split()).lower(), match.group(2).strip()
        if key in lists.variant_properties or key.startswith("property"):
            properties.append((key, value.lower()))
            return "_"
        properties.append((key, ""))  # an unknown key ("Action=Delete"): its value is meaning
        return f"_{value}_"

    text = _PROPERTY.sub(take_property, text)
    matches = list(_CHUNK.finditer(text))
    seps = [text[(matches[i - 1].end() if i else 0) : m.start()] for i, m in enumerate(matches)]
    after = [*seps[1:], text[matches[-1].end() :] if matches else ""]
    words: list[Word] = []
    segments: list[str] = []
    segment_chunks: list[int] = []
    compound = False
    for index, match in enumerate(matches):
        raw = match.group(0)
        lower = raw.lower()
        set_off = is_field_sep(seps[index]) or is_field_sep(after[index])
        unit = next((u for u in lists.size_units if lower.endswith(u) and lower[: -len(u)].isdecimal()), "")
        if unit and len(lower) - len(unit) <= 4:
            words.append(Word(lower, index, "size", lower[: -len(unit)]))
            continue
        grid = _SIZE_GRID.fullmatch(lower)
        if grid and all(int(g) in lists.icon_sizes for g in grid.groups()):
            words.append(Word(lower, index, "size", lower))
            continue
        if lower in lists.dpi or (set_off and _BARE_SCALE.fullmatch(lower)):
            words.append(Word(lower, index, "dpi", lower))
            continue
        parts = _split_segment(raw)
        alpha_parts = [p for p in parts if not p.isnumeric()]
        compound = compound or len(alpha_parts) >= 2
        if alpha_parts:
            segments.append(lower)
            segment_chunks.append(index)
        for part in parts:
            if not part.isnumeric():
                words.append(Word(part.lower(), index, "alpha"))
                continue
            # An icon size set off by "_" (SDC_x_18_N) or glued into CamelCase (Home24Regular) is a
            # size; "clock-24", "crop-16-9", "flightradar24" are numbers of the icon's meaning.
            glued = len(alpha_parts) >= 2 or any(ch.isupper() for ch in raw)
            is_size = part.isdecimal() and int(part) in lists.icon_sizes and (set_off or glued)
            words.append(Word(part, index, "size" if is_size else "number", part))
    return ParsedName(words, seps, segments, segment_chunks, compound, dpi_marks, properties)


def is_single(word: Word) -> bool:
    return word.kind == "alpha" and is_single_text(word.text)


@lru_cache(maxsize=65536)
def is_single_text(text: str) -> bool:
    return sum(ch.isalnum() for ch in text) < 2
