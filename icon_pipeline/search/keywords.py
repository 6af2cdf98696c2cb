"""BM25 over each icon's name, tags and captions: the lexical baseline for the text tasks.

A text query is tokenised like the documents (lowercase, split on separators and camelCase,
English stop words dropped, a plural folded to the singular the library uses), scored with
`bm25s`, and only icons that share at least one term with the query are returned: a ranking
shorter than k counts as misses for R@K, which is the honest result for a keyword search.

What designers expect on top of plain BM25:

- Stop words of a query ("I want to hide the layer") are dropped when it has other words, so they
  never match the letter icons whose names are single letters (letter-i, letter-a); a query of
  nothing but such words ("i", "x") keeps them.
- Singular and plural match both ways ("folders" finds folder, "folder" finds folders, "boxes"
  finds box): a plural is folded to the singular the library itself uses.
- Exact matches first: a query equal to an icon's whole name ranks it first (shopping-cart before
  shopping-cart-off), and one equal to a whole tag or caption lifts the icon above those that only
  share words, the more the earlier that text comes (Tabler's trash lists "delete" first).
- A term counts once per icon: a name repeated in its tags and captions ("http-delete", tag
  "delete") is not more about the term than an icon that says it once (trash).
- A variant is a little behind its base icon unless the query names what the variant adds:
  folder-user, shopping-cart-off and trash-x are variants of folder, shopping-cart and trash.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from icon_pipeline.core.package_data import data_file
from icon_pipeline.library.naming import fold_plural, words
from icon_pipeline.library.records import IconRecord

# The score an exact match adds, in units of the query's best BM25 score, so that it outranks
# icons that merely share words while BM25 still orders the exact matches among themselves.
EXACT_NAME_BONUS = 2.0
EXACT_SPELLING_BONUS = 0.25  # "folders" == folders exactly, not only folded like folder
EXACT_TEXT_BONUS = 1.0
TEXT_POSITION_DECAY = 0.25  # a tag in position p (name = 0) weighs 1 / (1 + decay * (p - 1))
VARIANT_FACTOR = 0.9  # the score of a variant whose added words the query does not say


@dataclass(frozen=True)
class SearchWords:
    """data/search_words.json."""

    noise: frozenset[str]
    query_stopwords: frozenset[str]
    not_plurals: frozenset[str]
    negations: frozenset[str]  # what a name adds that makes it another icon (copy-off)
    styles: frozenset[str]  # what a name adds that makes it only another style (settings-filled)


@lru_cache(maxsize=1)
def search_words() -> SearchWords:
    raw = json.loads(data_file("search_words.json").read_text("utf-8"))
    noise = frozenset(raw["noise_words"])
    return SearchWords(
        noise=noise,
        query_stopwords=frozenset(STOPWORDS_EN) | noise | frozenset(raw["query_stopwords"]),
        not_plurals=frozenset(raw["not_plurals"]),
        negations=frozenset(raw["negation_words"]),
        styles=frozenset(raw["style_words"]),
    )


def _stopwords() -> frozenset[str]:
    """What documents (and `tokenize`) never index: English stop words and "icon"-like noise."""
    return frozenset(STOPWORDS_EN) | search_words().noise


def tokenize(text: str) -> list[str]:
    """Lowercased terms of a name, tag, caption or query (stop words dropped, plural `s` folded)."""
    stopwords = _stopwords()
    return [fold_plural(w) for w in words(text) if w not in stopwords]


def _singulars(word: str) -> list[str]:
    """Candidate singulars, likeliest first: houses -> house, boxes -> box, batteries -> battery."""
    if len(word) <= 3 or not word.endswith("s") or word in search_words().not_plurals:
        return []
    found: list[str] = []
    if not word.endswith(("ss", "us", "is")):
        found.append(word[:-1])
    if word.endswith("es") and len(word) > 4:
        found.append(word[:-2])
    if word.endswith("ies") and len(word) > 4:
        found.append(word[:-3] + "y")
    return found


def _plurals(word: str) -> list[str]:
    found = [word + "s", word + "es"]
    if word.endswith("y") and len(word) > 2:
        found.append(word[:-1] + "ies")
    return found


@dataclass(frozen=True)
class _PluralFolder:
    """Folds a plural to the singular the corpus itself uses, so "boxes" and "box" become one term
    (plain `s` stripping would leave "boxe"); a plural without its singular in the corpus is
    stripped of its `s` as `tokenize` does."""

    corpus_words: frozenset[str]

    def fold(self, word: str) -> str:
        for singular in _singulars(word):
            if singular in self.corpus_words:
                return singular
        return fold_plural(word)

    def fold_query_word(self, word: str, indexed: Mapping[str, int]) -> str:
        """A query word as the index knows it; a singular the corpus only has as a plural ("battery"
        when only "batteries" is there) takes that plural's term."""
        term = self.fold(word)
        if term in indexed:
            return term
        for plural in _plurals(word):
            if plural in self.corpus_words and self.fold(plural) in indexed:
                return self.fold(plural)
        return term


