"""Hybrid search: merge the channels' answers, and fit how much each channel counts.

The merge follows Figma's production query path for icon search (a lexical and a vector index
queried together, scores normalised, exact-name matches boosted, results merged):

1. every channel that answers the query's kind returns its top `depth` icons;
2. each channel's scores are min-max normalised over its own list (best 1, last 0; an icon a
   channel did not return counts 0 there);
3. the fused score is the weighted sum, plus `name_boost` for an icon whose whole name is the
   query ("shopping cart" -> shopping-cart);
4. with `fold_variants`, an icon concept ranks as a whole: every icon of a group (outline and
   filled, sizes) takes its group's best fused score, so a concept's variants sit together and a
   screenshot of one variant finds the others;
5. icons the query names (names.py: its exact name first, then names holding all its words or a
   first tag equal to it, never a negation such as copy-off) rank ahead of the rest, tier by tier,
   the fused score ordering each tier: a designer who types an icon's name gets that icon first
   whatever the channels think. The fit (below) does not see tiers: they are not fitted.

Weights are kept per query kind: `words` (a few words, like a caption or a keyword search), `sentence`
(more than four words: an intent in natural language) and `image`. Keyword matching helps the
sentences of the eval set but not its short phrases, so one set of weights would serve one of
them badly.

The weights, then the boost and folding, then the confidence model (confidence.py), are fitted per
library on the frozen eval set (never on the benchmark queries) by `fit_fusion`: an exhaustive grid
over the weight simplex maximising mean R@1 + R@10, with and without variant folding (the better
whole decides), then the boost that adds most; a channel that does not help gets weight 0, and ties
go to fewer channels. Results a weighting scores alike count as a random order of them would (search
breaks such ties by icon id, which knows nothing of relevance).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from icon_pipeline.search.channels import ChannelHit, Query
from icon_pipeline.search.confidence import ConfidenceExample, fit_confidence

KINDS = ("words", "sentence", "image")
WORDS_MAX = 4  # captions are 1-4 words: a query this short is searched like one
DEFAULT_DEPTH = 100  # icons asked of each channel per query
WEIGHT_STEP = 0.1
NAME_BOOSTS = (0.0, 0.1, 0.25, 0.5, 1.0)
PARSIMONY = 0.005  # objective (R@1 + R@10) a weighting with one more channel must gain
# A channel that alone reaches less than this objective on the eval set (an untrained model) gets
# no weight: what it adds to a fusion there is chance.
MIN_CHANNEL_OBJECTIVE = 0.1
# A channel of weight 0 that was asked anyway only fills in: it orders the icons no weighted channel
# returned (a query whose words match no name, tag or caption still gets an answer).
FILL_WEIGHT = 1e-3
TIE_TOLERANCE = 1e-9  # fused scores closer than this are a tie
# How much R@1 on the protected fitting queries a weighting may give up for the others' sake.
PROTECTED_R1_TOLERANCE = 0.005


def fusion_kind(query: Query) -> str:
    """Which weights merge a query's channels: words, sentence or image."""
    if not isinstance(query, str):
        return "image"
    return "words" if len(query.split()) <= WORDS_MAX else "sentence"


def channel_kind(kind: str) -> str:
    """The query kind a channel must answer for a fusion kind (text or image)."""
    return "image" if kind == "image" else "text"


@dataclass(frozen=True)
class FusedHit:
    icon_id: str
    score: float  # the fused score (the group's, when variants are folded)
    own_score: float  # the icon's own fused score
    channel_scores: dict[str, float]  # each channel's raw score for this icon (absent: not returned)
    name_match: bool = False
    match_level: int = 0  # how closely the query names the icon (names.EXACT, names.NEAR; 0: not)
    confidence: float | None = None  # P(relevant), on one scale for all queries (confidence.py)


