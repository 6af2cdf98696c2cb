"""Library statistics the mining decides with: how often each word and affix occurs across names
and tags."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from icon_pipeline.lexicon.tokenise import ParsedName, Word, parse_name
from icon_pipeline.lexicon.words import MAX_AFFIX_SEGMENTS, LexiconConfig


@dataclass
class LibraryStats:
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


def tag_words_of_value(tag: Any) -> tuple[str, ...]:
    """A tag's words, lowercased; numbers, sizes and DPI marks are not words (but "retina" is)."""
    if tag is None or isinstance(tag, bool):
        return ()
    return _tag_words_of(str(tag))


@lru_cache(maxsize=65536)
def _tag_words_of(tag: str) -> tuple[str, ...]:
    return tuple(w.text for w in parse_name(tag).words if is_tag_word(w))


def is_tag_word(word: Word) -> bool:
    return word.kind == "alpha" or (word.kind == "dpi" and not any(ch.isdigit() for ch in word.text))


def collect_stats(
    parsed: list[ParsedName], tags: list[list[tuple[str, ...]]], config: LexiconConfig
) -> LibraryStats:
    stats = LibraryStats(active=len(parsed) >= config.min_names, n=len(parsed))
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


def affix_segments(item: ParsedName, stats: LibraryStats, config: LexiconConfig) -> dict[int, float]:
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