def documents_from_records(
    records: Iterable[IconRecord], captions: Mapping[str, Sequence[str]] | None = None
) -> dict[str, list[str]]:
    """icon_id -> texts (name, tags, captions) for `BM25Index.build`."""
    captions = captions or {}
    return {r.icon_id: [r.name, *r.tags, *captions.get(r.icon_id, ())] for r in records}


@dataclass(frozen=True)
class _ExactText:
    doc: int
    position: int  # 0: the icon's name; then its other texts in order


@dataclass
class BM25Index:
    """A BM25 index of icon documents; `search` returns (icon_id, score), best first.

    Each document is an icon's texts, its name first. Besides BM25 the index knows every text as a
    whole ("exact keys") so that a query equal to a name, tag or caption ranks that icon first.
    """

    icon_ids: list[str]
    retriever: bm25s.BM25
    folder: _PluralFolder = field(default_factory=lambda: _PluralFolder(frozenset()))
    exact: dict[str, list[_ExactText]] = field(default_factory=dict)
    spellings: list[str] = field(default_factory=list)  # each icon's name, words as spelled
    # per icon: the words its name adds to another icon's name (folder-user: {"user"}), or None
    variant_words: list[frozenset[str] | None] = field(default_factory=list)

    @classmethod
    def build(cls, documents: Mapping[str, Iterable[str]], k1: float = 1.5, b: float = 0.75) -> BM25Index:
        """Index icon_id -> texts (the name first). An icon with no usable term is kept but can
        only be found by its exact name."""
        if not documents:
            raise ValueError("BM25 index needs at least one document")
        icon_ids = list(documents)
        texts = [[str(t) for t in documents[i]] for i in icon_ids]
        folder = _PluralFolder(frozenset(w for doc in texts for text in doc for w in words(text)))
        stopwords = _stopwords()
        # each term once per icon: "delete" in http-delete's name and tags is not twice the meaning
        corpus = [
            list(dict.fromkeys(folder.fold(w) for text in doc for w in words(text) if w not in stopwords))
            for doc in texts
        ]
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index(corpus, show_progress=False)
        index = cls(icon_ids=icon_ids, retriever=retriever, folder=folder)
        for doc, doc_texts in enumerate(texts):
            index.spellings.append(" ".join(words(doc_texts[0])) if doc_texts else "")
            for position, text in enumerate(doc_texts):
                key = index._key(words(text))
                if key:
                    index.exact.setdefault(key, []).append(_ExactText(doc, position))
        index.variant_words = _variant_words([index._key(words(doc[0])) if doc else "" for doc in texts])
        return index

    def __len__(self) -> int:
        return len(self.icon_ids)

    def _key(self, text_words: Sequence[str]) -> str:
        """A whole text as comparable words: "Shopping carts" and "shopping-cart" -> "shopping cart"."""
        return " ".join(self.folder.fold(w) for w in text_words)

    def query_terms(self, query: str) -> list[str]:
        """The query's terms the index knows; stop words only when the query has nothing else."""
        query_words = words(query)
        content = [w for w in query_words if w not in search_words().query_stopwords]
        stopwords = _stopwords()
        chosen = content or [w for w in query_words if w not in stopwords]
        indexed = self.retriever.vocab_dict
        terms = [self.folder.fold_query_word(w, indexed) for w in chosen]
        return [t for t in terms if t in indexed]

    def _exact_matches(self, query_words: Sequence[str]) -> list[_ExactText]:
        """Texts equal to the whole query; failing a name, to its words without the stop words
        ("I don't want the trash", "trash icon" name trash)."""
        content = [w for w in query_words if w not in search_words().query_stopwords]
        matches: list[_ExactText] = []
        for key in dict.fromkeys((self._key(query_words), self._key(content))):
            found = self.exact.get(key, []) if key else []
            if any(m.position == 0 for m in found):
                return found
            matches += found
        return matches

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """Top-k icons sharing a term with the query or named exactly by it; [] when nothing is known.
        Exact matches come first (see the module docstring). Ties: index order."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        terms = self.query_terms(query)
        query_words = words(query)
        exact = self._exact_matches(query_words)
        if not terms and not exact:
            return []
        scores = (
            np.asarray(self.retriever.get_scores(terms), dtype=np.float64) if terms else np.zeros(len(self))
        )
        unit = float(scores.max()) if terms and scores.max() > 0 else 1.0
        bonus = np.zeros(len(self))
        spelled = " ".join(query_words)
        for match in exact:
            if match.position == 0:
                name_bonus = EXACT_NAME_BONUS + (
                    EXACT_SPELLING_BONUS if self.spellings[match.doc] == spelled else 0
                )
                bonus[match.doc] = max(bonus[match.doc], name_bonus)
            else:
                weight = EXACT_TEXT_BONUS / (1 + TEXT_POSITION_DECAY * (match.position - 1))
                bonus[match.doc] = max(bonus[match.doc], weight)
        scores = scores + unit * bonus
        said = set(self._key(query_words).split())
        for doc in np.flatnonzero(scores > 0):
            added = self.variant_words[doc]
            if added and not added & said:
                scores[doc] *= VARIANT_FACTOR
        matching = np.flatnonzero(scores > 0)
        order = matching[np.argsort(-scores[matching], kind="stable")][:k]
        return [(self.icon_ids[i], float(scores[i])) for i in order]

    def ranked_ids(self, query: str, k: int = 10) -> list[str]:
        return [icon_id for icon_id, _ in self.search(query, k)]


def _variant_words(name_keys: Sequence[str]) -> list[frozenset[str] | None]:
    """For each name, the words it adds to the longest other name it starts with: "folder user"
    adds {"user"} to "folder"; None for a name that extends no other (a base icon)."""
    names = set(name_keys)
    found: list[frozenset[str] | None] = []
    for key in name_keys:
        name_words = key.split()
        cut = next((n for n in range(len(name_words) - 1, 0, -1) if " ".join(name_words[:n]) in names), 0)
        found.append(frozenset(name_words[cut:]) if cut else None)
    return found


@dataclass
class LibraryKeywords:
    """BM25 over the materialized library, with each icon's group (an icon left out of
    training is a group of its own)."""

    index: BM25Index
    groups: dict[str, str]
    names: dict[str, str]  # icon_id -> name, for exact-name matches
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # icon_id -> tags, library order
    styles: tuple[str, ...] = ()  # the catalog's style values (outline, filled)


class EmptyCatalogError(LookupError):
    """The catalog exists but holds no icon: nothing can be searched."""


def library_keywords() -> LibraryKeywords:
    """From the icon catalog (names, tags) and the training pairs (captions): what the benchmark's
    BM25 row and keyword search both use. Built once per version of those two files (about a
    second for 6k icons); FileNotFoundError until those assets exist, EmptyCatalogError on no icons."""
    from icon_pipeline.core.storage import cached, catalog_path, pairs_path

    return cached("library-keywords", [catalog_path(), pairs_path()], _build_library_keywords)


def _build_library_keywords() -> LibraryKeywords:
    from icon_pipeline.core.storage import pairs_path, read_records
    from icon_pipeline.dataset.grouping import icon_groups
    from icon_pipeline.library.catalog import read_catalog

    icons = read_catalog()
    if not icons:
        raise EmptyCatalogError(
            "the icon catalog holds no icons: materialize icon_catalog on a source with icons"
        )
    pairs = read_records(pairs_path(), "training_pairs")
    captions = {member: row["captions"] for row in pairs for member in row["members"]}
    return LibraryKeywords(
        index=BM25Index.build(documents_from_records(icons, captions)),
        groups=icon_groups(pairs, (icon.icon_id for icon in icons)),
        names={icon.icon_id: icon.name for icon in icons},
        tags={icon.icon_id: tuple(map(str, icon.tags)) for icon in icons},
        styles=tuple(sorted({icon.style for icon in icons} - {""})),
    )
