"""Absolute confidence: how likely a result is to be what the query means, on one scale for every query.

The fused score (fusion.py) is relative: min-max normalised per query, the first result of any query,
even "qwxzv plorf", scores about 1. Confidence is a probability instead: a logistic model per query
kind (words, sentence, image) of "this icon is relevant to this query", fitted on the frozen eval
set's fitting queries (never the benchmark's) from features that keep their meaning across queries:

- each weighted vector channel's raw cosine similarity (an icon a channel did not return takes that
  channel's lowest returned score: it is at most that similar);
- whether keyword search returned the icon (it shares a word with the query);
- whether the query names the icon (names.EXACT, names.NEAR);
- for an image, what it looks like (`query_traits`): an icon is a few lines in one colour on a
  plain ground, so how much of it is drawn, and how much is in neither the ground's nor the ink's
  colour (a photo, noise or a gradient has every shade; an icon only its anti-aliased edges).

For images, a second logistic model (`drawing`), over the query's traits alone, says how likely the
query is a drawing at all: the fitting queries with an answer against the images made to have none,
each side counting equally. A result's confidence is both: that the query is a drawing, and that
this icon is what it draws. (Fitted into the per-result model, the traits barely count: most results
of any query are irrelevant, so they explain little of which result is right.)

A query matches nothing well when its best result's confidence is below `no_match_below`: the
confidence that only NO_MATCH_SHARE of the eval set's queries' best results fall under (a real query
is rarely told "no match"; gibberish, and images of things the library does not draw, are).

Besides the eval set, the fit sees queries made to have no answer (`no_answer_queries`: random letter
strings, noise and smooth photo-like images), every candidate of them irrelevant: without them the
model never learns what an answer to nothing looks like (a noise image's normalised drawing is ink
everywhere, close to many icons' by the pixel channel). They never count in the fusion's weights.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from icon_pipeline.search.channels import KEYWORDS, ChannelHit
from icon_pipeline.search.names import EXACT, NEAR

NO_MATCH_SHARE = 0.05  # of the eval set's queries, the share whose best result counts as "no match"
L2_PENALTY = 1e-6  # per unit of query weight: keeps the fit finite when a feature separates the labels
NEWTON_STEPS = 25
NO_ANSWER_QUERIES = 40  # of each kind (text, image) made to have no answer
MATCH = "match"
NO_MATCH = "none"
UNRATED = "unrated"  # no confidence model (unfitted settings, or one channel asked alone)


@dataclass(frozen=True)
class ConfidenceModel:
    """One query kind's logistic model over `features`, and its no-match threshold."""

    channels: tuple[str, ...]  # the weighted channels whose evidence it reads
    coef: tuple[float, ...]  # one per feature (see `feature_names`)
    intercept: float
    no_match_below: float
    queries: int = 0  # fitting queries it was fitted on
    # Images: the logistic model of "the query is a drawing" over QUERY_TRAITS, its coefficients then
    # its intercept; empty for text (every text is words).
    drawing: tuple[float, ...] = ()

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.channels)

    def drawing_chance(self, traits: Sequence[float]) -> float:
        """How likely a query with these traits is a drawing (1 without a drawing model)."""
        return _drawing_chance(self.drawing, traits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "features": self.feature_names,
            "coef": [round(c, 6) for c in self.coef],
            "intercept": round(self.intercept, 6),
            "no_match_below": round(self.no_match_below, 6),
            "queries": self.queries,
            **({"drawing": [round(c, 6) for c in self.drawing]} if self.drawing else {}),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ConfidenceModel:
        return cls(
            channels=tuple(raw["channels"]),
            coef=tuple(float(c) for c in raw["coef"]),
            intercept=float(raw["intercept"]),
            no_match_below=float(raw["no_match_below"]),
            queries=int(raw.get("queries", 0)),
            drawing=tuple(float(c) for c in raw.get("drawing", ())),
        )

    def probabilities(
        self,
        icon_ids: Sequence[str],
        hits: Mapping[str, Sequence[ChannelHit]],
        levels: Mapping[str, int],
        traits: Sequence[float] = (),
    ) -> np.ndarray:
        matrix = features(self.channels, icon_ids, hits, levels, traits)
        return _sigmoid(matrix @ np.asarray(self.coef) + self.intercept) * self.drawing_chance(traits)


def feature_names(channels: Sequence[str]) -> list[str]:
    return [
        *(f"{c}_returned" if c == KEYWORDS else f"{c}_cosine" for c in channels),
        "name_exact",
        "name_near",
        *QUERY_TRAITS,
    ]


INK_LEVELS = 48  # grey levels from a colour that count as another colour
QUERY_TRAITS = ("query_ink", "query_mid_tones")


def query_traits(query: Any) -> tuple[float, float]:
    """What an image query looks like, (ink, mid tones); zeros for text.

    - ink: the share that is drawn (differs from the border's colour): an icon is a few lines on a
      plain ground (a few percent to a third), a photo or noise is drawn all over;
    - mid tones: the share in neither the ground's colour nor the ink's (the drawn pixels' median):
      an icon has only its anti-aliased edges there, a photo, noise or a gradient has every shade."""
    if isinstance(query, str):
        return (0.0, 0.0)
    grey = np.asarray(query.convert("L"), dtype=np.int16)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    drawn = np.abs(grey - int(np.median(border))) > INK_LEVELS
    if not drawn.any():
        return (0.0, 0.0)
    mid_tones = drawn & (np.abs(grey - int(np.median(grey[drawn]))) > INK_LEVELS)
    return float(drawn.mean()), float(mid_tones.mean())


def features(
    channels: Sequence[str],
    icon_ids: Sequence[str],
    hits: Mapping[str, Sequence[ChannelHit]],
    levels: Mapping[str, int],
    traits: Sequence[float] = (),
) -> np.ndarray:
    """(icons, features): see the module doc; `traits`: the query's query_traits (zeros if empty)."""
    matrix = np.zeros((len(icon_ids), len(channels) + 2 + len(QUERY_TRAITS)))
    for column, channel in enumerate(channels):
        returned = {h.icon_id: h.score for h in hits.get(channel, ())}
        if channel == KEYWORDS:
            matrix[:, column] = [1.0 if i in returned else 0.0 for i in icon_ids]
        else:
            floor = min(returned.values()) if returned else 0.0
            matrix[:, column] = [returned.get(i, floor) for i in icon_ids]
    names = len(channels)
    matrix[:, names] = [1.0 if levels.get(i) == EXACT else 0.0 for i in icon_ids]
    matrix[:, names + 1] = [1.0 if levels.get(i) == NEAR else 0.0 for i in icon_ids]
    if len(traits):
        matrix[:, names + 2 :] = np.asarray(traits, dtype=float)
    return matrix


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def fit_logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Weighted L2-penalised logistic regression by Newton's method: (coefficients, intercept)."""
    n, d = x.shape
    w = np.ones(n) if weights is None else weights
    design = np.hstack([x, np.ones((n, 1))])
    beta = np.zeros(d + 1)
    penalty = np.full(d + 1, L2_PENALTY * w.sum())
    penalty[-1] = 0.0
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(design @ beta)
        gradient = design.T @ (w * (y - p)) - penalty * beta
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian + 1e-9 * np.eye(d + 1), gradient)
        beta += step
        if np.abs(step).max() < 1e-8:
            break
    return beta[:-1], float(beta[-1])


