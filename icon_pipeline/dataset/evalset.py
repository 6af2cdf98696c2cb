"""The eval set: unseen captions for a sample of training groups, guarded against leakage.

A paraphraser writes new short captions for a group; any caption too close (normalised
Levenshtein similarity above `threshold`) to one of the group's training captions is rejected
and the paraphraser is asked again (`attempt` + 1), up to `max_retries` times. What still fails
is dropped and recorded. The offline paraphraser swaps UI words for synonyms from a shipped
lexicon (icon_pipeline/data/synonyms.json); an LLM paraphraser plugs in through `Paraphraser`.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rapidfuzz import process, utils
from rapidfuzz.distance import Levenshtein

from icon_pipeline.core.hashing import stable_key
from icon_pipeline.core.package_data import data_file
from icon_pipeline.dataset.grouping import Group, normalise_caption

DEFAULT_SYNONYMS = data_file("synonyms.json")


class Paraphraser(Protocol):
    """Writes `n` new captions for a group.

    `n` is the group's target count and is the same at every attempt; `attempt` counts from 0
    and grows when earlier captions were rejected as too close to training captions, so a
    paraphraser should then return captions it has not returned before (and less literal ones).
    """

    def paraphrase(self, group: Group, n: int, attempt: int) -> list[str]: ...


def load_synonyms(path: str | Path = DEFAULT_SYNONYMS) -> dict[str, list[str]]:
    """Read a synonym lexicon: `{"synonyms": {word: [alternatives, ...]}}` (or the bare mapping)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"synonym lexicon {path}: cannot be read: {exc}") from None
    table = data.get("synonyms", data) if isinstance(data, dict) else None
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(s, str) for s in v)
        for k, v in table.items()
    ):
        raise ValueError(f"synonym lexicon {path}: expected a mapping of word -> list of strings")
    return table


class OfflineParaphraser:
    """Deterministic paraphrases by synonym substitution, no model needed.

    Every training caption of the group yields candidates where one or more words are replaced
    by a synonym; candidates with about half their words replaced, then shorter ones, come
    first, ties broken by a stable hash. Attempt k returns the k-th slice of n candidates.
    """

    def __init__(self, synonyms: Mapping[str, Sequence[str]], max_words: int = 4, symmetric: bool = True):
        table: dict[str, set[str]] = {}
        for word, alternatives in synonyms.items():
            key = normalise_caption(word)
            for alt in alternatives:
                alt = normalise_caption(alt)
                if not alt or alt == key:
                    continue
                table.setdefault(key, set()).add(alt)
                # "remove" is as good a paraphrase of "delete" as the other way round.
                if symmetric and " " not in alt:
                    table.setdefault(alt, set()).add(key)
        self.synonyms = {k: sorted(v) for k, v in table.items()}
        self.max_words = max_words

    @classmethod
    def default(cls) -> OfflineParaphraser:
        return cls(load_synonyms(DEFAULT_SYNONYMS))

    def candidates(self, captions: Iterable[str]) -> list[tuple[int, str]]:
        """(words replaced, caption) for every substitution of the given captions."""
        originals = {normalise_caption(c) for c in captions}
        found: dict[str, int] = {}
        for caption in sorted(originals):
            words = caption.split()
            options = [[w, *self.synonyms.get(w, ())] for w in words]
            for combo in itertools.islice(itertools.product(*options), 2000):
                replaced = sum(1 for a, b in zip(combo, words, strict=True) if a != b)
                text = " ".join(combo)
                if replaced == 0 or text in originals or len(text.split()) > self.max_words:
                    continue
                found[text] = max(found.get(text, 0), replaced)
        return [(replaced, text) for text, replaced in found.items()]

    def paraphrase(self, group: Group, n: int, attempt: int) -> list[str]:
        def rank(item: tuple[int, str]) -> tuple[int, int, str]:
            replaced, text = item
            # About half the words replaced: far enough from the training text to pass the
            # guard, close enough to stay accurate (replacing every word drifts in meaning).
            ideal = max(1, round(len(text.split()) / 2))
            return abs(replaced - ideal), len(text.split()), stable_key(group.group_id, text)

        ranked = sorted(self.candidates(group.captions), key=rank)
        return [text for _, text in ranked[attempt * n : (attempt + 1) * n]]


