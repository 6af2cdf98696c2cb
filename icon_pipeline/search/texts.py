"""Every icon's own texts: its name, tags and captions (reviewers' edits applied).

What the captions channel embeds, and what the external benchmark's "novel" slice is judged
against (a query that shares no word with these is one the library never used).
"""

from __future__ import annotations

from icon_pipeline.core.storage import read_all_batches
from icon_pipeline.dataset.grouping import library_groups
from icon_pipeline.library.catalog import read_catalog


def icon_texts() -> tuple[list[str], list[str], list[str]]:
    """(icon ids, group ids, texts): every rendered icon's name, tags and captions (reviewers' edits
    applied; captions of an icon a reviewer rejected left out), one row per distinct text."""
    groups = library_groups()
    icons = [icon for icon in read_catalog() if icon.icon_id in groups]
    captions = read_all_batches("captions", sorted({icon.batch_key for icon in icons}))
    phrases: dict[str, list[str]] = {}
    for row in captions.itertuples():
        if not row.error and not bool(getattr(row, "rejected", False)):
            phrases[row.icon_id] = list(row.phrases)
    out_ids, out_groups, out_texts = [], [], []
    for icon in icons:
        texts = [
            icon.name.replace("-", " ").replace("_", " "),
            *map(str, icon.tags),
            *phrases.get(icon.icon_id, ()),
        ]
        for text in dict.fromkeys(" ".join(t.lower().split()) for t in texts):
            if text:
                out_ids.append(icon.icon_id)
                out_groups.append(groups[icon.icon_id])
                out_texts.append(text)
    return out_ids, out_groups, out_texts
