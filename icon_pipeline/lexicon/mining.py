"""Lexicon mining: search terms (phrases and tokens) from icon names and tags, over a whole library.

A name such as ``SDC_MarkForRedaction_18_N-SDC___Icons_Acrobat_Desktop_Web_Mobile`` carries one
idea ("mark for redaction") wrapped in boilerplate. The boilerplate is found mostly by statistics
over the library, because every design team invents its own affixes:

1. Tokenise: split on separators (anything not a letter or digit), camelCase/PascalCase and
   digit boundaries (``Home24Regular`` -> home 24 regular), but keep short letter+digit words
   whole (``3d``, ``4k``, ``mp3``, ``h264``) because splitting them destroys their meaning.
2. Library statistics (only when the library has at least ``min_names`` names): a word present in
   ``affix_share`` (30 %) of the names is boilerplate; so is a leading/trailing run of name
   segments (the text between separators) shared by ``segment_share`` (20 %) of the names.
3. Intrinsic marks, anywhere: pure numbers, sizes (``24px``, ``16x16``, an icon size such as
   ``_18_`` set off by ``_`` or inside a CamelCase word) and DPI marks (``@2x``, ``hdpi``).
4. Hand lists (``data/lexicon_stopwords.json``) only help: platform, product, generic and style
   words are dropped when they sit in the name's leading/trailing affix run *and* the run is
   clearly structural (set off by ``_``/space/``.``, or two or more affix words together) or the
   word is frequent across the library; style words also when they end the name and end at
   least ``style_share`` of the library's names (``-filled``). They are never dropped from the
   middle of a name or when the name has no other word (Tabler's ``device-desktop``, ``bold``,
   ``line``, ``chart-line`` keep their words). Style words become ``variant["style"]``.

Decisions (documented, tested):

- The seed name alone (a library of one, no statistics) also gives
  ``["mark for redaction", "mark", "for", "redaction"]``: ``SDC``/``Icons``/``Acrobat``/``Desktop``/
  ``Web``/``Mobile`` are listed words in ``_``-separated affix runs, ``18`` is a size and the
  single letter ``N`` sits beyond the size in the trailing run (a variant code).
- The statistics win over meaning: a word above the shares is dropped even where it is a name's
  only word (the tags then carry that icon); raise the shares for a library whose names share a
  real leading word ("arrow-...") on a large part of the set.
- Tabler: no word reaches 30 % ("off" is in 10 % of names, "brand" in 7 %), so "brand" and "off"
  stay: they carry meaning (brand logos; the disabled state). A single-letter word is kept inside
  phrases ("letter a") but is not a token by itself.
- A phrase is a run of two or more kept words. When a name has CamelCase compounds the separators
  are field separators and a phrase stays inside one segment (``Navigation_ArrowLeft`` ->
  "arrow left"); otherwise separators separate words (``arrow-big-down`` -> "arrow big down").
- ``terms`` come from the name only (phrases, then tokens); tags go to ``tag_terms`` (phrases,
  then words, without terms the name already gave). Stopwords stay name tokens (the spec's example
  keeps "for") but never count as useful and are not tag tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

from icon_pipeline.core.package_data import data_file
from icon_pipeline.library.records import IconRecord

# Bump when the mining rules change: part of version(), so caption caches notice.
LEXICON_ALGORITHM_VERSION = "1"
MAX_AFFIX_SEGMENTS = 8

REASON_SIZE = "size"
REASON_DPI = "dpi"
REASON_NUMBER = "number"
REASON_STYLE = "style"
REASON_PLATFORM = "platform"
REASON_PRODUCT = "product"
REASON_GENERIC = "generic"
REASON_VARIANT_CODE = "variant code"
REASON_SINGLE = "single character"
REASON_PROPERTY = "variant property"
_INTRINSIC = {REASON_SIZE, REASON_DPI, REASON_NUMBER}


def affix_reason(share: float) -> str:
    return f"library-wide affix (in {round(share * 100)}% of names)"


def tag_affix_reason(share: float) -> str:
    return f"library-wide tag (in {round(share * 100)}% of icons)"


@dataclass(frozen=True)
class WordLists:
    """The hand lists shipped in data/lexicon_stopwords.json."""

    stopwords: frozenset[str]
    generic: frozenset[str]
    tag_generic: frozenset[str]
    platform: frozenset[str]
    product: frozenset[str]
    style: frozenset[str]
    dpi: frozenset[str]
    variant_properties: frozenset[str]
    size_units: tuple[str, ...]
    icon_sizes: frozenset[int]

    def category(self, word: str) -> str | None:
        """The hand-list category of a word; style first (a style word is a variant, not noise)."""
        if word in self.style:
            return REASON_STYLE
        if word in self.platform:
            return REASON_PLATFORM
        if word in self.product:
            return REASON_PRODUCT
        if word in self.generic:
            return REASON_GENERIC
        return None


@lru_cache(maxsize=1)
def load_word_lists() -> WordLists:
    text = data_file("lexicon_stopwords.json").read_text("utf-8")
    raw = json.loads(text)
    return WordLists(
        stopwords=frozenset(raw["stopwords"]),
        generic=frozenset(raw["generic"]),
        tag_generic=frozenset(raw["tag_generic"]),
        platform=frozenset(raw["platform"]),
        product=frozenset(raw["product"]),
        style=frozenset(raw["style"]),
        dpi=frozenset(raw["dpi"]),
        variant_properties=frozenset(raw["variant_properties"]),
        size_units=tuple(raw["size_units"]),
        icon_sizes=frozenset(int(s) for s in raw["icon_sizes"]),
    )


@dataclass(frozen=True)
class LexiconConfig:
    """Thresholds of the library statistics (shares are fractions of the library's names)."""

    affix_share: float = 0.30
    segment_share: float = 0.20
    min_names: int = 20
    list_share: float = 0.02
    style_share: float = 0.01
    tag_share: float = 0.30
    max_tag_phrase_words: int = 4

    def __post_init__(self) -> None:
        for name in ("affix_share", "segment_share", "list_share", "style_share", "tag_share"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"LexiconConfig.{name} must be in (0, 1], got {value!r}")
        if self.min_names < 1 or self.max_tag_phrase_words < 2:
            raise ValueError("LexiconConfig: min_names must be >= 1 and max_tag_phrase_words >= 2")


@dataclass(frozen=True)
class NameItem:
    """One icon's name and designer tags, keyed by the icon id. `style` is the catalog's style, if any."""

    key: str
    name: str
    tags: Sequence[Any] = ()
    style: str = ""

    @classmethod
    def from_icon(cls, icon: IconRecord) -> NameItem:
        return cls(key=icon.icon_id, name=icon.raw_name or icon.name, tags=icon.tags, style=icon.style)


@dataclass
class LexiconEntry:
    """What the lexicon knows about one icon.

    terms: name phrases then name tokens, deduplicated (in the order of the spec's example:
        `SDC_MarkForRedaction_18_...` -> mark for redaction, mark, for, redaction).
    tag_terms: tag phrases then tag words, without terms already in `terms`.
    useful_token_count: distinct informative words from name + tags (no stopwords, no single letters).
    variant: attributes found in the name: style, size, scale, code.
    dropped: (token, reason) for everything left out, in name order, then tags.
    base_name: the kept words and numbers joined by "-": groups style/size variants of one icon.
    """

    key: str
    name: str
    terms: list[str] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    tag_terms: list[str] = field(default_factory=list)
    useful_token_count: int = 0
    variant: dict[str, str] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    base_name: str = ""

    @property
    def icon_id(self) -> str:
        return self.key

    @property
    def all_terms(self) -> list[str]:
        return _dedupe([*self.terms, *self.tag_terms])

    def to_record(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "base_name": self.base_name,
            "terms": list(self.terms),
            "phrases": list(self.phrases),
            "tokens": list(self.tokens),
            "tag_terms": list(self.tag_terms),
            "useful_token_count": self.useful_token_count,
            # lists of small structs, so the table stores as parquet as well as JSON
            "variant": [{"attribute": k, "value": v} for k, v in sorted(self.variant.items())],
            "dropped": [{"token": t, "reason": r} for t, r in self.dropped],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LexiconEntry:
        def strings(value: Any) -> list[str]:
            return [str(v) for v in (value if value is not None else [])]

        return cls(
            key=str(record["key"]),
            name=str(record["name"]),
            base_name=str(record.get("base_name") or ""),
            terms=strings(record.get("terms")),
            phrases=strings(record.get("phrases")),
            tokens=strings(record.get("tokens")),
            tag_terms=strings(record.get("tag_terms")),
            useful_token_count=int(record.get("useful_token_count") or 0),
            variant={str(v["attribute"]): str(v["value"]) for v in _items(record.get("variant"))},
            dropped=[(str(d["token"]), str(d["reason"])) for d in _items(record.get("dropped"))],
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The CLI's line: the name, its terms and why things were dropped."""
        return {
            "name": self.name,
            "terms": self.terms,
            "phrases": self.phrases,
            "tokens": self.tokens,
            "tags": self.tag_terms,
            "useful_token_count": self.useful_token_count,
            "variant": self.variant,
            "dropped": [list(d) for d in self.dropped],
        }


@dataclass
class Lexicon:
    """A mined library: one entry per icon, the boilerplate found and the term counts.

    boilerplate: word -> share of names it was found in (only words dropped by statistics).
    vocabulary: term -> number of icons that have it (name and tag terms).
    failures: key -> reason for items that could not be mined (the batch carries on).
    """

    entries: dict[str, LexiconEntry]
    boilerplate: dict[str, float] = field(default_factory=dict)
    vocabulary: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def version(self) -> str:
        """A short hash of the entries' content: deterministic, changes when any entry changes."""
        payload = json.dumps(
            [LEXICON_ALGORITHM_VERSION, [self.entries[k].to_record() for k in sorted(self.entries)]],
            ensure_ascii=False,
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def to_records(self) -> list[dict[str, Any]]:
        return [self.entries[k].to_record() for k in sorted(self.entries)]

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], boilerplate: Mapping[str, float] | None = None
    ) -> Lexicon:
        entries = {e.key: e for e in (LexiconEntry.from_record(r) for r in records)}
        return cls(entries=entries, boilerplate=dict(boilerplate or {}), vocabulary=_vocabulary(entries))


# --- tokenising -----------------------------------------------------------------------------------

_CHUNK = re.compile(r"[^\W_]+")  # runs of letters/digits (Unicode-aware); everything else separates
_DPI_AT = re.compile(r"@(\d+(?:[.,]\d+)?)x(?![^\W_])", re.IGNORECASE)
_SIZE_GRID = re.compile(r"(\d{1,4})x(\d{1,4})", re.IGNORECASE)
_BARE_SCALE = re.compile(r"\d(?:\.\d+)?x", re.IGNORECASE)
# Figma variant components are named "Size=24, Style=Filled": a property key is never meaning
_PROPERTY = re.compile(r"([^\W\d_][^=,;/]*?)\s*=\s*([^=,;/]*)")
_DIGIT, _UPPER, _LOWER = 0, 1, 2


@dataclass(slots=True)
class _Word:
    text: str  # lowercased
    chunk: int  # index of the segment it came from
    kind: str  # "alpha" (has a letter), "number", "size", "dpi"
    value: str = ""  # size or scale recorded in the variant


@dataclass(slots=True)
class _Parsed:
    words: list[_Word]
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


def _is_field_sep(sep: str) -> bool:
    """`_`, space, `.`, `/`, `@`, runs of separators: between fields. A single `-` joins words."""
    return bool(sep) and sep != "-"


@lru_cache(maxsize=65536)
def _parse(name: str) -> _Parsed:
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
    words: list[_Word] = []
    segments: list[str] = []
    segment_chunks: list[int] = []
    compound = False
    for index, match in enumerate(matches):
        raw = match.group(0)
        lower = raw.lower()
        set_off = _is_field_sep(seps[index]) or _is_field_sep(after[index])
        unit = next((u for u in lists.size_units if lower.endswith(u) and lower[: -len(u)].isdecimal()), "")
        if unit and len(lower) - len(unit) <= 4:
            words.append(_Word(lower, index, "size", lower[: -len(unit)]))
            continue
        grid = _SIZE_GRID.fullmatch(lower)
        if grid and all(int(g) in lists.icon_sizes for g in grid.groups()):
            words.append(_Word(lower, index, "size", lower))
            continue
        if lower in lists.dpi or (set_off and _BARE_SCALE.fullmatch(lower)):
            words.append(_Word(lower, index, "dpi", lower))
            continue
        parts = _split_segment(raw)
        alpha_parts = [p for p in parts if not p.isnumeric()]
        compound = compound or len(alpha_parts) >= 2
        if alpha_parts:
            segments.append(lower)
            segment_chunks.append(index)
        for part in parts:
            if not part.isnumeric():
                words.append(_Word(part.lower(), index, "alpha"))
                continue
            # An icon size set off by "_" (SDC_x_18_N) or glued into CamelCase (Home24Regular) is a
            # size; "clock-24", "crop-16-9", "flightradar24" are numbers of the icon's meaning.
            glued = len(alpha_parts) >= 2 or any(ch.isupper() for ch in raw)
            is_size = part.isdecimal() and int(part) in lists.icon_sizes and (set_off or glued)
            words.append(_Word(part, index, "size" if is_size else "number", part))
    return _Parsed(words, seps, segments, segment_chunks, compound, dpi_marks, properties)


def _is_single(word: _Word) -> bool:
    return word.kind == "alpha" and _is_single_text(word.text)


@lru_cache(maxsize=65536)
def _is_single_text(text: str) -> bool:
    return sum(ch.isalnum() for ch in text) < 2


def _dedupe(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _items(value: Any) -> list[Mapping[str, Any]]:
    return [] if value is None else list(value)


# --- library statistics ---------------------------------------------------------------------------


@dataclass
class _Stats:
    active: bool
    n: int
    word_df: Counter[str] = field(default_factory=Counter)
    last_word: Counter[str] = field(default_factory=Counter)
    prefixes: Counter[tuple[str, ...]] = field(default_factory=Counter)
    suffixes: Counter[tuple[str, ...]] = field(default_factory=Counter)
    tag_df: Counter[str] = field(default_factory=Counter)
    tag_word_df: Counter[str] = field(default_factory=Counter)

    def share(self, counter: Counter[Any], key: Any) -> float:
        return counter[key] / self.n if self.n else 0.0


def _tag_words(tag: Any) -> tuple[str, ...]:
    """A tag's words, lowercased; numbers, sizes and DPI marks are not words (but "retina" is)."""
    if tag is None or isinstance(tag, bool):
        return ()
    return _tag_words_of(str(tag))


@lru_cache(maxsize=65536)
def _tag_words_of(tag: str) -> tuple[str, ...]:
    return tuple(w.text for w in _parse(tag).words if _is_tag_word(w))


def _is_tag_word(word: _Word) -> bool:
    return word.kind == "alpha" or (word.kind == "dpi" and not any(ch.isdigit() for ch in word.text))


def _collect_stats(parsed: list[_Parsed], tags: list[list[tuple[str, ...]]], config: LexiconConfig) -> _Stats:
    stats = _Stats(active=len(parsed) >= config.min_names, n=len(parsed))
    if not stats.active:
        return stats
    for item, item_tags in zip(parsed, tags, strict=True):
        alpha = [w.text for w in item.words if w.kind == "alpha"]
        stats.word_df.update(set(alpha))
        if alpha:
            stats.last_word[alpha[-1]] += 1
        segs = item.segments
        depth = min(len(segs) - 1, MAX_AFFIX_SEGMENTS)
        for d in range(1, depth + 1):
            stats.prefixes[tuple(segs[:d])] += 1
            stats.suffixes[tuple(segs[-d:])] += 1
        stats.tag_df.update({" ".join(t) for t in item_tags if t})
        stats.tag_word_df.update({w for t in item_tags for w in t})
    return stats


def _affix_segments(item: _Parsed, stats: _Stats, config: LexiconConfig) -> dict[int, float]:
    """Leading/trailing segments shared by many names: segment (chunk) index -> share of names."""
    segs = item.segments
    found: dict[int, float] = {}
    max_depth = min(len(segs) - 1, MAX_AFFIX_SEGMENTS)  # always keep one segment
    lead = 0
    for depth in range(1, max_depth + 1):
        share = stats.share(stats.prefixes, tuple(segs[:depth]))
        if share < config.segment_share:
            break
        found[item.segment_chunks[depth - 1]] = share
        lead = depth
    for depth in range(1, max_depth + 1):
        if lead + depth > len(segs) - 1:
            break
        share = stats.share(stats.suffixes, tuple(segs[-depth:]))
        if share < config.segment_share:
            break
        found[item.segment_chunks[-depth]] = share
    return found


# --- one name -------------------------------------------------------------------------------------


def _classify(
    item: _Parsed, stats: _Stats, config: LexiconConfig, boilerplate: dict[str, float]
) -> tuple[list[str | None], dict[str, str]]:
    lists = load_word_lists()
    words = item.words
    reasons: list[str | None] = [None] * len(words)
    variant: dict[str, str] = {}
    for key, value in item.properties:
        if value:
            variant.setdefault(key, value)
    if item.dpi_marks:
        variant.setdefault("scale", item.dpi_marks[0][1:])
    for i, w in enumerate(words):
        if w.kind == "size":
            reasons[i] = REASON_SIZE
            variant.setdefault("size", w.value)
        elif w.kind == "dpi":
            reasons[i] = REASON_DPI
            variant.setdefault("scale", w.value)
        elif w.kind == "number":
            reasons[i] = REASON_NUMBER

    if stats.active:
        segment_affixes = _affix_segments(item, stats, config)
        for i, w in enumerate(words):
            if reasons[i] is not None:
                continue
            share = stats.share(stats.word_df, w.text)
            best = max(share if share >= config.affix_share else 0.0, segment_affixes.get(w.chunk, 0.0))
            if best > 0:
                reasons[i] = affix_reason(best)
                boilerplate[w.text] = max(boilerplate.get(w.text, 0.0), best)
                if w.text in lists.style:
                    variant.setdefault("style", w.text)
                elif _is_single(w):
                    variant.setdefault("code", w.text)

    _drop_listed_affixes(item, stats, config, reasons, variant)
    return reasons, variant


def _drop_listed_affixes(
    item: _Parsed, stats: _Stats, config: LexiconConfig, reasons: list[str | None], variant: dict[str, str]
) -> None:
    """Hand-listed words in the leading/trailing affix runs (see the module docstring)."""
    lists = load_word_lists()
    words = item.words

    def droppable(i: int) -> bool:
        return reasons[i] is not None or lists.category(words[i].text) is not None or _is_single(words[i])

    end = len(words)
    while end > 0 and droppable(end - 1):
        end -= 1

    def style_by_stats(word: _Word) -> bool:
        return not stats.active or stats.share(stats.last_word, word.text) >= config.style_share

    if end == 0:
        # nothing but listed words: they are the name's meaning (Tabler "bold", "apple"), except
        # a trailing style variant after them ("asset-filled")
        i = len(words) - 1
        while i > 0 and reasons[i] is None and lists.category(words[i].text) == REASON_STYLE:
            if not style_by_stats(words[i]):
                break
            reasons[i] = REASON_STYLE
            variant.setdefault("style", words[i].text)
            i -= 1
        return
    start = 0
    while droppable(start):
        start += 1
    trailing = list(range(end, len(words)))
    leading = list(range(start - 1, -1, -1))  # from the core outwards
    for run, core_index, is_trailing in ((trailing, end - 1, True), (leading, start, False)):
        if not run:
            continue
        first_chunk, core_chunk = words[run[0]].chunk, words[core_index].chunk
        # "_Web_Mobile" is set off from the name; "device-desktop" is one name
        set_off = first_chunk != core_chunk and _is_field_sep(item.seps[max(first_chunk, core_chunk)])
        past_mark = False  # beyond a size, DPI mark, affix or listed word the run is all affix
        for i in run:
            w = words[i]
            if reasons[i] is None:
                category = lists.category(w.text)
                if category == REASON_STYLE:
                    if set_off or past_mark or (is_trailing and style_by_stats(w)):
                        reasons[i] = REASON_STYLE
                        variant.setdefault("style", w.text)
                elif category is not None:
                    frequent = stats.active and stats.share(stats.word_df, w.text) >= config.list_share
                    if set_off or past_mark or frequent:
                        reasons[i] = category
                elif _is_single(w) and past_mark:
                    reasons[i] = REASON_VARIANT_CODE  # the "N" of "_18_N-"
                    variant.setdefault("code", w.text)
            if reasons[i] not in (None, REASON_NUMBER, REASON_VARIANT_CODE):
                past_mark = True


def _name_terms(
    item: _Parsed, reasons: list[str | None]
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Phrases (runs of >= 2 kept words), tokens (kept words of >= 2 characters) and drops."""
    phrases: list[str] = []
    tokens: list[str] = []
    dropped: list[tuple[str, str]] = []
    run: list[_Word] = []
    previous_chunk = -1

    def close_run() -> None:
        # numbers stay inside phrases ("clock 24", "a b 2") but a phrase needs a letter word
        if len(run) >= 2 and any(w.kind == "alpha" for w in run):
            phrases.append(" ".join(w.text for w in run))
        run.clear()

    for word, reason in zip(item.words, reasons, strict=True):
        if reason is not None and reason != REASON_NUMBER:
            close_run()
            dropped.append((word.text, reason))
            previous_chunk = word.chunk
            continue
        if item.compound and word.chunk != previous_chunk:
            close_run()  # CamelCase compounds: a phrase stays inside its segment
        previous_chunk = word.chunk
        run.append(word)
        if reason is not None:
            dropped.append((word.text, reason))
        elif _is_single(word):
            dropped.append((word.text, REASON_SINGLE))
        else:
            tokens.append(word.text)
    close_run()
    return _dedupe(phrases), _dedupe(tokens), dropped


def _base_name(name: str, item: _Parsed, reasons: list[str | None]) -> str:
    kept = [w.text for w, r in zip(item.words, reasons, strict=True) if r is None or r == REASON_NUMBER]
    # a name of nothing but marks ("Size=24, Style=Filled") still needs a key of its own
    return "-".join(kept or [w.text for w in item.words]) or " ".join(name.lower().split())


def _tag_terms(
    tags: list[tuple[str, ...]], raw_tags: Sequence[Any], stats: _Stats, config: LexiconConfig
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Tag phrases, tag words and drops. Tags are lowercased, split like names and deduplicated."""
    lists = load_word_lists()
    phrases: list[str] = []
    words: list[str] = []
    dropped: list[tuple[str, str]] = []
    for tag_words, raw in zip(tags, raw_tags, strict=True):
        if raw is not None and not isinstance(raw, bool):
            # numbers, sizes and DPI marks of a tag are not words: say so once each
            for word in _parse(str(raw)).words:
                if not _is_tag_word(word):
                    dropped.append((word.text, word.kind))
        if not tag_words:
            continue
        whole = " ".join(tag_words)
        whole_share = stats.share(stats.tag_df, whole) if stats.active else 0.0
        if whole_share >= config.tag_share:
            dropped.append((whole, tag_affix_reason(whole_share)))
            continue
        informative = any(w not in lists.stopwords and not _is_single_text(w) for w in tag_words)
        if 2 <= len(tag_words) <= config.max_tag_phrase_words and informative:
            phrases.append(whole)
        for word in tag_words:
            share = stats.share(stats.tag_word_df, word) if stats.active else 0.0
            if _is_single_text(word):
                dropped.append((word, REASON_SINGLE))
            elif word in lists.stopwords:
                continue  # stays inside its phrase; alone it says nothing
            elif word in lists.tag_generic:
                dropped.append((word, REASON_GENERIC))
            elif share >= config.tag_share:
                dropped.append((word, tag_affix_reason(share)))
            else:
                words.append(word)
    return _dedupe(phrases), _dedupe(words), dropped


def _vocabulary(entries: Mapping[str, LexiconEntry]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for entry in entries.values():
        counts.update(set(entry.terms) | set(entry.tag_terms))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def mine_lexicon(items: Sequence[NameItem], config: LexiconConfig | None = None) -> Lexicon:
    """Mine every item with the statistics of the whole library (the items given together).

    An item whose name is not text, or whose key repeats, is recorded in `failures` and skipped.
    """
    config = config or LexiconConfig()
    lists = load_word_lists()
    failures: dict[str, str] = {}
    valid: list[NameItem] = []
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            failures[f"{item.key}#{len(failures)}"] = f"duplicate key {item.key!r}: first occurrence kept"
            continue
        if not isinstance(item.name, str):
            failures[item.key] = f"name of {item.key!r} is not text (got {type(item.name).__name__})"
            continue
        seen.add(item.key)
        valid.append(item)

    parsed = [_parse(item.name) for item in valid]
    raw_tags = [_tag_list(item.tags) for item in valid]
    tag_words = [[_tag_words(t) for t in tags] for tags in raw_tags]
    stats = _collect_stats(parsed, tag_words, config)
    boilerplate: dict[str, float] = {}
    entries: dict[str, LexiconEntry] = {}
    for item, name_parse, tags, words in zip(valid, parsed, raw_tags, tag_words, strict=True):
        reasons, variant = _classify(name_parse, stats, config, boilerplate)
        if item.style and "style" not in variant:
            variant["style"] = item.style.strip().lower()
        phrases, tokens, dropped = _name_terms(name_parse, reasons)
        terms = _dedupe([*phrases, *tokens])
        term_set = set(terms)
        tag_phrases, tag_tokens, tag_dropped = _tag_terms(words, tags, stats, config)
        useful = {t for t in [*tokens, *tag_tokens] if t not in lists.stopwords}
        properties = [(f"{k}={v}" if v else k, REASON_PROPERTY) for k, v in name_parse.properties]
        dpi_marks = [(m, REASON_DPI) for m in name_parse.dpi_marks]
        dropped = [*properties, *dpi_marks, *dropped, *tag_dropped]
        entries[item.key] = LexiconEntry(
            key=item.key,
            name=item.name,
            terms=terms,
            phrases=phrases,
            tokens=tokens,
            tag_terms=[t for t in _dedupe([*tag_phrases, *tag_tokens]) if t not in term_set],
            useful_token_count=len(useful),
            variant=variant,
            dropped=_dedupe(dropped),
            base_name=_base_name(item.name, name_parse, reasons),
        )
    return Lexicon(
        entries=entries,
        boilerplate=dict(sorted(boilerplate.items(), key=lambda kv: (-kv[1], kv[0]))),
        vocabulary=_vocabulary(entries),
        failures=failures,
    )


def _tag_list(tags: Any) -> list[Any]:
    if tags is None:
        return []
    if isinstance(tags, str):
        return [t for t in tags.split(",")]
    return list(tags)


def normalised_base_name(name: str) -> str:
    """The name without style/size/DPI/affix marks, for grouping variants of one icon.

    `bell-outline`, `bell_filled_24` and `Bell@2x` give "bell"; `bell-off` stays "bell-off" and
    numbers of meaning stay (`clock-24`, `a-b-2`). This looks at the name alone (no library
    statistics); inside a mined library prefer `LexiconEntry.base_name`, which also drops the
    library's own affixes.
    """
    return mine_lexicon([NameItem(key="name", name=name)]).entries["name"].base_name


def read_names_file(path: Path, err: TextIO | None = None) -> list[NameItem]:
    """Names file: one name per line, optional TAB then comma-separated tags; blank lines skipped.

    A line that is not UTF-8 is decoded with replacement characters and reported on `err`.
    """
    err = err if err is not None else sys.stderr
    items: list[NameItem] = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.decode("utf-8", errors="replace")
            print(
                f"{path}: line {number}: not valid UTF-8 ({exc.reason}); decoded with replacement", file=err
            )
        line = line.rstrip("\r")
        if not line.strip():
            continue
        name, _, tags = line.partition("\t")
        items.append(
            NameItem(key=str(number), name=name.strip(), tags=[t for t in tags.split(",") if t.strip()])
        )
    return items


def lexicon_cli(path: Path, out: TextIO, err: TextIO | None = None) -> int:
    """`icon-pipeline lexicon NAMES_FILE`: one JSON line per name, using the whole file's statistics."""
    err = err if err is not None else sys.stderr
    try:
        items = read_names_file(Path(path), err)
    except OSError as exc:
        print(f"cannot read names file {path}: {exc.strerror or exc}", file=err)
        return 2
    lexicon = mine_lexicon(items)
    for key, reason in lexicon.failures.items():
        print(f"{path}: line {key}: {reason}", file=err)
    for item in items:
        entry = lexicon.entries.get(item.key)
        if entry is not None:
            out.write(json.dumps(entry.to_json_dict(), ensure_ascii=False) + "\n")
    return 0