@dataclass(frozen=True)
class FusionSettings:
    """How hybrid search merges channels, per query kind."""

    weights: dict[str, dict[str, float]]  # kind -> channel -> weight (summing to 1)
    name_boost: float = 0.0
    fold_variants: bool = True
    fitted: dict[str, Any] = field(default_factory=dict)  # what the fit saw and scored
    # kind -> confidence.ConfidenceModel.to_dict(): fitted beside the weights; empty: results unrated
    confidence: dict[str, dict[str, Any]] = field(default_factory=dict)

    def channels(self, kind: str) -> dict[str, float]:
        return {c: w for c, w in self.weights.get(kind, {}).items() if w > 0}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | Mapping[str, Any]) -> FusionSettings:
        raw = json.loads(text) if isinstance(text, str) else dict(text)
        return cls(
            weights={k: {c: float(w) for c, w in v.items()} for k, v in raw["weights"].items()},
            name_boost=float(raw.get("name_boost", 0.0)),
            fold_variants=bool(raw.get("fold_variants", True)),
            fitted=dict(raw.get("fitted") or {}),
            confidence=dict(raw.get("confidence") or {}),
        )

    @classmethod
    def unfitted(cls, channels: Mapping[str, Collection[str]]) -> FusionSettings:
        """Equal weights over the channels of each kind: what search uses before any fit."""
        weights = {
            kind: {c: round(1.0 / len(names), 6) for c in sorted(names)} if names else {}
            for kind, names in channels.items()
        }
        return cls(weights=weights, name_boost=0.25, fold_variants=True, fitted={"unfitted": True})


def minmax(hits: Sequence[ChannelHit]) -> dict[str, float]:
    """Scores mapped to [0, 1] over the list: best 1, worst 0; one hit (or all equal): 1."""
    if not hits:
        return {}
    scores = [h.score for h in hits]
    low, high = min(scores), max(scores)
    span = high - low
    return {h.icon_id: (h.score - low) / span if span > 0 else 1.0 for h in hits}


def fuse(
    channel_hits: Mapping[str, Sequence[ChannelHit]],
    weights: Mapping[str, float],
    k: int,
    *,
    group_of: Mapping[str, str],
    members: Mapping[str, Sequence[str]],
    name_matches: Collection[str] = (),
    name_boost: float = 0.0,
    fold_variants: bool = True,
    exclude: Collection[str] = (),
    match_levels: Mapping[str, int] | None = None,
) -> list[FusedHit]:
    """The top k icons of the merged channels (see the module doc); `exclude` never ranks, nor
    lends its score to its variants (a screenshot of an indexed icon, with that icon excluded, must
    find its concept by the other variants' own scores). `match_levels`: icon_id -> its name tier
    (step 5); a group ranks at its best member's tier when variants are folded.

    Channels in `channel_hits` without a weight count FILL_WEIGHT: they only order what the
    weighted channels did not return."""
    raw: dict[str, dict[str, float]] = {}
    own: dict[str, float] = {}
    weighted = {c for c in channel_hits if weights.get(c)}
    answered = {h.icon_id for c in weighted for h in channel_hits[c]}
    for channel, hits in channel_hits.items():
        weight = weights.get(channel) or FILL_WEIGHT
        for icon_id, value in minmax(hits).items():
            if channel in weighted or icon_id not in answered:  # fillers never reorder the answer
                own[icon_id] = own.get(icon_id, 0.0) + weight * value
        for hit in hits:
            raw.setdefault(hit.icon_id, {})[channel] = hit.score
    matched = set(name_matches)
    for icon_id in matched:
        own[icon_id] = own.get(icon_id, 0.0) + name_boost
    levels = {i: v for i, v in (match_levels or {}).items() if i not in exclude}
    for icon_id in levels:
        own.setdefault(icon_id, 0.0)  # named but returned by no channel: still ranks in its tier
    final = dict(own)
    tier = dict(levels)
    if fold_variants:
        best: dict[str, tuple[int, float]] = {}
        for icon_id, value in own.items():
            if icon_id in exclude:
                continue
            group = group_of.get(icon_id, icon_id)
            best[group] = max(best.get(group, (0, float("-inf"))), (levels.get(icon_id, 0), value))
        for group, (level, value) in best.items():
            for member in members.get(group, (group,)):
                final[member], tier[member] = value, level
                own.setdefault(member, 0.0)
    ranked = sorted(
        (i for i in final if i not in exclude),
        key=lambda i: (-tier.get(i, 0), -final[i], -levels.get(i, 0), -own[i], i),
    )[:k]
    return [
        FusedHit(i, float(final[i]), float(own[i]), raw.get(i, {}), i in matched, levels.get(i, 0))
        for i in ranked
    ]


