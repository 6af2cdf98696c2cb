"""What a reviewer is told about a caption before approving it: which phrases contradict the icon's
own name and tags, and what a reviewer's edit changed. No Gradio here; the captions app calls it.

The contradiction rules are the offline captioner's (icon_pipeline.captions.offline), read back
as checks on any caption, whoever wrote it (a model, a reviewer, the offline captioner itself):

- tags that say only one side of a switch (hide / hidden / invisible) deny the other side
  ("show", "visible");
- a name ending in a negation mark ("eye-off", "bell-slash") is its concept switched off: no phrase
  may say an on state ("notifications on") or lead with the action the icon stops ("view eye"),
  and at least one phrase must say off / disable / hide / mute (...);
- a brand icon ("brand-x", category Brand) is a logo: no phrase may act on it ("delete brand").
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from icon_pipeline.captions.offline import (
    OFF,
    ON,
    Vocabulary,
    claims,
    denied_states,
    load_vocabulary,
    split_words,
    tag_evidence,
)
from icon_pipeline.captions.validation import normalise_phrase

WHOLE_CAPTION = ""  # CaptionFlag.phrase of a flag about the phrases together, not one of them


@dataclass(frozen=True)
class CaptionFlag:
    """One reason to look at a caption again before approving it."""

    phrase: str  # the offending phrase, or WHOLE_CAPTION
    reason: str

    def __str__(self) -> str:
        return f'"{self.phrase}": {self.reason}' if self.phrase else self.reason


def _tag_phrases(tags: Sequence[str]) -> list[str]:
    # as the offline captioner reads tags: "not-visible" -> "not visible"
    phrases = (normalise_phrase(str(t).replace("-", " ").replace("_", " ")) for t in tags)
    return list(dict.fromkeys(p for p in phrases if p))


def _said(words: Sequence[str], switch: int, vocab: Vocabulary) -> str:
    """The words of a phrase that speak of `switch`, as written: "show", "not hidden", "turn on"."""
    for i in range(len(words)):
        for size in (2, 1):
            term = " ".join(words[i : i + size])
            if any(s == switch for s, _ in vocab.switch_terms.get(term, ())):
                return " ".join(words[i - 1 : i + size]) if i and words[i - 1] in vocab.negators else term
    return " ".join(words)


def _own_positions(words: Sequence[str], name_words: Sequence[str]) -> frozenset[int]:
    """Positions of the icon's own name words: its name said in a caption is not a claim
    ("view off" of "view-360-off", "edit off" of "edit-circle-off")."""
    return frozenset(i for i, w in enumerate(words) if w in name_words)


def is_brand(name: str, category: str = "", vocab: Vocabulary | None = None) -> bool:
    vocab = vocab or load_vocabulary()
    words = split_words(name)
    return category in vocab.brand_categories or (len(words) > 1 and words[0] == vocab.brand_prefix)


def is_switched_off(name: str, vocab: Vocabulary | None = None) -> bool:
    """ "eye-off", "bell-slash"; not "off" alone."""
    vocab = vocab or load_vocabulary()
    words = split_words(name)
    return len(words) > 1 and words[-1] in vocab.negation_marks


def caption_flags(
    name: str,
    tags: Sequence[str],
    phrases: Sequence[str],
    category: str = "",
    vocab: Vocabulary | None = None,
) -> list[CaptionFlag]:
    """Why `phrases` contradict the icon called `name` with `tags`; empty when nothing does."""
    vocab = vocab or load_vocabulary()
    phrases = [p for p in (normalise_phrase(str(p)) for p in phrases) if p]
    if not phrases:
        return []
    name_words = split_words(name)
    tag_phrases = _tag_phrases(tags)
    if is_brand(name, category, vocab):
        return _brand_flags(name_words, phrases, vocab)
    negated = is_switched_off(name, vocab)
    concept = tuple(name_words[:-1] if negated else name_words)
    evidence = tag_evidence(tag_phrases, vocab)
    denied = denied_states(evidence, negated, vocab)
    concept_actions = _concept_actions(concept, vocab) if negated else set()
    flags = []
    for phrase in phrases:
        words = phrase.split()
        own = _own_positions(words, concept)
        said = claims(words, vocab, own) & denied
        for switch, side in sorted(said):
            term = _said(words, switch, vocab)
            if negated:
                why = f"says {term}, but {name!r} is switched off"
            else:
                other = (switch, OFF if side == ON else ON)
                told = [t for t in tag_phrases if other in claims(t.split(), vocab)][:3]
                why = f"says {term}, but the tags say " + ", ".join(told)
            flags.append(CaptionFlag(phrase, why))
        if not said and negated and words[0] in concept_actions and 0 not in own:
            flags.append(CaptionFlag(phrase, f"says {words[0]}, the action {name!r} switches off"))
    if negated and not any(_says_off(p, concept, vocab) for p in phrases):
        flags.append(
            CaptionFlag(
                WHOLE_CAPTION,
                f"{name!r} is switched off, but no phrase says off, disable, hide or mute",
            )
        )
    return flags


def _concept_actions(concept: Sequence[str], vocab: Vocabulary) -> set[str]:
    """The actions the switched-off concept stands for ("eye" -> view, see, ...), minus off words."""
    actions = {w for w in concept if w in vocab.transitive_verbs}
    for word in concept:
        verb = vocab.roles.get(word, {}).get("verb")
        if verb:
            actions |= {verb, *vocab.verb_synonyms.get(verb, [])}
    return actions - vocab.off_words - set(vocab.opposite_verbs.values())


def _says_off(phrase: str, concept: Sequence[str], vocab: Vocabulary) -> bool:
    words = phrase.split()
    if any(side == OFF for _, side in claims(words, vocab)):
        return True  # "hide", "mute notifications", "notifications off", "not visible"
    if words[0] in vocab.negators or words[0] in vocab.opposite_verbs.values():
        return True  # "no wifi", "unlock", "stop video"
    named = {p for word in (" ".join(concept), *concept) for p in vocab.switched_off.get(word, [])}
    for word in concept:
        noun = vocab.roles.get(word, {}).get("noun")
        named.update(vocab.switched_off.get(noun or "", []))
    return phrase in named  # what the concept switched off is called ("unlocked", "lights out")


def _brand_flags(name_words: Sequence[str], phrases: Sequence[str], vocab: Vocabulary) -> list[CaptionFlag]:
    # the brand's name, joined: "campaign monitor" is the name of "brand-campaignmonitor"
    brand = "".join(w for w in name_words if w != vocab.brand_prefix) or "".join(name_words)
    # "trash", "bookmark": words that are nouns too may name what the brand is about
    nouns = {w for w, role in vocab.roles.items() if role.get("noun")}
    flags = []
    for phrase in phrases:
        words = phrase.split()
        actions = [w for w in words if w in vocab.transitive_verbs and w not in nouns and w not in brand]
        if actions:
            flags.append(
                CaptionFlag(phrase, f"reads as an action ({actions[0]}), but a brand icon is a logo")
            )
    return flags


# --- what an edit changed -------------------------------------------------------------------------

DiffOp = Literal["kept", "removed", "added"]


def phrase_diff(generated: Sequence[str], edited: Sequence[str]) -> list[tuple[DiffOp, str]]:
    """The edit as phrase operations in reading order: every generated phrase kept or removed,
    every new one added where it was put."""
    ops: list[tuple[DiffOp, str]] = []
    matcher = difflib.SequenceMatcher(a=list(generated), b=list(edited), autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            ops += [("kept", p) for p in generated[a0:a1]]
            continue
        ops += [("removed", p) for p in generated[a0:a1] if p not in edited]  # moved is not removed
        ops += [("added", p) for p in edited[b0:b1] if p not in generated]
        ops += [("kept", p) for p in edited[b0:b1] if p in generated]
    return ops
