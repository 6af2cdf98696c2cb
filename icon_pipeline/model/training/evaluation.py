"""Retrieval metrics on the frozen eval set, computed during training.

R@K (hit rate): 1 if any relevant item is in the top K, averaged over queries. AP@K: mean of
precision@k at each relevant rank within the top K, divided by min(|relevant|, K), as in
icon_pipeline/core/metrics.py;
scores [0.2, 0.3, 0.5] with relevance [1, 0, 1] give 0.8333.

text2image: each eval caption against the gallery of eval images; relevant = the row's icon_ids.
image2text: each eval group's representative image against all eval captions; relevant = the
captions of that group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from icon_pipeline.core.metrics import average_precision_at_k, recall_at_k

RECALL_KS = (1, 5, 10)
MAP_K = 10


@dataclass(frozen=True)
class RetrievalQuery:
    """Relevant gallery indices for one query."""

    relevant: frozenset[int]


def retrieval_metrics(
    scores: np.ndarray, relevant: Sequence[frozenset[int]], ks: Sequence[int] = RECALL_KS, map_k: int = MAP_K
) -> dict[str, float]:
    """R@K for each K and mAP@map_k over the rows of `scores`; queries with nothing relevant are skipped."""
    if scores.ndim != 2 or scores.shape[0] != len(relevant):
        raise ValueError(
            f"scores must be (queries, gallery) with one relevant set per query, got {scores.shape}"
        )
    depth = min(max(max(ks), map_k), scores.shape[1])
    # argpartition + sort of the top slice: O(gallery) per query instead of a full sort.
    if depth < scores.shape[1]:
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    else:
        top = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    order = np.take_along_axis(
        top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable"), 1
    )
    hits: dict[int, list[float]] = {k: [] for k in ks}
    average_precisions = []
    for ranked, rel in zip(order, relevant, strict=True):
        if not rel:
            continue
        ids = [int(i) for i in ranked]
        # The metric definitions live in icon_pipeline.core.metrics, shared with the benchmark report.
        for k in ks:
            hits[k].append(recall_at_k(ids, rel, k))
        average_precisions.append(average_precision_at_k(ids, rel, map_k))
    result = {f"R@{k}": float(np.mean(hits[k])) if hits[k] else 0.0 for k in ks}
    result[f"mAP@{map_k}"] = float(np.mean(average_precisions)) if average_precisions else 0.0
    result["queries"] = float(len(average_precisions))
    return result


def eval_relevance(
    rows_icon_ids: Sequence[Sequence[str]],
    rows_group_ids: Sequence[str],
    rows_representatives: Sequence[str],
    gallery_icon_ids: Sequence[str],
) -> tuple[list[frozenset[int]], list[int], list[frozenset[int]]]:
    """Relevance sets for both directions.

    Returns (text2image relevant gallery indices per caption, gallery index of each image query,
    image2text relevant caption indices per image query).
    """
    position = {icon: i for i, icon in enumerate(gallery_icon_ids)}
    text_to_image = [frozenset(position[i] for i in ids if i in position) for ids in rows_icon_ids]
    captions_of: dict[str, set[int]] = {}
    representative_of: dict[str, str] = {}
    for index, (group, representative) in enumerate(zip(rows_group_ids, rows_representatives, strict=True)):
        captions_of.setdefault(group, set()).add(index)
        representative_of.setdefault(group, representative)
    image_queries, image_to_text = [], []
    for group in sorted(captions_of):
        if representative_of[group] in position:
            image_queries.append(position[representative_of[group]])
            image_to_text.append(frozenset(captions_of[group]))
    return text_to_image, image_queries, image_to_text


def evaluate_embeddings(
    text_embeds: np.ndarray,
    image_embeds: np.ndarray,
    rows_icon_ids: Sequence[Sequence[str]],
    rows_group_ids: Sequence[str],
    rows_representatives: Sequence[str],
    gallery_icon_ids: Sequence[str],
) -> dict[str, float]:
    """Both directions' metrics, keyed "text2image/R@1", "image2text/mAP@10", ..."""
    t2i_rel, image_queries, i2t_rel = eval_relevance(
        rows_icon_ids, rows_group_ids, rows_representatives, gallery_icon_ids
    )
    metrics = {}
    for name, value in retrieval_metrics(text_embeds @ image_embeds.T, t2i_rel).items():
        metrics[f"text2image/{name}"] = value
    if image_queries:
        scores = image_embeds[image_queries] @ text_embeds.T
        for name, value in retrieval_metrics(scores, i2t_rel).items():
            metrics[f"image2text/{name}"] = value
    return metrics