# --- fitting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FittingQuery:
    """One eval-set query with every channel's answer, for `fit_fusion`."""

    kind: str
    hits: Mapping[str, Sequence[ChannelHit]]
    relevant_groups: frozenset[str]
    exclude: frozenset[str] = frozenset()
    name_matches: frozenset[str] = frozenset()
    weight: float = 1.0  # its share of the objective (queries from two sources can count equally)
    # A query of the source whose R@1 the fit may not lower by more than PROTECTED_R1_TOLERANCE
    # (the eval set: the library's own vocabulary) while it gains on the others.
    protected: bool = False
    match_levels: Mapping[str, int] = field(default_factory=dict)  # hybrid.LibraryIndex.match_levels
    traits: tuple[float, ...] = ()  # an image query's confidence.query_traits


def weight_grid(channels: Sequence[str], step: float = WEIGHT_STEP) -> np.ndarray:
    """Every weighting of `channels` on the simplex in steps of `step`: shape (len(channels), combos)."""
    units = round(1 / step)
    combos = [c for c in itertools.product(range(units + 1), repeat=len(channels)) if sum(c) == units]
    return np.array(combos, dtype=np.float64).T / units if channels else np.zeros((0, 1))


@dataclass
class _Prepared:
    """One fitting query as arrays: normalised channel scores per candidate, grouped for folding."""

    normalised: np.ndarray  # (candidates, channels), candidates sorted by group
    matched: np.ndarray  # (candidates,) 1.0 for an exact-name match
    unit_starts: np.ndarray  # first candidate row of each group
    unit_sizes: np.ndarray  # icons each group shows (its members minus excluded ones)
    unit_relevant: np.ndarray
    icon_sizes: np.ndarray  # 1, or 0 for an excluded icon
    icon_relevant: np.ndarray


def _prepare(
    query: FittingQuery, channels: Sequence[str], group_of: Mapping[str, str], group_sizes: Mapping[str, int]
) -> _Prepared | None:
    candidates = {h.icon_id for hits in query.hits.values() for h in hits} | set(query.name_matches)
    if not candidates:
        return None
    ordered = sorted(candidates, key=lambda i: (group_of.get(i, i), i))
    row = {icon_id: n for n, icon_id in enumerate(ordered)}
    normalised = np.zeros((len(ordered), len(channels)))
    for column, channel in enumerate(channels):
        for icon_id, value in minmax(query.hits.get(channel, ())).items():
            normalised[row[icon_id], column] = value
    groups = [group_of.get(i, i) for i in ordered]
    starts = [n for n, g in enumerate(groups) if n == 0 or g != groups[n - 1]]
    unit_ids = [groups[n] for n in starts]
    excluded: dict[str, int] = {}
    for icon_id in query.exclude:
        group = group_of.get(icon_id, icon_id)
        excluded[group] = excluded.get(group, 0) + 1
    unit_sizes = np.array([group_sizes.get(g, 1) - excluded.get(g, 0) for g in unit_ids], dtype=np.float64)
    return _Prepared(
        normalised=normalised,
        matched=np.array([1.0 if i in query.name_matches else 0.0 for i in ordered]),
        unit_starts=np.array(starts),
        unit_sizes=unit_sizes,
        unit_relevant=np.array([g in query.relevant_groups for g in unit_ids]) & (unit_sizes > 0),
        icon_sizes=np.array([0.0 if i in query.exclude else 1.0 for i in ordered]),
        icon_relevant=np.array(
            [
                g in query.relevant_groups and i not in query.exclude
                for g, i in zip(groups, ordered, strict=True)
            ]
        ),
    )


