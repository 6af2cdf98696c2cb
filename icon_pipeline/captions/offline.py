"""The embedded default captioner: deterministic search phrases from names and tags, no model.

Each word of the icon's name is given a role from the shipped UI vocabulary (verb, noun,
adjective, direction, looks word, overlay mark such as "plus" -> verb "add"), then the seed
patterns are filled in order of usefulness: verb+noun ("add folder"), verb+adjective+noun
("add new folder"), adjective+noun ("new folder"), noun+noun ("github logo"), the cleaned name,
and finally the library's own tags. Every phrase is checked with the same validation as model
answers; nothing random is used, so the same request always gives the same phrases.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from icon_pipeline.captions.base import CaptionRequest, CaptionResult, RouteInfo
from icon_pipeline.captions.validation import (
    MAX_PHRASES,
    MAX_WORDS,
    MIN_PHRASES,
    banned_terms,
    is_valid_phrase,
    normalise_phrase,
    validate_phrases,
)

ALGORITHM_VERSION = "1"
_SPLIT = re.compile(r"[\s\-_/,;:|]+")
_MAX_VERB_PHRASES = 3


@dataclass(frozen=True)
class Vocabulary:
    """data/ui_vocabulary.json, as sets and maps; `digest` changes whenever the file does."""

    version: str
    digest: str
    verbs: frozenset[str]
    transitive_verbs: frozenset[str]
    adjectives: frozenset[str]
    directions: frozenset[str]
    visual_words: frozenset[str]
    stopwords: frozenset[str]
    head_nouns: frozenset[str]
    overlay_marks: frozenset[str]
    spelling_words: frozenset[str]
    single_char_categories: frozenset[str]
    roles: dict[str, dict[str, str]]
    verb_synonyms: dict[str, list[str]]
    direction_verbs: dict[str, list[str]]
    category_nouns: dict[str, str]
    category_suffix: dict[str, str]
    adjective_verbs: dict[str, list[str]]


@lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    text = resources.files("icon_pipeline").joinpath("data", "ui_vocabulary.json").read_text("utf-8")
    raw = json.loads(text)
    return Vocabulary(
        version=str(raw["version"]),
        digest=hashlib.sha256(text.encode("utf-8")).hexdigest()[:12],
        **{
            key: frozenset(raw[key])
            for key in (
                "verbs",
                "transitive_verbs",
                "adjectives",
                "directions",
                "visual_words",
                "stopwords",
                "head_nouns",
                "overlay_marks",
                "spelling_words",
                "single_char_categories",
            )
        },
        roles=raw["roles"],
        verb_synonyms=raw["verb_synonyms"],
        direction_verbs=raw["direction_verbs"],
        category_nouns=raw["category_nouns"],
        category_suffix=raw["category_suffix"],
        adjective_verbs=raw["adjective_verbs"],
    )


@dataclass(frozen=True)
class WordRole:
    """What one name word can contribute to a phrase."""

    word: str
    verb: str | None = None
    noun: str | None = None
    adjective: str | None = None
    direction: str | None = None
    visual: bool = False
    mark: bool = False  # an overlay such as "plus": used through its role, never spelled out


def split_words(text: str) -> list[str]:
    return [w for w in (normalise_phrase(part) for part in _SPLIT.split(text.lower())) if w]


def classify(word: str, vocab: Vocabulary) -> WordRole:
    if word in vocab.roles:
        return WordRole(word=word, mark=word in vocab.overlay_marks, **vocab.roles[word])
    if word in vocab.overlay_marks:
        return WordRole(word=word, mark=True)
    if word in vocab.visual_words:
        return WordRole(word=word, noun=word, visual=True)
    if word in vocab.directions:
        return WordRole(word=word, direction=word)
    if word in vocab.verbs:
        return WordRole(word=word, verb=word)
    if word in vocab.adjectives:
        return WordRole(word=word, adjective=word)
    return WordRole(word=word, noun=word)


def _unique(items: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


class _PhraseList:
    """Collects phrases in priority order, keeping only valid, new, short-enough ones."""

    def __init__(self, vocab: Vocabulary, limit: int = MAX_PHRASES) -> None:
        self.vocab = vocab
        self.limit = limit
        self.phrases: list[str] = []

    def full(self) -> bool:
        return len(self.phrases) >= self.limit

    def add(self, phrase: str, allow_visual: bool = False, allow_single_char: bool = False) -> None:
        phrase = normalise_phrase(phrase)
        if self.full() or not phrase or phrase in self.phrases:
            return
        words = phrase.split()
        if len(words) > MAX_WORDS:
            return
        if not allow_visual and any(w in self.vocab.visual_words for w in words):
            return
        if not allow_single_char and len(phrase) < 2:
            return
        if is_valid_phrase(phrase):
            self.phrases.append(phrase)


class OfflineCaptioner:
    """Deterministic captions from the lexicon and tags (the embedded default; no model, no network)."""

    name = "offline"

    def __init__(self, vocabulary: Vocabulary | None = None) -> None:
        self.vocab = vocabulary or load_vocabulary()

    @property
    def model_id(self) -> str:
        return f"offline-v{ALGORITHM_VERSION}"

    def settings_key(self) -> str:
        return (
            f"offline:algorithm={ALGORITHM_VERSION};vocabulary={self.vocab.digest};"
            f"banned={banned_terms().version}"
        )

    def route_for(self, request: CaptionRequest) -> RouteInfo:
        return RouteInfo(route="offline", model=self.model_id, prompt_version="none")

    def __repr__(self) -> str:
        return f"OfflineCaptioner(vocabulary={self.vocab.digest})"

    def caption_many(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        return [self.caption(request) for request in requests]

    def caption(self, request: CaptionRequest) -> CaptionResult:
        phrases = self.phrases_for(request)
        problems = validate_phrases(phrases)
        if problems:
            return CaptionResult(
                icon_id=request.icon_id,
                phrases=[],
                route="offline",
                model=self.model_id,
                error=f"icon {request.name!r}: offline captioner found too little to say: {problems[0]}",
            )
        return CaptionResult(icon_id=request.icon_id, phrases=phrases, route="offline", model=self.model_id)

    def _name_words(self, request: CaptionRequest) -> list[str]:
        source = request.terms[0] if request.terms else request.name
        vocab = self.vocab
        keep_chars = request.category in vocab.single_char_categories
        words: list[str] = []
        for word in split_words(source):
            previous = words[-1] if words else ""
            spelled = keep_chars or previous in vocab.spelling_words
            if (word.isdigit() or len(word) == 1) and word not in vocab.overlay_marks:
                # Digits and single letters are size/variant noise ("cell-signal-2") unless they
                # are the point of the icon ("number-2", "letter-a").
                if spelled:
                    words.append(word)
                continue
            if word in vocab.stopwords or word in banned_terms().words:
                continue
            words.append(word)
        return words

    def phrases_for(self, request: CaptionRequest) -> list[str]:
        vocab = self.vocab
        words = self._name_words(request)
        roles = [classify(w, vocab) for w in words]
        tag_phrases = _unique(
            normalise_phrase(str(t).replace("-", " ").replace("_", " ")) for t in request.tags
        )
        tag_roles = [classify(t, vocab) for t in tag_phrases if " " not in t]

        content = [r for r in roles if r.noun and not r.visual]
        heads = [r for r in content if r.word in vocab.head_nouns or r.noun in vocab.head_nouns]
        plain = [r for r in content if r not in heads]
        name_verbs = _unique(r.verb for r in roles)
        name_adjectives = _unique(r.adjective for r in roles)
        name_directions = _unique(r.direction for r in roles)
        only_looks = not (content or name_verbs or name_directions or name_adjectives)
        noun_roles = plain + heads + ([r for r in roles if r.visual] if only_looks else [])
        main_role = noun_roles[0] if noun_roles else None
        main = main_role.noun if main_role else None
        # A verb read from the same word as the main noun ("trash" -> delete, trash) stands alone.
        same_word_verbs = {main_role.verb} if main_role and main_role.verb else set()
        if main_role and main_role.verb:
            same_word_verbs.update(vocab.verb_synonyms.get(main_role.verb, []))

        verbs = _unique(
            name_verbs
            + (vocab.verb_synonyms.get(name_verbs[0], []) if name_verbs else [])
            + [r.verb for r in tag_roles if r.verb in vocab.transitive_verbs]
        )
        tag_adjectives = [r.adjective for r in tag_roles if r.adjective and r.word not in vocab.verbs]
        adjectives = _unique(name_adjectives + tag_adjectives[:1])
        clean_name = " ".join(r.word for r in roles if not r.mark and not r.visual)
        if only_looks:
            clean_name = " ".join(r.word for r in roles if not r.mark)

        out = _PhraseList(vocab)
        if main:
            for verb in verbs[:_MAX_VERB_PHRASES]:
                out.add(verb if verb in same_word_verbs else f"{verb} {main}")
            for adjective in adjectives[:2]:
                out.add(f"{adjective} {main}")
            for adjective in name_adjectives:
                for verb in vocab.adjective_verbs.get(adjective, [])[:1]:
                    out.add(f"{verb} {adjective} {main}")
            suffix = vocab.category_suffix.get(request.category)
            for head in [*(r.noun for r in heads), *([suffix] if suffix else [])]:
                if head and head != main:
                    out.add(f"{main} {head}")
            for direction in name_directions[:1]:
                out.add(f"{main} {direction}")
        else:
            for direction in name_directions[:2]:
                for verb in vocab.direction_verbs.get(direction, vocab.direction_verbs["default"])[:2]:
                    out.add(f"{verb} {direction}")
            for verb in verbs[:2]:
                out.add(verb)
        out.add(clean_name, allow_single_char=True)
        if main:
            out.add(main, allow_visual=only_looks)
        for term in request.terms[1:]:
            if " " in term.strip():
                out.add(term)
        for tag in tag_phrases:
            out.add(tag)
        if len(out.phrases) < MIN_PHRASES:
            # Not enough function words: accept looks words and single letters before giving up.
            self._fill_fallbacks(out, request, words, tag_phrases, main)
        return out.phrases

    def _fill_fallbacks(
        self,
        out: _PhraseList,
        request: CaptionRequest,
        words: list[str],
        tag_phrases: list[str],
        main: str | None,
    ) -> None:
        category_noun = self.vocab.category_nouns.get(request.category) or request.category.lower()
        for tag in tag_phrases:
            out.add(tag, allow_visual=True, allow_single_char=True)
        for word in words:
            out.add(word, allow_visual=True)
        out.add(" ".join(words), allow_visual=True, allow_single_char=True)
        if category_noun:
            out.add(category_noun)
            if main:
                out.add(f"{main} {category_noun}", allow_visual=True)
            for tag in tag_phrases:
                out.add(f"{tag} {category_noun}", allow_visual=True)
