"""Assign icons to `icon_batches` partitions.

A batch key, once given to an icon, is never changed: a materialized partition keeps meaning the
same icons, and new icons only ever open new batches (so nothing already rendered or captioned
is invalidated by growth of the library).
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Mapping

from icon_pipeline.library.records import IconRecord

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def batch_group(icon: IconRecord) -> str:
    """Batches are per source and style, or per collection (a Figma page) where a source has one:
    `tabler-outline`, `figma-page-1`."""
    name = icon.collection or icon.style or "all"
    return f"{icon.source}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')[:40] or 'x'}"


def _key_safe(text: str) -> str:
    # Partition keys show up in URLs, paths and the UI: keep them plain (a custom group_key too).
    return _UNSAFE_KEY_CHARS.sub("-", text).strip("-") or "batch"


def assign_batches(
    icons: list[IconRecord],
    existing: Mapping[str, str],
    icons_per_batch: int,
    group_key: Callable[[IconRecord], str] | None = None,
) -> tuple[list[IconRecord], list[str]]:
    """Set `batch_key` on every icon; returns (icons in input order, new batch keys in order).

    Icons in `existing` (icon_id -> batch key) keep that key. New icons are grouped by
    `group_key` (default `batch_group`), sorted by icon_id, and
    packed into new keys `<group>-NNNN`, numbered after the highest existing number of that
    group, at most `icons_per_batch` per key. An icon's own `batch_key` is ignored: `existing`
    is the truth.
    """
    if icons_per_batch < 1:
        raise ValueError(f"icons_per_batch must be >= 1, got {icons_per_batch}")
    seen: set[str] = set()
    for icon in icons:
        if icon.icon_id in seen:
            raise ValueError(f"duplicate icon_id {icon.icon_id!r}: each icon must appear once")
        seen.add(icon.icon_id)

    group_of = group_key or batch_group
    pending: dict[str, list[IconRecord]] = defaultdict(list)
    for icon in icons:
        if icon.icon_id not in existing:
            pending[_key_safe(group_of(icon))].append(icon)

    assigned: dict[str, str] = {}
    new_keys: list[str] = []
    for prefix in sorted(pending):
        number_pattern = re.compile(rf"^{re.escape(prefix)}-(\d{{4,}})$")
        numbers = [int(m.group(1)) for key in set(existing.values()) if (m := number_pattern.match(key))]
        next_number = max(numbers, default=0) + 1
        members = sorted(pending[prefix], key=lambda icon: icon.icon_id)
        for start in range(0, len(members), icons_per_batch):
            key = f"{prefix}-{next_number:04d}"
            next_number += 1
            new_keys.append(key)
            for icon in members[start : start + icons_per_batch]:
                assigned[icon.icon_id] = key

    result = [
        dataclasses.replace(
            icon, batch_key=existing[icon.icon_id] if icon.icon_id in existing else assigned[icon.icon_id]
        )
        for icon in icons
    ]
    return result, new_keys