def _hit_rates(
    prepared: _Prepared | None, grid: np.ndarray, boost: float, fold: bool, cutoffs: Sequence[int]
) -> np.ndarray:
    """P(a relevant icon in the top k) for every k in `cutoffs` and every weighting in `grid`:
    shape (len(cutoffs), weightings).

    Ties are counted fairly, as the chance over a random order of the tied results: search breaks
    them by icon id, which knows nothing of relevance. Counting them in the relevant icon's favour
    (as a plain rank would) made a channel that scores many icons alike (every icon sharing a tag)
    look perfect, and a channel that separates them look useless."""
    rates = np.zeros((len(cutoffs), grid.shape[1]))
    if prepared is None:
        return rates
    scores = prepared.normalised @ grid + boost * prepared.matched[:, None]
    if fold:
        scores = np.maximum.reduceat(scores, prepared.unit_starts, axis=0)
        sizes, relevant = prepared.unit_sizes, prepared.unit_relevant
    else:
        sizes, relevant = prepared.icon_sizes, prepared.icon_relevant
    if not relevant.any():
        return rates
    shown = sizes > 0
    best_relevant = scores[relevant].max(axis=0)
    tied = np.isclose(scores, best_relevant[None, :], rtol=0.0, atol=TIE_TOLERANCE) & shown[:, None]
    ahead = ((scores > best_relevant[None, :]) & ~tied) * sizes[:, None]
    above = ahead.sum(axis=0)  # icons certainly ranked before the best relevant one
    tied_relevant = (tied & relevant[:, None]).sum(axis=0)
    tied_other = (tied & ~relevant[:, None]).sum(axis=0)
    other_size = np.where(
        tied_other > 0, sizes @ (tied & ~relevant[:, None]) / np.maximum(tied_other, 1), 1.0
    )
    for row, k in enumerate(cutoffs):
        # The first m tied results must all be other icons for the relevant ones to miss the top k.
        room = np.ceil(np.maximum(k - above, 0) / other_size)
        miss = np.ones(grid.shape[1])
        for i in range(int(room.max(initial=0))):
            step = np.clip(tied_other - i, 0, None) / np.maximum(tied_other + tied_relevant - i, 1)
            miss = np.where(i < room, miss * step, miss)
        rates[row] = np.where(above < k, 1.0 - miss, 0.0)
    return rates


