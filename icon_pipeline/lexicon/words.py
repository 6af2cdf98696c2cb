"""The lexicon's vocabulary and records: the word lists (stopwords, styles, platforms, ...), the
mining settings, and what a mined name and the lexicon hold."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

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
        return dedupe([*self.terms, *self.tag_terms])

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
            variant={str(v["attribute"]): str(v["value"]) for v in as_items(record.get("variant"))},
            dropped=[(str(d["token"]), str(d["reason"])) for d in as_items(record.get("dropped"))],
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


def vocabulary_counts(entries: Mapping[str, LexiconEntry]) -> dict[str, int]:
    """term -> how many names and tags carry it, most common first."""
    counts: Counter[str] = Counter()
    for entry in entries.values():
        counts.update(set(entry.terms) | set(entry.tag_terms))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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
        return cls(
            entries=entries, boilerplate=dict(boilerplate or {}), vocabulary=vocabulary_counts(entries)
        )


def dedupe(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def as_items(value: Any) -> list[Mapping[str, Any]]:
    return [] if value is None else list(value)
