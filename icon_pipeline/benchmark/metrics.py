"""The retrieval metrics, where the benchmark reads them: their one home is core/metrics.py
(the training job's eval on a lower floor uses the same definitions)."""

from icon_pipeline.core.metrics import (
    DEFAULT_KS,
    AggregateScore,
    QueryScore,
    aggregate,
    average_precision_at_k,
    exclude_from_ranking,
    group_members,
    rank_by_score,
    recall_at_k,
    relevant_icons,
    score_query,
)

__all__ = [
    "AggregateScore",
    "DEFAULT_KS",
    "QueryScore",
    "aggregate",
    "average_precision_at_k",
    "exclude_from_ranking",
    "group_members",
    "rank_by_score",
    "recall_at_k",
    "relevant_icons",
    "score_query",
]
