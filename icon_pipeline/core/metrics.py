"""Retrieval metrics: R@K (hit rate), AP@K and mAP, with relevance decided by icon group.

Standard library only, on the bottom floor: the training job's eval and the benchmark both use them.

Definitions (the training job's eval, model/training/evaluation.py, follows the same ones):
- R@K: 1 if any relevant item is in the top K, averaged over queries.
- AP@K: the sum of precision@k at each rank k <= K that holds a relevant item, divided by
  min(|relevant|, K); mAP is its mean over queries. Unit check: scores [0.2, 0.3, 0.5] with
  relevance [1, 0, 1] rank as (0.5 rel, 0.3, 0.2 rel) -> (1/1 + 2/3) / 2 = 0.8333.
- Relevant = every icon of the query's relevant groups. For img2img the query is a degraded copy
  of one icon: that source icon is neither relevant nor allowed in the ranking (`exclude`), so a
  model is never rewarded for finding the very icon the query was made from.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 30)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"K must be >= 1, got {k}")


def rank_by_score(ids: Sequence[Hashable], scores: Sequence[float]) -> list[Hashable]:
    """Ids ordered by score, highest first; ties keep their input order (a stable sort)."""
    if len(ids) != len(scores):
        raise ValueError(f"{len(ids)} ids but {len(scores)} scores")
    order = sorted(range(len(ids)), key=lambda i: -scores[i])
    return [ids[i] for i in order]


def exclude_from_ranking(ranked: Iterable[Hashable], exclude: Collection[Hashable], k: int) -> list[Hashable]:
    """The first `k` ids of a ranking once `exclude` is dropped (img2img: the query's own icon).

    Callers fetch k + len(exclude) results so that the cut still leaves k.
    """
    _check_k(k)
    kept: list[Hashable] = []
    for item in ranked:
        if item in exclude:
            continue
        kept.append(item)
        if len(kept) == k:
            break
    return kept


def recall_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Hit rate: 1.0 if any relevant id is among the first k, else 0.0."""
    _check_k(k)
    return 1.0 if any(item in relevant for item in ranked[:k]) else 0.0


def average_precision_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Sum of precision@i at each relevant rank i <= k, over min(|relevant|, k); 0.0 if none is relevant."""
    _check_k(k)
    if not relevant:
        return 0.0
    hits = 0
    total = 0.0
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k)


def relevant_icons(
    relevant_group_ids: Iterable[str],
    group_members: Mapping[str, Collection[str]],
    exclude: Collection[str] = (),
) -> frozenset[str]:
    """Icons of the relevant groups, minus `exclude` (img2img: the query's source icon)."""
    members: set[str] = set()
    for group_id in relevant_group_ids:
        members.update(group_members.get(group_id, ()))
    return frozenset(members.difference(exclude))


def group_members(icon_to_group: Mapping[str, str]) -> dict[str, frozenset[str]]:
    """Invert icon_id -> group_id."""
    groups: dict[str, set[str]] = {}
    for icon_id, group_id in icon_to_group.items():
        groups.setdefault(group_id, set()).add(icon_id)
    return {group_id: frozenset(icons) for group_id, icons in groups.items()}


@dataclass(frozen=True)
class QueryScore:
    """One query's metrics: recall[k] for each K and AP at `map_k`."""

    query_id: str
    recall: Mapping[int, float]
    average_precision: float
    n_relevant: int


def score_query(
    query_id: str,
    ranked: Sequence[str],
    relevant: Collection[str],
    ks: Sequence[int] = DEFAULT_KS,
    exclude: Collection[str] = (),
    map_k: int | None = None,
) -> QueryScore:
    """R@K for every K in `ks` and AP@map_k (default max(ks)) for one ranking.

    `exclude` ids are dropped from the ranking before scoring and must not count as relevant.
    """
    if not ks:
        raise ValueError("ks must name at least one K")
    map_k = map_k or max(ks)
    cut = exclude_from_ranking(ranked, exclude, max(max(ks), map_k)) if exclude else list(ranked)
    relevant_set = frozenset(relevant).difference(exclude)
    return QueryScore(
        query_id=query_id,
        recall={k: recall_at_k(cut, relevant_set, k) for k in ks},
        average_precision=average_precision_at_k(cut, relevant_set, map_k),
        n_relevant=len(relevant_set),
    )


@dataclass(frozen=True)
class AggregateScore:
    """Means over a set of queries; NaN metrics when there were no queries."""

    n_queries: int
    recall: dict[int, float] = field(default_factory=dict)
    mean_average_precision: float = math.nan

    def as_dict(self, map_k: int) -> dict[str, float | int]:
        row: dict[str, float | int] = {"n_queries": self.n_queries}
        row.update({f"recall@{k}": v for k, v in sorted(self.recall.items())})
        row[f"map@{map_k}"] = self.mean_average_precision
        return row


def aggregate(scores: Sequence[QueryScore], ks: Sequence[int] = DEFAULT_KS) -> AggregateScore:
    """Mean R@K and mAP over queries (a task, a subset of a task)."""
    if not scores:
        return AggregateScore(n_queries=0, recall={k: math.nan for k in ks})
    n = len(scores)
    return AggregateScore(
        n_queries=n,
        recall={k: sum(s.recall[k] for s in scores) / n for k in ks},
        mean_average_precision=sum(s.average_precision for s in scores) / n,
    )
