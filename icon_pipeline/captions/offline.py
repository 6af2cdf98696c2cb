"""The embedded default captioner: deterministic search phrases from names and tags, no model.

Each word of the icon's name is given a role from the shipped UI vocabulary (verb, noun,
adjective, direction, looks word, overlay mark such as "plus" -> verb "add"), then the four
caption patterns of the spec are filled in order of usefulness: verb+noun ("add folder"), verb+adjective+noun
("add new folder"), adjective+noun ("new folder"), noun+noun ("github logo"), the cleaned name,
and finally the library's own tags. Every phrase is checked with the same validation as model
answers; nothing random is used, so the same request always gives the same phrases.

Three rules keep a caption from saying the opposite of the icon:

- A name ending in a negation mark ("eye-off", "bell-slash") is its concept switched off: it is
  captioned with what that is called ("hide", "mute notifications"), the concept's opposite action
  ("lock" -> "unlock"), "disable X" and "X off", and never with the concept's own action ("view",
  "lock") or the on side of any switch ("show", "enable", "unmute").
- Brands (category "Brand", names "brand-*") are logos, not actions: "x logo", "twitter brand";
  the "x" of "brand-x" is the brand's name, not a remove mark.
- The icon's tags are evidence: when they say only one side of a switch (hide/hidden), no phrase
  may say the other (show/visible). "not visible" says hidden, and the "visible" split off it is
  not evidence of its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from icon_pipeline.captions.base import CaptionRequest, CaptionResult, RouteInfo
from icon_pipeline.captions.validation import (
    MAX_PHRASES,
    MAX_WORDS,
    MIN_OFFLINE_PHRASES,
    MIN_PHRASES,
    banned_terms,
    is_valid_phrase,
    normalise_phrase,
    validate_phrases,
)
from icon_pipeline.core.package_data import data_file

# 2: negation marks, brands and tag evidence (captions of "eye-off" no longer say "show").
ALGORITHM_VERSION = "3"
_SPLIT = re.compile(r"[\s\-_/,;:|]+")
_MAX_VERB_PHRASES = 3
ON, OFF = "on", "off"
Claim = tuple[int, str]  # (index of a switch in Vocabulary.switch_states, ON or OFF)


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
    negation_marks: frozenset[str]
    negators: frozenset[str]
    negation_verbs: tuple[str, ...]
    # one (on words, off words) pair per switch; a term may belong to several switches
    switch_states: tuple[tuple[frozenset[str], frozenset[str]], ...]
    opposite_verbs: dict[str, str]
    switched_off: dict[str, list[str]]
    brand_categories: frozenset[str]
    brand_prefix: str
    brand_nouns: tuple[str, ...]
    brand_alias_max_chars: int
    tag_fillers: frozenset[str]
    switch_terms: dict[str, list[Claim]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for index, (on, off) in enumerate(self.switch_states):
            for side, terms in ((ON, on), (OFF, off)):
                for term in terms:
                    self.switch_terms.setdefault(term, []).append((index, side))

    @property
    def off_words(self) -> frozenset[str]:
        return frozenset().union(*(off for _, off in self.switch_states))


@lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    text = data_file("ui_vocabulary.json").read_text("utf-8")
    raw = json.loads(text)
    brands = raw["brands"]
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
        negation_marks=frozenset(raw["negation_marks"]),
        negators=frozenset(raw["negators"]),
        negation_verbs=tuple(raw["negation_verbs"]),
        switch_states=tuple((frozenset(s["on"]), frozenset(s["off"])) for s in raw["switch_states"]),
        opposite_verbs=raw["opposite_verbs"],
        switched_off=raw["switched_off"],
        brand_categories=frozenset(brands["categories"]),
        brand_prefix=brands["name_prefix"],
        brand_nouns=tuple(brands["nouns"]),
        brand_alias_max_chars=int(brands["alias_max_chars"]),
        tag_fillers=frozenset(raw["tag_fillers"]),
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


def claims(words: Sequence[str], vocab: Vocabulary, skip: frozenset[int] = frozenset()) -> set[Claim]:
    """The switch states a phrase asserts: "show layer" says visibility on, "not visible" says it
    is off. Words at the positions in `skip` say nothing (the icon's own name, e.g. "view 360")."""
    found: set[Claim] = set()
    i = 0
    while i < len(words):
        size = next(
            (n for n in (2, 1) if i + n <= len(words) and " ".join(words[i : i + n]) in vocab.switch_terms),
            0,
        )
        if not size or any(j in skip for j in range(i, i + size)):
            i += 1
            continue
        negated = i > 0 and words[i - 1] in vocab.negators
        for switch, side in vocab.switch_terms[" ".join(words[i : i + size])]:
            found.add((switch, (OFF if side == ON else ON) if negated else side))
        i += size
    return found


def _run_positions(words: Sequence[str], run: Sequence[str]) -> frozenset[int]:
    """Positions of the first occurrence of `run` as consecutive words of `words`."""
    n = len(run)
    for start in range(len(words) - n + 1) if n else ():
        if list(words[start : start + n]) == list(run):
            return frozenset(range(start, start + n))
    return frozenset()


def negated_tag_words(tag_phrases: Sequence[str], vocab: Vocabulary) -> frozenset[str]:
    """Words that follow a negator inside a tag ("visible" of "not visible")."""
    found: set[str] = set()
    for phrase in tag_phrases:
        words = phrase.split()
        found.update(words[i + 1] for i in range(len(words) - 1) if words[i] in vocab.negators)
    return frozenset(found)


@dataclass(frozen=True)
class Stance:
    """What an icon's captions may not say.

    denied: switch states no phrase may assert (a negated icon denies every on side; otherwise the
        side opposite to what the tags alone say).
    concept: the name's words, exempt from the switch check ("view 360 off" may say "view 360").
    forbidden_bare: single words that would be the concept's own action ("view" for "eye-off").
    allowed: phrases said on purpose for the off state ("hide", "stop video"), never refused.
    """

    negated: bool = False
    denied: frozenset[Claim] = frozenset()
    concept: tuple[str, ...] = ()
    forbidden_bare: frozenset[str] = frozenset()
    allowed: frozenset[str] = frozenset()


def tag_evidence(tag_phrases: Sequence[str], vocab: Vocabulary) -> set[Claim]:
    """The switch states the tags assert; a word split off a negated tag asserts nothing."""
    split_off = negated_tag_words(tag_phrases, vocab)
    evidence: set[Claim] = set()
    for tag in tag_phrases:
        words = tag.split()
        if len(words) == 1 and words[0] in split_off:
            continue
        evidence |= claims(words, vocab)
    return evidence


def denied_states(evidence: set[Claim], negated: bool, vocab: Vocabulary) -> frozenset[Claim]:
    if negated:
        return frozenset((switch, ON) for switch in range(len(vocab.switch_states)))
    denied: set[Claim] = set()
    for switch in range(len(vocab.switch_states)):
        sides = {side for s, side in evidence if s == switch}
        if len(sides) == 1:  # tags on both sides ("on-off" of a toggle) settle nothing
            denied.add((switch, OFF if sides == {ON} else ON))
    return frozenset(denied)


class _PhraseList:
    """Collects phrases in priority order, keeping only valid, new, short-enough ones that do not
    contradict the icon's stance."""

    def __init__(self, vocab: Vocabulary, stance: Stance | None = None, limit: int = MAX_PHRASES) -> None:
        self.vocab = vocab
        self.stance = stance or Stance()
        self.limit = limit
        self.phrases: list[str] = []

    def full(self) -> bool:
        return len(self.phrases) >= self.limit

    def contradicts(self, phrase: str) -> bool:
        stance = self.stance
        if phrase in stance.allowed:
            return False
        words = phrase.split()
        if len(words) == 1 and words[0] in stance.forbidden_bare:
            return True
        concept_positions = _run_positions(words, stance.concept)
        leads_with_action = 0 not in concept_positions and words[0] in stance.forbidden_bare
        if stance.negated and len(words) > 1 and leads_with_action:
            return True  # "play music", "delete trash": the action the off icon stops
        return bool(claims(words, self.vocab, concept_positions) & stance.denied)

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
        if self.contradicts(phrase):
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
        """The icon's phrases; fewer than a model's 5 when its name and tags say no more (a folder of
        bare SVGs), none only when nothing usable is left."""
        phrases = self.phrases_for(request)
        problems = validate_phrases(phrases, MIN_OFFLINE_PHRASES)
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
        vocab = self.vocab
        keep_chars = request.category in vocab.single_char_categories
        words: list[str] = []
        for word in self._source_words(request):
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

    @staticmethod
    def _source_words(request: CaptionRequest) -> list[str]:
        return split_words(request.terms[0] if request.terms else request.name)

    def _is_negated(self, request: CaptionRequest) -> bool:
        """A name ending in a negation mark after some other word: "eye-off", not "car-off-road"."""
        words = self._source_words(request)
        return len(words) > 1 and words[-1] in self.vocab.negation_marks

    def _is_brand(self, request: CaptionRequest) -> bool:
        words = self._source_words(request)
        named = len(words) > 1 and words[0] == self.vocab.brand_prefix
        return request.category in self.vocab.brand_categories or named

    def phrases_for(self, request: CaptionRequest) -> list[str]:
        vocab = self.vocab
        tag_phrases = _unique(
            normalise_phrase(str(t).replace("-", " ").replace("_", " ")) for t in request.tags
        )
        if self._is_brand(request):
            brand_phrases = self._brand_phrases(request, tag_phrases)
            if brand_phrases is not None:
                return brand_phrases
        negated = self._is_negated(request)
        words = self._name_words(request)
        if negated and words and words[-1] in vocab.negation_marks:
            words = words[:-1]  # the mark says "switched off"; the words before it are the concept
        roles = [classify(w, vocab) for w in words]
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
        if negated:
            return self._switched_off_phrases(request, roles, main_role, tag_phrases)
        stance = Stance(denied=denied_states(tag_evidence(tag_phrases, vocab), False, vocab))
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

        out = _PhraseList(vocab, stance)
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
        self._add_name_terms_and_tags(out, request, tag_phrases)
        if len(out.phrases) < MIN_PHRASES:
            # Not enough function words: accept looks words and single letters before giving up.
            self._fill_fallbacks(out, request, words, tag_phrases, main)
        return out.phrases

    def _add_name_terms_and_tags(
        self, out: _PhraseList, request: CaptionRequest, tag_phrases: list[str]
    ) -> None:
        for term in request.terms[1:]:
            if " " in term.strip():
                out.add(term)
        for tag in tag_phrases:
            if tag not in self.vocab.tag_fillers:  # the "do" and "not" of "do not disturb"
                out.add(tag)

    def _switched_off_phrases(
        self,
        request: CaptionRequest,
        roles: list[WordRole],
        main_role: WordRole | None,
        tag_phrases: list[str],
    ) -> list[str]:
        """Captions of a concept switched off ("eye-off", "bell-off", "lock-off")."""
        vocab = self.vocab
        concept_words = [r.word for r in roles if not r.mark and not r.visual]
        # "square-off" is about the shape itself, so its looks word may be said
        looks_only = not concept_words and any(r.visual for r in roles)
        if looks_only:
            concept_words = [r.word for r in roles if not r.mark]
        if not concept_words:
            # "a-b-off": the name's letters are the concept when nothing else is left
            concept_words = [w for w in self._source_words(request)[:-1] if w not in vocab.visual_words]
        concept = " ".join(concept_words)
        single = len(concept_words) == 1
        # "eye" off reads better as "visibility" off; a compound concept keeps its own words
        noun = main_role.noun if single and main_role and main_role.noun else concept

        concept_actions: set[str] = {w for w in concept_words if w in vocab.transitive_verbs}
        for role in roles:
            if role.verb and not role.mark:
                concept_actions.add(role.verb)
                concept_actions.update(vocab.verb_synonyms.get(role.verb, []))
        named_off = vocab.switched_off.get(concept) or (vocab.switched_off.get(noun, []) if single else [])
        # The opposite of the concept word's own action, said alone: "eye" -> "hide", "lock" -> "unlock"
        main_verb = main_role.verb if single and main_role and main_role.verb else None
        opposites = [vocab.opposite_verbs[main_verb]] if main_verb in vocab.opposite_verbs else []
        said_on_purpose = {*named_off, *opposites}
        concept_nouns = {concept, noun} - concept_actions
        stance = Stance(
            negated=True,
            denied=denied_states(set(), True, vocab),
            concept=tuple(concept_words),
            forbidden_bare=frozenset(
                (concept_actions | vocab.verbs) - vocab.off_words - said_on_purpose - concept_nouns
            ),
            allowed=frozenset(said_on_purpose),
        )
        out = _PhraseList(vocab, stance)
        if not concept:
            return out.phrases
        # "disabled-off" is already named by its state: "disable disabled" would say nothing
        negation_verbs = () if set(concept_words) & vocab.off_words else vocab.negation_verbs
        for phrase in named_off[:3]:
            out.add(phrase)
        for opposite in opposites[:1]:
            out.add(opposite)
        for verb in negation_verbs[:1]:
            out.add(f"{verb} {noun}", allow_visual=looks_only)
        out.add(f"{concept} off", allow_visual=looks_only, allow_single_char=True)
        if noun != concept:
            out.add(f"{noun} off")
        if not any(self._says_off(phrase, stance) for phrase in out.phrases):
            # the concept's own words could not be said ("shape" is a looks word): its off tags can
            for tag in tag_phrases:
                if self._says_off(tag, stance):
                    out.add(tag)
        self._add_name_terms_and_tags(out, request, tag_phrases)
        out.add(concept, allow_visual=looks_only)
        out.add(noun, allow_visual=looks_only)
        for verb in negation_verbs[1:]:
            out.add(f"{verb} {noun}", allow_visual=looks_only)
        if len(out.phrases) < MIN_PHRASES:
            self._fill_fallbacks(out, request, concept_words, tag_phrases, noun)
        return out.phrases

    def _says_off(self, phrase: str, stance: Stance) -> bool:
        return phrase in stance.allowed or any(side == OFF for _, side in claims(phrase.split(), self.vocab))

    def _brand_phrases(self, request: CaptionRequest, tag_phrases: list[str]) -> list[str] | None:
        """A logo is named, never acted on: "x logo", "x brand", "twitter brand"; None if the name
        holds no brand name ("brand" alone)."""
        vocab = self.vocab
        words = self._source_words(request)
        spelled = split_words(request.name)
        if "".join(spelled) == "".join(words):
            words = spelled  # a brand is spelled as its name is: "4chan", not the lexicon's "4 chan"
        if words and words[0] == vocab.brand_prefix:
            words = words[1:]
        words = [w for w in words if w not in banned_terms().words]
        if not words:
            return None
        brand = " ".join(words)
        known = (
            vocab.verbs
            | vocab.adjectives
            | vocab.visual_words
            | vocab.directions
            | vocab.stopwords
            | vocab.head_nouns
            | set(vocab.roles)
            | set(vocab.brand_nouns)
        )
        # An action tag ("save", "share") is what the brand's app does, not what the logo is.
        stance = Stance(
            denied=denied_states(tag_evidence(tag_phrases, vocab), False, vocab),
            forbidden_bare=frozenset(vocab.verbs - {r for r, role in vocab.roles.items() if "noun" in role}),
        )
        out = _PhraseList(vocab, stance)
        # a brand's name is a name, not a looks word: "c sharp", "square" (the payments company)
        for noun in vocab.brand_nouns:
            out.add(f"{brand} {noun}", allow_visual=True)
        if len(brand.replace(" ", "")) <= vocab.brand_alias_max_chars:
            # "x" alone finds nothing: the brand's other name ("twitter") is its first unknown tag
            alias = next((t for t in tag_phrases if " " not in t and t != brand and t not in known), None)
            if alias:
                for noun in vocab.brand_nouns:
                    out.add(f"{alias} {noun}")
        out.add(brand, allow_visual=True)
        for tag in tag_phrases:
            first = tag.split()[0]
            if tag != brand and tag not in vocab.brand_nouns and first not in vocab.transitive_verbs:
                out.add(tag)
        if len(out.phrases) < MIN_PHRASES:
            self._fill_fallbacks(out, request, words, tag_phrases, brand)
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
        tag_phrases = [t for t in tag_phrases if t not in self.vocab.tag_fillers]
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