@dataclass(frozen=True)
class LeakageRejection:
    group_id: str
    caption: str
    nearest_training_caption: str
    similarity: float
    attempt: int


@dataclass
class EvalSetReport:
    requested_groups: int
    available_groups: int  # train-side groups with captions
    used_groups: int = 0
    captions: int = 0
    threshold: float = 0.8
    skipped_no_captions: list[str] = field(default_factory=list)
    rejections: list[LeakageRejection] = field(default_factory=list)  # every too-close candidate
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (group_id, caption) failing validation
    shortfall: dict[str, tuple[int, int]] = field(default_factory=dict)  # group -> (got, target)
    dropped_groups: list[str] = field(default_factory=list)  # sampled but no caption survived
    attempts: Counter[int] = field(default_factory=Counter)  # accepted captions per attempt number

    @property
    def shortfall_note(self) -> str:
        """Why fewer groups than eval.n_groups, in words ('' when none is missing)."""
        if self.used_groups >= self.requested_groups:
            return ""
        dropped = (
            f", {len(self.dropped_groups)} lost every caption to the leakage guard"
            if self.dropped_groups
            else ""
        )
        return (
            f"eval.n_groups asks for {self.requested_groups} groups; the library has {self.available_groups} "
            f"train-side groups with captions{dropped}: {self.used_groups} used"
        )

    def to_metadata(self) -> dict[str, Any]:
        return {
            "requested_groups": self.requested_groups,
            "available_groups": self.available_groups,
            "used_groups": self.used_groups,
            "shortfall": self.shortfall_note,
            "captions": self.captions,
            "threshold": self.threshold,
            "skipped_no_captions": len(self.skipped_no_captions),
            "rejected_too_similar": len(self.rejections),
            "invalid_captions": len(self.invalid),
            "groups_short_of_target": len(self.shortfall),
            "dropped_groups": len(self.dropped_groups),
            "accepted_by_attempt": {str(k): v for k, v in sorted(self.attempts.items())},
            "rejection_examples": [
                f"{r.caption!r} ~ {r.nearest_training_caption!r} ({r.similarity:.2f})"
                for r in self.rejections[:10]
            ],
        }


def nearest_training_caption(caption: str, training: Sequence[str]) -> tuple[str, float]:
    """The most similar training caption and its normalised Levenshtein similarity in [0, 1]."""
    if not training:
        return "", 0.0
    match = process.extractOne(
        caption, training, scorer=Levenshtein.normalized_similarity, processor=utils.default_process
    )
    return match[0], float(match[1])


def _default_validate(captions: list[str]) -> list[str]:
    """Keep 1-4 word lowercase phrases (stand-in for the captions module's rules)."""
    return [c for c in captions if c == c.lower() and 1 <= len(c.split()) <= 4]