@dataclass(frozen=True)
class ConfidenceExample:
    """One fitting query as the confidence fit needs it."""

    kind: str
    hits: Mapping[str, Sequence[ChannelHit]]
    relevant: frozenset[str]  # relevant icon ids (excluded ones left out)
    exclude: frozenset[str]
    levels: Mapping[str, int]
    weight: float = 1.0
    # An eval-set query: the no-match threshold is set on these alone when there are any (the corpus's
    # drawings by other sets are harder than a screenshot, and would pull it down to noise's level).
    protected: bool = False
    traits: tuple[float, ...] = ()  # query_traits of the query


def fit_confidence(
    examples: Sequence[ConfidenceExample], weights: Mapping[str, Mapping[str, float]]
) -> dict[str, ConfidenceModel]:
    """Per kind with fitting queries: the logistic model over that kind's weighted channels, and the
    no-match threshold (NO_MATCH_SHARE of its queries' best results are below it)."""
    models: dict[str, ConfidenceModel] = {}
    for kind in sorted({e.kind for e in examples}):
        channels = tuple(sorted(c for c, w in weights.get(kind, {}).items() if w > 0))
        chosen = [e for e in examples if e.kind == kind]
        blocks, labels, row_weights, spans, protected = [], [], [], [], []
        chosen_used: list[ConfidenceExample] = []
        for example in chosen:
            ids = sorted(
                ({h.icon_id for c in channels for h in example.hits.get(c, ())} | set(example.levels))
                - example.exclude
            )
            if not ids:
                continue
            start = sum(len(b) for b in blocks)
            blocks.append(features(channels, ids, example.hits, example.levels, example.traits))
            labels.append(np.array([1.0 if i in example.relevant else 0.0 for i in ids]))
            # each query counts its share, however many candidates it has
            row_weights.append(np.full(len(ids), example.weight / len(ids)))
            spans.append((start, start + len(ids)))
            protected.append(example.protected)
            chosen_used.append(example)
        if not blocks:
            continue
        x, y, w = np.vstack(blocks), np.concatenate(labels), np.concatenate(row_weights)
        if y.min() == y.max():
            continue  # nothing to tell apart
        coef, intercept = fit_logistic(x, y, w)
        p = _sigmoid(x @ coef + intercept)
        answered = np.array([bool(e.relevant) for e in chosen_used])
        drawing = _fit_drawing(chosen_used, answered) if kind == "image" else ()
        # The drawing chance is the query's own: it scales every result of it alike.
        chances = [_drawing_chance(drawing, e.traits) for e in chosen_used]
        best = np.array([p[a:b].max() * c for (a, b), c in zip(spans, chances, strict=True)])
        if any(protected):
            best = best[np.array(protected) & answered]
        elif answered.any():
            best = best[answered]
        models[kind] = ConfidenceModel(
            channels=channels,
            coef=tuple(float(c) for c in coef),
            intercept=intercept,
            no_match_below=float(np.quantile(best, NO_MATCH_SHARE)),
            queries=len(spans),
            drawing=drawing,
        )
    return models


