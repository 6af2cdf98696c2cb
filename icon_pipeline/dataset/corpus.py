"""The training corpus: concepts drawn by other open icon sets, joined to the library's own groups.

Each corpus drawing comes with the names, aliases and tags people gave it. Drawings of one concept
(the same name key) in different sets form one training group, so a set's `bell` and another's
`bell` are positives for each other; a concept that also names a library icon (library/matching.py)
joins that icon's group, so the library's own drawings learn from other styles too.

Two things are held out of training:

- concepts of the library's held-out groups (the benchmark's "unseen icons" stay unseen);
- `fit_share` of the library groups a corpus set also draws ("fit" groups): their corpus drawings
  and names become **fitting queries** for hybrid search instead. They are the closest thing the
  project has to the external benchmark's queries (names and drawings by other people), and the
  external benchmark's own sets are never used for anything but measuring.

Every drawing of a library concept that is not a fitting query is also an **exemplar**: the
`exemplars` search channel finds a library icon through other sets' drawings of its concept. A fit
group's drawings are split by set for it: one set's drawings (chosen by a seeded hash) are the
fitting queries and the other sets' are exemplars, so the fit sees what a query from an unseen set
meets at search time, exemplars in every style but its own.

Rows are plain dicts so that the training job (which reads the Parquet file) and the Dagster layer
share them without a schema class.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from icon_pipeline.core.hashing import stable_key
from icon_pipeline.library.matching import NameIndex
from icon_pipeline.library.naming import name_key

CORPUS_GROUP_PREFIX = "corpus:"
PAIR_COLUMNS = ("group_id", "captions", "png_paths", "split", "sets", "linked")
FITTING_COLUMNS = ("kind", "text", "image_path", "relevant_groups", "set")
EXEMPLAR_COLUMNS = ("png_path", "group_ids", "set")


def drawing_texts(row: Mapping[str, Any]) -> list[str]:
    """What people called a corpus drawing: its name, aliases and tags, as lowercase words."""
    texts = [row["name"], *(row.get("aliases") or ()), *(row.get("tags") or ())]
    return [key for key in dict.fromkeys(name_key(str(text)) for text in texts) if key]


@dataclass
class CorpusBuild:
    pairs: list[dict[str, Any]] = field(default_factory=list)
    fitting: list[dict[str, Any]] = field(default_factory=list)
    exemplars: list[dict[str, Any]] = field(default_factory=list)  # library concepts' other drawings
    per_set: dict[str, dict[str, int]] = field(default_factory=dict)
    heldout_drawings: int = 0  # drawings of the library's held-out groups, left out entirely


def _draw(seed: int, *key: str) -> float:
    digest = hashlib.sha256(stable_key(seed, *key).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _in_fit_share(group_id: str, share: float, seed: int) -> bool:
    return _draw(seed, "corpus-fit", group_id) < share


def _query_set(group_id: str, sets: Iterable[str], seed: int) -> str:
    """The one set whose drawings of a fit group are its fitting queries (the others: exemplars)."""
    return min(sets, key=lambda name: _draw(seed, "corpus-fit-set", group_id, name))


def build_corpus(
    drawings: Iterable[Mapping[str, Any]],
    library_names: Mapping[str, str],
    group_of: Mapping[str, str],
    split_of: Mapping[str, str],
    *,
    fit_share: float,
    seed: int = 0,
) -> CorpusBuild:
    """Training groups and fitting queries from corpus drawing rows (set, name, aliases, tags,
    png_path). `library_names`: icon_id -> name; `group_of`: icon_id -> group; `split_of`: group ->
    train | heldout."""
    index = NameIndex.build({i: n for i, n in library_names.items() if i in group_of})
    build = CorpusBuild()
    groups: dict[str, dict[str, Any]] = {}
    fit_texts: dict[tuple[str, str], set[str]] = defaultdict(set)
    fit_drawings: dict[str, list[tuple[Mapping[str, Any], list[str]]]] = defaultdict(list)
    for row in drawings:
        if not row.get("png_path"):
            continue
        stats = build.per_set.setdefault(
            row["set"], {"drawings": 0, "linked_drawings": 0, "fitting_drawings": 0, "heldout_drawings": 0}
        )
        stats["drawings"] += 1
        linked = sorted({group_of[i] for i in index.match(row["name"], row.get("aliases") or ())})
        texts = drawing_texts(row)
        if linked:
            stats["linked_drawings"] += 1
            # A concept naming several library groups (rare: one name in two styles grouped apart)
            # trains with the first; all of them count as relevant when it is a fitting query.
            group_id = linked[0]
            if any(split_of.get(g) == "heldout" for g in linked):
                stats["heldout_drawings"] += 1
                build.heldout_drawings += 1
                continue
            if _in_fit_share(group_id, fit_share, seed):
                fit_drawings[group_id].append((row, linked))
                for text in texts:
                    fit_texts[(row["set"], text)].update(linked)
                continue
            build.exemplars.append({"png_path": row["png_path"], "group_ids": linked, "set": row["set"]})
        else:
            group_id = CORPUS_GROUP_PREFIX + name_key(row["name"])
        group = groups.setdefault(
            group_id,
            {"group_id": group_id, "captions": {}, "png_paths": {}, "sets": {}, "linked": bool(linked)},
        )
        group["captions"].update(dict.fromkeys(texts))
        group["png_paths"][row["png_path"]] = None
        group["sets"][row["set"]] = None
    for group_id, rows in sorted(fit_drawings.items()):
        query_set = _query_set(group_id, {row["set"] for row, _ in rows}, seed)
        for row, linked in rows:
            if row["set"] != query_set:
                build.exemplars.append({"png_path": row["png_path"], "group_ids": linked, "set": row["set"]})
                continue
            build.per_set[row["set"]]["fitting_drawings"] += 1
            build.fitting.append(
                {
                    "kind": "image",
                    "text": None,
                    "image_path": row["png_path"],
                    "relevant_groups": linked,
                    "set": row["set"],
                }
            )
    queries = {f["image_path"] for f in build.fitting}
    build.exemplars = [e for e in _one_row_per_drawing(build.exemplars) if e["png_path"] not in queries]
    build.pairs = [
        {
            "group_id": g["group_id"],
            "captions": list(g["captions"]),
            "png_paths": list(g["png_paths"]),
            "split": "train",
            "sets": list(g["sets"]),
            "linked": g["linked"],
        }
        for g in sorted(groups.values(), key=lambda g: g["group_id"])
        if g["captions"]
    ]
    build.fitting += [
        {
            "kind": "text",
            "text": text,
            "image_path": None,
            "relevant_groups": sorted(relevant),
            "set": set_name,
        }
        for (set_name, text), relevant in sorted(fit_texts.items())
    ]
    return build


def _one_row_per_drawing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exemplar rows merged by rendered file: one drawing under two names (an alias that is its own
    file, a style that draws the same) is one exemplar of every concept it names. (A file that is
    also a fitting query is dropped by the caller: a query never finds itself.)"""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = merged.setdefault(row["png_path"], {**row, "group_ids": []})
        entry["group_ids"] = sorted({*entry["group_ids"], *row["group_ids"]})
    return list(merged.values())


def corpus_summary(build: CorpusBuild) -> dict[str, Any]:
    """Counts an analyst reads: groups, how many join a library group, across how many sets."""
    multi_set = sum(1 for p in build.pairs if len(p["sets"]) > 1)
    return {
        "groups": len(build.pairs),
        "groups_joining_library_groups": sum(1 for p in build.pairs if p["linked"]),
        "groups_drawn_by_several_sets": multi_set,
        "drawings": sum(len(p["png_paths"]) for p in build.pairs),
        "fitting_text_queries": sum(1 for f in build.fitting if f["kind"] == "text"),
        "fitting_image_queries": sum(1 for f in build.fitting if f["kind"] == "image"),
        "exemplar_drawings": len(build.exemplars),
        "heldout_drawings_left_out": build.heldout_drawings,
    }