def build_eval_set(
    groups: Iterable[Group],
    split: Mapping[str, str],
    paraphraser: Paraphraser,
    n_groups: int = 500,
    per_group: tuple[int, int] = (3, 5),
    threshold: float = 0.8,
    max_retries: int = 3,
    seed: int = 0,
    *,
    validate: Callable[[list[str]], list[str]] | None = _default_validate,
) -> tuple[list[dict[str, Any]], EvalSetReport]:
    """Sample up to `n_groups` train-side groups and write `per_group` unseen captions for each.

    `n_groups` is a cap: a library with fewer groups gives every group it has, and the report
    says how many were asked for and used. `validate` returns the captions that pass (the
    captions module's rules); None skips it. Raises ValueError when no group has captions or
    nothing survives the leakage guard: an eval set is never written empty.
    """
    lo, hi = per_group
    if not 1 <= lo <= hi:
        raise ValueError(f"per_group must be (min, max) with 1 <= min <= max, got {per_group}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if n_groups < 1 or max_retries < 0:
        raise ValueError(f"n_groups must be >= 1 and max_retries >= 0, got {n_groups}, {max_retries}")

    train = sorted((g for g in groups if split.get(g.group_id) == "train"), key=lambda g: g.group_id)
    eligible = [g for g in train if g.captions]
    report = EvalSetReport(requested_groups=n_groups, available_groups=len(eligible), threshold=threshold)
    report.skipped_no_captions = [g.group_id for g in train if not g.captions]
    if not eligible:
        raise ValueError(
            f"no train-side group has captions ({len(train)} train groups, "
            f"{len(report.skipped_no_captions)} without captions): nothing to build an eval set from"
        )

    order = random.Random(seed).sample(eligible, len(eligible))
    rows: list[dict[str, Any]] = []
    for group in order:
        if report.used_groups >= n_groups:
            break
        target = random.Random(stable_key(seed, group.group_id)).randint(lo, hi)
        accepted = _captions_for_group(group, paraphraser, target, threshold, max_retries, validate, report)
        if not accepted:
            report.dropped_groups.append(group.group_id)
            continue
        if len(accepted) < target:
            report.shortfall[group.group_id] = (len(accepted), target)
        report.used_groups += 1
        for index, (caption, attempt, nearest, similarity) in enumerate(accepted):
            report.attempts[attempt] += 1
            rows.append(
                {
                    "eval_id": f"{group.group_id}:{index}",
                    "group_id": group.group_id,
                    "caption": caption,
                    "icon_ids": list(group.members),
                    "representative_icon_id": group.representative,
                    "attempt": attempt,
                    "nearest_training_caption": nearest,
                    "max_train_similarity": round(similarity, 4),
                }
            )
    report.captions = len(rows)

    if not rows:
        example = report.rejections[0] if report.rejections else None
        detail = (
            f"; e.g. {example.caption!r} ~ {example.nearest_training_caption!r} at {example.similarity:.2f}"
            if example
            else ""
        )
        raise ValueError(
            f"the leakage guard (threshold {threshold}) and validation rejected every candidate caption "
            f"({len(report.rejections)} too similar, {len(report.invalid)} invalid){detail}: "
            "raise eval.threshold in icon_pipeline.yaml, or use a paraphraser that writes less literal "
            "captions (eval.paraphraser: openai)"
        )
    rows.sort(key=lambda r: (r["group_id"], int(r["eval_id"].rsplit(":", 1)[1])))
    return rows, report


def _captions_for_group(
    group: Group,
    paraphraser: Paraphraser,
    target: int,
    threshold: float,
    max_retries: int,
    validate: Callable[[list[str]], list[str]] | None,
    report: EvalSetReport,
) -> list[tuple[str, int, str, float]]:
    training = list(group.captions)
    training_set = set(training)
    accepted: list[tuple[str, int, str, float]] = []
    seen: set[str] = set()
    for attempt in range(max_retries + 1):
        proposed = [normalise_caption(c) for c in paraphraser.paraphrase(group, target, attempt)]
        fresh = [c for c in dict.fromkeys(proposed) if c and c not in seen]
        seen.update(fresh)
        valid = set(validate(fresh)) if validate else set(fresh)
        for caption in fresh:
            if len(accepted) >= target:
                break
            if caption not in valid:
                report.invalid.append((group.group_id, caption))
                continue
            nearest, similarity = nearest_training_caption(caption, training)
            if caption in training_set or similarity > threshold:
                report.rejections.append(
                    LeakageRejection(group.group_id, caption, nearest, similarity, attempt)
                )
                continue
            accepted.append((caption, attempt, nearest, similarity))
        if len(accepted) >= target:
            break
    return accepted