def _drawing_chance(drawing: Sequence[float], traits: Sequence[float]) -> float:
    """How likely a query with these traits is a drawing, by a ConfidenceModel's `drawing` model
    (coefficients, then intercept); 1 without one, or for a text (no traits)."""
    if not len(drawing) or not len(traits):
        return 1.0
    *coef, intercept = drawing
    return float(_sigmoid(np.dot(coef, np.asarray(traits, dtype=float)) + intercept))


def _fit_drawing(examples: Sequence[ConfidenceExample], answered: np.ndarray) -> tuple[float, ...]:
    """(coefficients..., intercept) of "the query is a drawing" over the image queries' traits: those
    with an answer against those made to have none, each side weighing one; () without both sides."""
    if answered.all() or not answered.any() or any(len(e.traits) != len(QUERY_TRAITS) for e in examples):
        return ()
    traits = np.array([e.traits for e in examples], dtype=float)
    weights = np.where(answered, 1 / answered.sum(), 1 / (~answered).sum())
    coef, intercept = fit_logistic(traits, answered.astype(float), weights)
    return (*(float(c) for c in coef), intercept)


def no_answer_queries(seed: int = 0, count: int = NO_ANSWER_QUERIES) -> list[str | Image.Image]:
    """Queries nothing can answer, deterministic for a seed: `count` strings of one to three random
    letter runs, and `count` images (colour noise, blurred noise, smooth gradients) of random sizes."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    texts = [
        " ".join(
            "".join(rng.choice(letters) for _ in range(rng.randint(4, 8))) for _ in range(rng.randint(1, 3))
        )
        for _ in range(count)
    ]
    images: list[str | Image.Image] = []
    for n in range(count):
        noise = np.random.default_rng(rng.randrange(2**32))
        width, height = rng.randint(64, 400), rng.randint(64, 400)
        if n % 3 == 2:
            yy, xx = np.mgrid[0:height, 0:width]
            waves = [((xx * noise.uniform(0.2, 2) + yy * noise.uniform(0.2, 2)) % 256) for _ in range(3)]
            image = Image.fromarray(np.stack(waves, -1).astype(np.uint8))
        else:
            image = Image.fromarray(noise.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
        images.append(image.filter(ImageFilter.GaussianBlur(rng.uniform(1, 4))) if n % 3 == 1 else image)
    return [*texts, *images]
