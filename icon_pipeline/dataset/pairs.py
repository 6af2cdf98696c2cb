"""The training pairs' policy: which icons are paired with which captions, grouped so that variants
of one icon are never each other's in-batch negatives.

- An icon a reviewer rejected (captions app) is left out of training altogether.
- An icon with no render has nothing to pair; none at all is an error naming what to materialize.
- A group with no captions is left out (and counted, so the asset can say how many).
- Groups are split into training and held-out whole (the unseen-icon benchmark).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from icon_pipeline.dataset.grouping import Grouping, group_icons, split_groups
from icon_pipeline.library.records import IconRecord


class NoRendersError(ValueError):
    """No icon of the catalog has a render to pair with captions."""


@dataclass(frozen=True)
class TrainingPairs:
    frame: pd.DataFrame  # one row per group with captions: members, captions, png_paths, split
    rows: list[dict]  # the icons paired (rendered, not rejected)
    png_of: dict[str, str]  # icon_id -> rendered PNG, every rendered icon (the icon images table)
    captions: dict[str, list[str]]  # icon_id -> its phrases (rejected icons left out)
    rejected: set[str]
    grouping: Grouping
    without_captions: int  # groups left out for having no captions


def rejected_icons(captions_frame: pd.DataFrame) -> set[str]:
    """Icons a reviewer rejected (captions app): left out of training altogether."""
    if "rejected" not in captions_frame:
        return set()
    return set(captions_frame.loc[captions_frame["rejected"].astype(bool), "icon_id"])


def build_training_pairs(
    icons: Sequence[IconRecord],
    captions_frame: pd.DataFrame,
    renders: pd.DataFrame,
    *,
    base_name: Callable[[str], str],
    phash_distance: int,
    max_pixel_diff: float,
    heldout_share: float,
    seed: int,
) -> TrainingPairs:
    """The grouped pairs of the catalog's rendered, captioned, not rejected icons."""
    png_of = {
        row.icon_id: row.png_path for row in renders.itertuples() if row.status != "failed" and row.png_path
    }
    rejected = rejected_icons(captions_frame)
    captions = {
        row.icon_id: list(row.phrases)
        for row in captions_frame.itertuples()
        if not row.error and row.icon_id not in rejected
    }
    rows = [
        {
            "icon_id": i.icon_id,
            "name": i.name,
            "source": i.source,
            "style": i.style,
            "png_path": png_of[i.icon_id],
        }
        for i in icons
        if i.icon_id in png_of and i.icon_id not in rejected
    ]
    if not rows:
        raise NoRendersError(
            f"none of the catalog's {len(icons)} icons has a render to pair with captions: "
            "materialize rendered_icons for every batch (see its failures)"
        )
    grouping = group_icons(
        rows, captions, base_name=base_name, phash_distance=phash_distance, max_pixel_diff=max_pixel_diff
    )
    split = split_groups(grouping, heldout_share=heldout_share, seed=seed)
    table_rows = []
    for group in grouping.groups:
        row = group.to_row()
        row["png_paths"] = [png_of[m] for m in group.members]
        row["split"] = split[group.group_id]
        table_rows.append(row)
    frame = pd.DataFrame(table_rows)
    without_captions = int((frame["captions"].map(len) == 0).sum())
    frame = frame[frame["captions"].map(len) > 0]  # may be empty: the caller says so after the count
    return TrainingPairs(frame, rows, png_of, captions, rejected, grouping, without_captions)
