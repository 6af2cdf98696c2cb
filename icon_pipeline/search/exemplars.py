"""Exemplars: other open sets' drawings of the library's concepts, as rows of the `exemplars` channel.

A screenshot drawn in another style often looks more like another set's drawing of the concept than
like the library's own. corpus_pairs lists, for every drawing of a corpus set that names a library
concept, the concept's groups (dataset/corpus.py: never a fitting query, never an external benchmark
set). Each becomes one row of a text-row table (index.write_embeddings with `texts`: the drawing's
data-root-relative path) carrying the icons of its concepts, so an icon scores by a soft maximum
over its concept's drawings near the query, as the captions channel's icons do over their texts.

Measured (docs/search_quality.md): on the external benchmark's drawings hybrid search went from
0.428 / 0.613 to 0.456 / 0.631 (R@1 / R@10) with this channel beside the fine-tuned model's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ExemplarRows:
    """One row per (drawing, icon of its concepts): what write_embeddings takes."""

    icon_ids: list[str]
    group_ids: list[str]
    keys: list[str]  # the drawing (data-root-relative path): one table row per distinct drawing
    vectors: np.ndarray


def library_drawings(
    exemplars: Sequence[Mapping[str, Any]], members: Mapping[str, Sequence[str]]
) -> list[Mapping[str, Any]]:
    """The exemplar rows (png_path, group_ids, set) that name at least one group of this library."""
    return [row for row in exemplars if any(members.get(g) for g in row["group_ids"])]


def exemplar_rows(
    drawings: Sequence[Mapping[str, Any]],
    embeddings: np.ndarray,
    members: Mapping[str, Sequence[str]],
    keys: Sequence[str],
) -> ExemplarRows:
    """Each drawing's embedding repeated for every icon of the concepts it draws."""
    icon_ids, group_ids, row_keys, vectors = [], [], [], []
    for row, key, vector in zip(drawings, keys, embeddings, strict=True):
        for group_id in row["group_ids"]:
            for icon_id in members.get(group_id, ()):
                icon_ids.append(icon_id)
                group_ids.append(group_id)
                row_keys.append(key)
                vectors.append(vector)
    return ExemplarRows(icon_ids, group_ids, row_keys, np.stack(vectors))
