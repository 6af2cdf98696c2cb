"""BM25 over each icon's name, tags and captions: the lexical baseline for the text tasks.

A text query is tokenised like the documents (lowercase, split on separators and camelCase,
English stop words dropped, a plural `s` folded), scored with `bm25s`, and only icons that share
at least one term with the query are returned: a ranking shorter than k counts as misses for
R@K, which is the honest result for a keyword search.

Plain Python: no Dagster import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from icon_pipeline.catalog import IconRecord

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(STOPWORDS_EN) | {"icon", "icons", "symbol"}


def _fold_plural(word: str) -> str:
    # "files" -> "file", "boxes" stays as is apart from the final s; "class"/"bus" are kept.
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lowercased terms of a name, tag, caption or query."""
    spaced = _CAMEL.sub(" ", text)
    return [_fold_plural(w) for w in _WORD.findall(spaced.lower()) if w not in _STOPWORDS]


def documents_from_records(
    records: Iterable[IconRecord], captions: Mapping[str, Sequence[str]] | None = None
) -> dict[str, list[str]]:
    """icon_id -> texts (name, tags, captions) for `BM25Index.build`."""
    captions = captions or {}
    return {r.icon_id: [r.name, *r.tags, *captions.get(r.icon_id, ())] for r in records}


@dataclass
class BM25Index:
    """A BM25 index of icon documents; `search` returns (icon_id, score), best first."""

    icon_ids: list[str]
    retriever: bm25s.BM25

    @classmethod
    def build(cls, documents: Mapping[str, Iterable[str]], k1: float = 1.5, b: float = 0.75) -> BM25Index:
        """Index icon_id -> texts. An icon with no usable term is kept but can never match."""
        if not documents:
            raise ValueError("BM25 index needs at least one document")
        icon_ids = list(documents)
        corpus = [[t for text in documents[i] for t in tokenize(text)] for i in icon_ids]
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index(corpus, show_progress=False)
        return cls(icon_ids=icon_ids, retriever=retriever)

    def __len__(self) -> int:
        return len(self.icon_ids)

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """Top-k icons sharing a term with the query; [] when no term is known. Ties: index order."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vocabulary = self.retriever.vocab_dict
        terms = [t for t in tokenize(query) if t in vocabulary]
        if not terms:
            return []
        scores = np.asarray(self.retriever.get_scores(terms))
        matching = np.flatnonzero(scores > 0)
        order = matching[np.argsort(-scores[matching], kind="stable")][:k]
        return [(self.icon_ids[i], float(scores[i])) for i in order]

    def ranked_ids(self, query: str, k: int = 10) -> list[str]:
        return [icon_id for icon_id, _ in self.search(query, k)]


@dataclass
class LibraryKeywords:
    """BM25 over the materialized library, with each icon's group (an icon left out of
    training is a group of its own)."""

    index: BM25Index
    groups: dict[str, str]


_library_cache: dict[tuple, LibraryKeywords] = {}


def library_keywords() -> LibraryKeywords:
    """From the icon catalog (names, tags) and the training pairs (captions): what the benchmark's
    BM25 row and keyword search both use. Built once per version of those two files (about a
    second for 6k icons); FileNotFoundError until those assets exist."""
    from icon_pipeline.tables import catalog_path, pairs_path

    files = (catalog_path(), pairs_path())
    key = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())
    if key not in _library_cache:
        _library_cache.clear()
        _library_cache[key] = _build_library_keywords()
    return _library_cache[key]


def _build_library_keywords() -> LibraryKeywords:
    from icon_pipeline.tables import pairs_path, read_catalog, read_records

    icons = read_catalog()
    pairs = read_records(pairs_path(), "training_pairs")
    captions = {member: row["captions"] for row in pairs for member in row["members"]}
    groups = {member: row["group_id"] for row in pairs for member in row["members"]}
    return LibraryKeywords(
        index=BM25Index.build(documents_from_records(icons, captions)),
        groups={icon.icon_id: groups.get(icon.icon_id, f"solo:{icon.icon_id}") for icon in icons},
    )