def fit_fusion(
    queries: Sequence[FittingQuery],
    channels: Mapping[str, Sequence[str]],
    group_of: Mapping[str, str],
    *,
    step: float = WEIGHT_STEP,
    boosts: Sequence[float] = NAME_BOOSTS,
) -> FusionSettings:
    """The weights (per kind), then the name boost and folding, that maximise mean R@1 + R@10.

    `channels`: fusion kind -> the channels that answered that kind. Weights are chosen per kind
    with and without variant folding, the better whole decides folding, then the name boost is
    chosen for those weights on all queries.
    """
    group_sizes: dict[str, int] = {}
    for group in group_of.values():
        group_sizes[group] = group_sizes.get(group, 0) + 1
    # Queries made to have no answer only teach the confidence model (confidence.no_answer_queries).
    by_kind = {kind: [q for q in queries if q.kind == kind and q.relevant_groups] for kind in KINDS}
    prepared = {
        kind: [_prepare(q, list(channels.get(kind, ())), group_of, group_sizes) for q in by_kind[kind]]
        for kind in KINDS
    }
    weights_of = {kind: [q.weight for q in by_kind[kind]] for kind in KINDS}
    protected_of = {kind: [q.protected for q in by_kind[kind]] for kind in KINDS}

    def protected_r1(kind: str, grid: np.ndarray, boost: float, fold: bool) -> np.ndarray | None:
        """R@1 of each weighting on the kind's protected queries (None: it has none)."""
        if not any(protected_of[kind]):
            return None
        hits = np.zeros(grid.shape[1])
        for query, protected in zip(prepared[kind], protected_of[kind], strict=True):
            if protected:
                hits += _hit_rates(query, grid, boost, fold, (1,))[0]
        return hits / sum(protected_of[kind])

    def objective(kind: str, grid: np.ndarray, boost: float, fold: bool) -> tuple[np.ndarray, np.ndarray]:
        rates = np.zeros((2, grid.shape[1]))
        for query, weight in zip(prepared[kind], weights_of[kind], strict=True):
            rates += weight * _hit_rates(query, grid, boost, fold, (1, 10))
        n = max(1e-12, sum(weights_of[kind]))
        return rates[0] / n, rates[1] / n

    single = {
        kind: {
            channel: _single_channel_score(by_kind[kind], channel, group_of, group_sizes)
            for channel in channels.get(kind, ())
        }
        for kind in KINDS
    }

    def useful(kind: str) -> list[str]:
        """The kind's channels that find something alone (all of them if none does)."""
        names = list(channels.get(kind, ()))
        kept = [c for c in names if sum(single[kind][c].values()) >= MIN_CHANNEL_OBJECTIVE]
        return kept or names

    def kind_grid(kind: str) -> np.ndarray:
        names, kept = list(channels.get(kind, ())), useful(kind)
        grid = weight_grid(kept, step)
        # Rows for every channel (zero for those left out), so `objective` sees them all.
        return np.array([grid[kept.index(c)] if c in kept else np.zeros(grid.shape[1]) for c in names])

    # The best R@1 the protected queries reach, folded or not: the level the fit keeps within
    # PROTECTED_R1_TOLERANCE whatever else it gains.
    protected_best: dict[str, float] = {}
    for kind in KINDS:
        if by_kind[kind] and channels.get(kind):
            levels = [protected_r1(kind, kind_grid(kind), 0.0, fold) for fold in (False, True)]
            if levels[0] is not None:
                protected_best[kind] = float(max(level.max() for level in levels))

    def feasible(kind: str, grid: np.ndarray, boost: float, fold: bool) -> np.ndarray:
        level = protected_r1(kind, grid, boost, fold)
        if level is None:
            return np.ones(grid.shape[1], dtype=bool)
        return level >= protected_best[kind] - PROTECTED_R1_TOLERANCE - 1e-9

    def fit_weights(fold: bool) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray], float, bool]:
        """Per kind, the weighting with the best objective under `fold` that keeps the protected
        queries' R@1; their total; whether every kind had such a weighting."""
        weights: dict[str, dict[str, float]] = {}
        chosen: dict[str, np.ndarray] = {}
        total = 0.0
        kept_all = True
        for kind in KINDS:
            names = list(channels.get(kind, ()))
            if not by_kind[kind] or not names:
                continue
            grid = kind_grid(kind)
            r1, r10 = objective(kind, grid, 0.0, fold)
            # Parsimony: a channel is only added when it gains more than two queries' worth (a
            # random model otherwise picks up weight by chance on a few hundred queries); then the
            # best objective, then the grid's (deterministic) order. Weightings that lose the
            # protected queries' R@1 are not candidates.
            score = np.where(feasible(kind, grid, 0.0, fold), r1 + r10, -np.inf)
            if not np.isfinite(score).any():
                score, kept_all = r1 + r10, False  # none keeps it folded this way
            tolerance = max(PARSIMONY, 2 / len(by_kind[kind]))
            nonzero = (grid > 0).sum(axis=0)
            near_best = score >= score.max() - tolerance
            fewest = nonzero[near_best].min()
            candidates = np.flatnonzero(near_best & (nonzero == fewest))
            best = int(candidates[np.lexsort((candidates, -np.round(score[candidates], 9)))[0]])
            chosen[kind] = grid[:, [best]]
            weights[kind] = {c: round(float(w), 6) for c, w in zip(names, grid[:, best], strict=True)}
            total += float(score[best]) * sum(weights_of[kind])
        return weights, chosen, total, kept_all

    # Folding changes which weighting is best (an image query that finds its own icon first brings
    # the concept's other variants with it), so the weights are fitted under both and the better
    # whole is kept; unfolded wins a tie.
    fits = {fold: fit_weights(fold) for fold in (False, True)}
    fold = (fits[True][3], fits[True][2]) > (fits[False][3], fits[False][2] + 1e-9)
    weights, chosen, _, _ = fits[fold]

    # A kind with channels but no fitting query (a small library's eval set may have no sentences)
    # borrows the other text kind's weights, or weighs its channels equally.
    borrowed = {}
    for kind in KINDS:
        names = list(channels.get(kind, ()))
        if kind in weights or not names:
            continue
        other = {"words": "sentence", "sentence": "words"}.get(kind)
        if other in weights and set(weights[other]) == set(names):
            weights[kind], borrowed[kind] = dict(weights[other]), other
        else:
            weights[kind], borrowed[kind] = {c: round(1.0 / len(names), 6) for c in names}, "equal"

    options = []
    for boost in boosts:
        per_kind = {}
        for kind, grid in chosen.items():
            r1, r10 = objective(kind, grid, boost, fold)
            per_kind[kind] = {"r1": float(r1[0]), "r10": float(r10[0]), "queries": len(prepared[kind])}
        total = sum((v["r1"] + v["r10"]) * sum(weights_of[k]) for k, v in per_kind.items())
        keeps = all(feasible(kind, grid, boost, fold)[0] for kind, grid in chosen.items())
        options.append((keeps, round(total, 9), -boost, boost, per_kind))
    _, _, _, boost, per_kind = max(options, key=lambda o: o[:3]) if options else (0, 0, 0, 0.0, {})
    unfolded = {
        kind: {
            "r1": float(r1[0]),
            "r10": float(r10[0]),
            "queries": len(prepared[kind]),
        }
        for kind, grid in fits[False][1].items()
        for r1, r10 in [objective(kind, grid, 0.0, False)]
    }
    members: dict[str, list[str]] = {}
    for icon_id, group in group_of.items():
        members.setdefault(group, []).append(icon_id)
    confidence = fit_confidence(
        [
            ConfidenceExample(
                q.kind,
                q.hits,
                frozenset(i for g in q.relevant_groups for i in members.get(g, ()) if i not in q.exclude),
                q.exclude,
                q.match_levels,
                q.weight,
                q.protected,
                q.traits,
            )
            for q in queries
        ],
        weights,
    )
    return FusionSettings(
        weights=weights,
        name_boost=boost,
        fold_variants=fold,
        confidence={kind: model.to_dict() for kind, model in confidence.items()},
        fitted={
            "objective": "mean R@1 + R@10",
            "per_kind": per_kind,
            "per_kind_weights_only": unfolded,
            "kinds_without_queries": borrowed,
            "single_channels": single,
            "left_out_as_chance": {  # channels that alone find almost nothing (MIN_CHANNEL_OBJECTIVE)
                kind: sorted(set(channels.get(kind, ())) - set(useful(kind)))
                for kind in KINDS
                if by_kind[kind]
            },
            "grid_step": step,
        },
    )


def _single_channel_score(
    queries: Sequence[FittingQuery], channel: str, group_of: Mapping[str, str], group_sizes: Mapping[str, int]
) -> dict[str, float]:
    """R@1 and R@10 of one channel alone (no boost, no folding): what it brings by itself."""
    if not queries:
        return {}
    grid = np.ones((1, 1))
    rates = sum(
        q.weight * _hit_rates(_prepare(q, [channel], group_of, group_sizes), grid, 0.0, False, (1, 10))
        for q in queries
    )
    total = sum(q.weight for q in queries)
    return {"r1": float(rates[0, 0]) / total, "r10": float(rates[1, 0]) / total}
