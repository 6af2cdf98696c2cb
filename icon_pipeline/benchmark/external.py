"""The external benchmark: queries nobody on the project wrote.

Other open icon sets (Phosphor, Font Awesome; library/sources/icon_sets.py) drew many of the
library's concepts and people tagged them. Their icons are matched to the library's by normalised
name and alias (library/matching.py); each match gives queries whose answer is the matched icon's
group:

- `tags-all`: every tag and search term of the matched icon (Font Awesome's label too), as a text query;
- `tags-novel`: those that share no word with the target icon's own name, tags or captions (the
  words a designer brings that the library never used);
- `drawings`: every style or weight of the matched icon, rendered with the library's render
  settings: a screenshot of the concept drawn by someone else.

A text written for several matched icons of one set is one query relevant to all their groups. Each
slice is a seeded sample of at most `max_queries` per set. The sets are never trained on, fitted on
or used as vocabulary (dataset/leaks.py guards the training tables).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from icon_pipeline.core.hashing import stable_key
from icon_pipeline.library.matching import NameIndex
from icon_pipeline.library.naming import word_set

EXTERNAL_TASKS: dict[str, str] = {"tags-all": "text", "tags-novel": "text", "drawings": "image"}


@dataclass
class ExternalQueries:
    set_name: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # run_benchmark rows
    matched_icons: int = 0  # the set's icons (by name) that name a library icon
    set_icons: int = 0
    available: dict[str, int] = field(default_factory=dict)  # task -> queries before sampling
    skipped: str | None = None  # why the set gives no queries

    def summary(self) -> dict[str, Any]:
        counts = defaultdict(int)
        for row in self.rows:
            counts[row["task"]] += 1
        return {
            "set": self.set_name,
            "set_icons": self.set_icons,
            "matched_icons": self.matched_icons,
            **{f"{task}_queries": counts.get(task, 0) for task in EXTERNAL_TASKS},
            **{f"{task}_available": self.available.get(task, 0) for task in EXTERNAL_TASKS},
            "skipped": self.skipped or "",
        }


def matched_only(
    drawings: Iterable[Any], library_names: Mapping[str, str], group_of: Mapping[str, str]
) -> list[Any]:
    """The drawings (SetDrawing or rows with `name` and `aliases`) whose icon names a library icon:
    the only ones worth rendering."""
    index = NameIndex.build({i: n for i, n in library_names.items() if i in group_of})

    def field(drawing: Any, name: str) -> Any:
        return drawing[name] if isinstance(drawing, Mapping) else getattr(drawing, name)

    return [d for d in drawings if index.match(field(d, "name"), field(d, "aliases") or ())]


def _sample(rows: list[dict[str, Any]], limit: int, seed: int, label: str) -> list[dict[str, Any]]:
    if len(rows) <= limit:
        return rows
    chosen = random.Random(stable_key(seed, "external", label)).sample(range(len(rows)), limit)
    return [rows[i] for i in sorted(chosen)]


def build_external_queries(
    set_name: str,
    drawings: Iterable[Mapping[str, Any]],
    library_names: Mapping[str, str],
    group_of: Mapping[str, str],
    group_texts: Mapping[str, Sequence[str]],
    heldout_groups: set[str] | frozenset[str] = frozenset(),
    *,
    min_matches: int,
    max_queries: int,
    seed: int = 0,
) -> ExternalQueries:
    """Queries from one set's drawing rows (name, style, aliases, tags, png_path).

    `library_names`: icon_id -> name of every indexed icon; `group_of`: icon_id -> group;
    `group_texts`: group -> its icons' own names, tags and captions (what "novel" is judged against);
    `heldout_groups`: groups the model never trained on (their queries form the held-out subset)."""
    index = NameIndex.build({i: n for i, n in library_names.items() if i in group_of})
    result = ExternalQueries(set_name)
    drawings = list(drawings)
    concepts: dict[str, frozenset[str]] = {}
    for row in drawings:
        if row["name"] not in concepts:
            concepts[row["name"]] = frozenset(
                group_of[i] for i in index.match(row["name"], row.get("aliases") or ())
            )
    result.set_icons = len(concepts)
    result.matched_icons = sum(1 for groups in concepts.values() if groups)
    if result.matched_icons < min_matches:
        result.skipped = (
            f"only {result.matched_icons} of its {result.set_icons} icons name a library icon "
            f"(external.min_matches is {min_matches}): too few to measure"
        )
        return result

    own_words = {group: word_set(list(texts)) for group, texts in group_texts.items()}
    texts: dict[str, set[str]] = defaultdict(set)
    novel_for: dict[str, set[str]] = defaultdict(set)
    seen_concepts: set[str] = set()
    image_rows = []
    for row in drawings:
        groups = concepts[row["name"]]
        if not groups:
            continue
        if row.get("png_path"):
            image_rows.append(
                {
                    "task": "drawings",
                    "image_path": row["png_path"],
                    "relevant_group_ids": sorted(groups),
                    "source": f"{set_name}:{row['style']}:{row['name']}",
                }
            )
        if row["name"] in seen_concepts:
            continue  # the same icon in another style: its tags once
        seen_concepts.add(row["name"])
        for tag in row.get("tags") or ():
            text = " ".join(str(tag).lower().split())
            if not text or not word_set([text]):
                continue
            texts[text] |= groups
            if all(not (word_set([text]) & own_words.get(group, frozenset())) for group in groups):
                novel_for[text] |= groups
    text_rows = [
        {"task": "tags-all", "text": text, "relevant_group_ids": sorted(groups), "source": set_name}
        for text, groups in sorted(texts.items())
    ]
    # Novel: the text shares no word with any group it is relevant to (all of them, when merged).
    novel_rows = [
        {"task": "tags-novel", "text": text, "relevant_group_ids": sorted(texts[text]), "source": set_name}
        for text, groups in sorted(novel_for.items())
        if groups == texts[text]
    ]
    slices = {"tags-all": text_rows, "tags-novel": novel_rows, "drawings": image_rows}
    result.available = {task: len(rows) for task, rows in slices.items()}
    for task, rows in slices.items():
        for n, row in enumerate(_sample(rows, max_queries, seed, f"{set_name}:{task}")):
            groups = set(row["relevant_group_ids"])
            result.rows.append(
                {
                    **row,
                    "query_id": f"{set_name}:{task}:{n:05d}",
                    "heldout": bool(groups) and groups <= set(heldout_groups),
                    "exclude_source": False,
                }
            )
    return result
