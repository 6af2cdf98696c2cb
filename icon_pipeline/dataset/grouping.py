"""Group icons into training concepts so variants are never each other's in-batch negatives.

Two icons join the same group when they share a normalised base name within one source
("bell" outline and "bell" filled), or when their renders are near-duplicates (one drawing
published under two names, e.g. Tabler's `search` and `zoom`). Groups are the unit of the
train / held-out split, of the eval set and of the benchmark's relevance judgements.

Image matching runs in two stages. A perceptual hash (imagehash.phash) within `phash_distance`
bits only proposes candidate pairs: on line icons an 8x8 pHash cannot tell `hexagon-plus` from
`hexagon-minus` (distance 0) nor `bell-plus` from `bell-minus` (distance 4), so each candidate
is confirmed on a 64x64 grayscale thumbnail (mean absolute difference <= `max_pixel_diff`).
Measured on the 6,287 Tabler renders: 2,133 candidates at distance <= 4, a 52-icon "file-*"
chain without the check; with it only real duplicates merge (pixel-identical pairs, the
filled/outline twins of `check`, `link`, `download`; `parking` vs `square-letter-p` at 0.0019)
while the closest different concepts (`square-f6` vs `square-f8`) sit at 0.0033.
Near-empty renders (a failed or blank render hashes like every other blank one) never take
part, and an image-only component larger than `max_image_component` is not merged at all.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from icon_pipeline.library.records import stable_id

THUMB_SIZE = 64
SplitName = Literal["train", "heldout"]

# Only used when the caller does not pass the lexicon's normaliser (tests, notebooks).
# Deliberately short: "line", "bold", "fill", "light" are concepts of their own in icon sets.
_STYLE_TOKENS = frozenset({"filled", "solid", "outline", "outlined", "regular", "duotone"})
_SIZE_TOKEN = re.compile(r"^(\d+px|xs|sm|md|lg|x{1,3}l)$")


def simple_base_name(name: str) -> str:
    """A small stand-in for `lexicon.normalised_base_name`: lowercase, drop style and size tokens.

    Digits alone are kept on purpose: `number-1` and `number-2` are different concepts.
    """
    tokens = [t for t in re.split(r"[^0-9a-z]+", name.lower()) if t]
    kept = [t for t in tokens if t not in _STYLE_TOKENS and not _SIZE_TOKEN.match(t)]
    return "-".join(kept)


@dataclass(frozen=True)
class IconImage:
    """What grouping needs to know about one icon."""

    icon_id: str
    name: str
    source: str
    png_path: str
    style: str = ""

    @classmethod
    def from_any(cls, icon: Any) -> IconImage:
        """Accept a mapping (catalog/render row) or any object with the same attributes."""

        def get(key: str, default: Any = None) -> Any:
            if isinstance(icon, Mapping):
                return icon.get(key, default)
            return getattr(icon, key, default)

        missing = [k for k in ("icon_id", "name", "source", "png_path") if get(k) in (None, "")]
        if missing:
            ident = get("icon_id") or repr(icon)[:80]
            raise ValueError(f"icon {ident}: missing field(s) {', '.join(missing)} needed for grouping")
        return cls(
            icon_id=str(get("icon_id")),
            name=str(get("name")),
            source=str(get("source")),
            png_path=str(get("png_path")),
            style=str(get("style") or ""),
        )


@dataclass(frozen=True)
class GroupEdge:
    """Why two icons were joined: `name` (same base name; detail = the base name) or `image`."""

    a: str
    b: str
    reason: Literal["name", "image"]
    detail: str


@dataclass(frozen=True)
class Group:
    group_id: str
    members: tuple[str, ...]  # icon ids, sorted
    names: tuple[str, ...]  # distinct member names, sorted
    captions: tuple[str, ...]  # merged, deduplicated, representative's first
    representative: str
    edges: tuple[GroupEdge, ...] = ()

    @property
    def size(self) -> int:
        return len(self.members)

    def to_row(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "members": list(self.members),
            "names": list(self.names),
            "captions": list(self.captions),
            "representative": self.representative,
            "edges": [{"a": e.a, "b": e.b, "reason": e.reason, "detail": e.detail} for e in self.edges],
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Group:
        return cls(
            group_id=row["group_id"],
            members=tuple(row["members"]),
            names=tuple(row.get("names") or ()),
            captions=tuple(row.get("captions") or ()),
            representative=row["representative"],
            edges=tuple(GroupEdge(**e) for e in row.get("edges") or ()),
        )


@dataclass
class ImageMergeReport:
    """What the near-duplicate stage did; goes into asset metadata."""

    hashed: int = 0
    candidate_pairs: int = 0  # within phash_distance
    confirmed_pairs: int = 0  # also within max_pixel_diff
    near_empty: list[str] = field(default_factory=list)  # icon ids left out of image matching
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (icon_id, reason)
    capped_components: list[list[str]] = field(default_factory=list)  # too large: image edges dropped


@dataclass
class Grouping:
    groups: list[Group]
    icon_to_group: dict[str, str]
    image_report: ImageMergeReport

    def by_id(self) -> dict[str, Group]:
        return {g.group_id: g for g in self.groups}


def icon_groups(pair_rows: Iterable[Mapping[str, Any]], icon_ids: Iterable[str]) -> dict[str, str]:
    """icon_id -> group_id from training_pairs rows; an icon left out of training (no captions)
    is a group of its own, `solo:<icon_id>`."""
    groups = {member: row["group_id"] for row in pair_rows for member in row["members"]}
    return {icon_id: groups.get(icon_id, f"solo:{icon_id}") for icon_id in icon_ids}


def library_groups() -> dict[str, str]:
    """icon_id -> group of every rendered icon, from the training_pairs and icon images tables; an icon
    left out of training (no captions) is a group of its own."""
    from icon_pipeline.core.storage import icon_images_path, pairs_path, read_records

    images = read_records(icon_images_path(), "icon images")
    return icon_groups(read_records(pairs_path(), "training_pairs"), (row["icon_id"] for row in images))


def load_groups() -> tuple[list[Group], dict[str, str], dict[str, str]]:
    """The training_pairs groups, group_id -> split, and icon_id -> rendered PNG path."""
    from icon_pipeline.core.storage import icon_images_path, pairs_path, read_records, read_table

    records = read_records(pairs_path(), "training_pairs")
    groups = [Group.from_row(row) for row in records]
    split = {row["group_id"]: row["split"] for row in records}
    images = read_table(icon_images_path(), "icon images")
    return groups, split, dict(zip(images["icon_id"], images["png_path"], strict=True))


def normalise_caption(caption: str) -> str:
    return " ".join(caption.lower().split())


def merge_captions(caption_lists: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """Concatenate, normalise whitespace/case and drop repeats, keeping first-seen order."""
    seen: dict[str, None] = {}
    for captions in caption_lists:
        for caption in captions:
            norm = normalise_caption(caption)
            if norm:
                seen.setdefault(norm, None)
    return tuple(seen)


@dataclass(frozen=True)
class _Fingerprint:
    hash_words: np.ndarray  # packed phash bits as uint64 words
    thumb: np.ndarray  # THUMB_SIZE^2 grayscale, uint8
    ink: float  # share of thumbnail pixels that differ from the background


def fingerprint(png_path: str | Path, hash_size: int = 8) -> _Fingerprint:
    with Image.open(png_path) as image:
        gray = image.convert("L")
    bits = imagehash.phash(gray, hash_size=hash_size).hash.flatten()
    packed = np.packbits(bits)
    packed = np.pad(packed, (0, (-len(packed)) % 8))
    thumb = np.asarray(gray.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX), dtype=np.uint8)
    border = np.concatenate([thumb[0], thumb[-1], thumb[:, 0], thumb[:, -1]]).astype(np.int16)
    background = np.median(border)
    ink = float((np.abs(thumb.astype(np.int16) - background) > 32).mean())
    return _Fingerprint(packed.view(">u8").astype(np.uint64), thumb, ink)


def hamming_pairs(words: np.ndarray, max_distance: int, block_bytes: int = 64 << 20) -> np.ndarray:
    """All pairs (i < j) whose packed hashes differ in at most `max_distance` bits.

    Exact brute force in row blocks with numpy's popcount: ~0.3 s for 6.3k 64-bit hashes, so an
    approximate index (multi-index hashing, BK-tree) would buy nothing at this scale.
    """
    n = len(words)
    block = max(1, block_bytes // max(1, n * words.shape[1] * 8))
    found: list[np.ndarray] = []
    for start in range(0, n, block):
        chunk = words[start : start + block]
        distance = np.bitwise_count(chunk[:, None, :] ^ words[None, :, :]).sum(axis=2, dtype=np.int64)
        rows, cols = np.nonzero(distance <= max_distance)
        rows = rows + start
        keep = rows < cols
        found.append(np.stack([rows[keep], cols[keep], distance[rows[keep] - start, cols[keep]]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 3), dtype=np.int64)


def _image_edges(
    icons: Sequence[IconImage],
    phash_distance: int,
    hash_size: int,
    max_pixel_diff: float,
    min_ink: float,
    max_image_component: int,
) -> tuple[list[GroupEdge], ImageMergeReport]:
    report = ImageMergeReport()
    usable: list[int] = []
    prints: list[_Fingerprint] = []
    for index, icon in enumerate(icons):
        try:
            fp = fingerprint(icon.png_path, hash_size)
        except (OSError, ValueError) as exc:  # a missing or broken PNG must not stop the batch
            report.unreadable.append((icon.icon_id, f"{icon.png_path}: {exc}"))
            continue
        if fp.ink < min_ink:
            report.near_empty.append(icon.icon_id)
            continue
        usable.append(index)
        prints.append(fp)
    report.hashed = len(prints)
    if len(prints) < 2:
        return [], report

    words = np.stack([fp.hash_words for fp in prints])
    candidates = hamming_pairs(words, phash_distance)
    report.candidate_pairs = len(candidates)
    confirmed: list[tuple[int, int, int, float]] = []
    for i, j, distance in candidates.tolist():
        diff = float(np.abs(prints[i].thumb.astype(np.int16) - prints[j].thumb).mean()) / 255.0
        if diff <= max_pixel_diff:
            confirmed.append((i, j, distance, diff))
    report.confirmed_pairs = len(confirmed)
    if not confirmed:
        return [], report

    # Image-only components bigger than the cap are chains of look-alikes, not duplicates.
    n = len(prints)
    rows = [c[0] for c in confirmed]
    cols = [c[1] for c in confirmed]
    graph = coo_matrix((np.ones(len(confirmed)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    oversized = {int(label) for label in np.nonzero(sizes > max_image_component)[0]}
    for label in sorted(oversized):
        members = sorted(icons[usable[k]].icon_id for k in np.nonzero(labels == label)[0])
        report.capped_components.append(members)

    edges = []
    for i, j, distance, diff in confirmed:
        if labels[i] in oversized:
            continue
        a, b = sorted((icons[usable[i]].icon_id, icons[usable[j]].icon_id))
        edges.append(GroupEdge(a, b, "image", f"phash={distance} diff={diff:.4f}"))
    return edges, report


def _name_edges(icons: Sequence[IconImage], base_name: Callable[[str], str]) -> list[GroupEdge]:
    buckets: dict[tuple[str, str], list[str]] = defaultdict(list)
    for icon in icons:
        base = base_name(icon.name)
        if base:  # a name that normalises to nothing says nothing about the concept
            buckets[(icon.source, base)].append(icon.icon_id)
    edges = []
    for (_, base), ids in sorted(buckets.items()):
        ids = sorted(ids)
        edges.extend(GroupEdge(ids[0], other, "name", base) for other in ids[1:])
    return edges


def group_icons(
    icons: Iterable[Any],
    captions: Mapping[str, Sequence[str]],
    base_name: Callable[[str], str] = simple_base_name,
    phash_distance: int = 4,
    hash_size: int = 8,
    *,
    max_pixel_diff: float = 0.0025,
    min_ink: float = 0.004,
    max_image_component: int = 8,
    use_images: bool = True,
) -> Grouping:
    """Union icons by (source, normalised base name) and by confirmed near-duplicate renders."""
    rows = [IconImage.from_any(icon) for icon in icons]
    seen: set[str] = set()
    for row in rows:
        if row.icon_id in seen:
            raise ValueError(f"icon {row.icon_id}: listed twice in the grouping input")
        seen.add(row.icon_id)
    if phash_distance < 0 or hash_size < 2:
        raise ValueError(f"phash_distance must be >= 0 and hash_size >= 2, got {phash_distance}, {hash_size}")

    edges = _name_edges(rows, base_name)
    report = ImageMergeReport()
    if use_images:
        image_edges, report = _image_edges(
            rows, phash_distance, hash_size, max_pixel_diff, min_ink, max_image_component
        )
        edges.extend(image_edges)

    index = {row.icon_id: k for k, row in enumerate(rows)}
    n = len(rows)
    graph = coo_matrix(
        (np.ones(len(edges)), ([index[e.a] for e in edges], [index[e.b] for e in edges])), shape=(n, n)
    )
    _, labels = connected_components(graph, directed=False) if n else (0, np.empty(0, dtype=int))

    members_by_label: dict[int, list[IconImage]] = defaultdict(list)
    for row, label in zip(rows, labels, strict=True):
        members_by_label[int(label)].append(row)
    edges_by_label: dict[int, list[GroupEdge]] = defaultdict(list)
    for edge in edges:
        edges_by_label[int(labels[index[edge.a]])].append(edge)

    groups = []
    for label, members in members_by_label.items():
        members.sort(key=lambda r: r.icon_id)
        # Representative: the plainest name, then the best-captioned, then the id (stable).
        rep = min(members, key=lambda r: (len(r.name), -len(captions.get(r.icon_id, ())), r.icon_id))
        ordered = [rep] + [m for m in members if m is not rep]
        member_ids = tuple(m.icon_id for m in members)
        groups.append(
            Group(
                group_id="g" + stable_id("group", *member_ids),
                members=member_ids,
                names=tuple(sorted({m.name for m in members})),
                captions=merge_captions(captions.get(m.icon_id, ()) for m in ordered),
                representative=rep.icon_id,
                edges=tuple(sorted(edges_by_label[label], key=lambda e: (e.reason, e.a, e.b))),
            )
        )
    groups.sort(key=lambda g: g.group_id)
    icon_to_group = {m: g.group_id for g in groups for m in g.members}
    return Grouping(groups=groups, icon_to_group=icon_to_group, image_report=report)


# --- metadata helpers -------------------------------------------------------------------------


def pair_counts(groups: Iterable[Group], captions: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Training pairs before grouping (per icon) and after (per group, merged captions)."""
    groups = list(groups)
    icon_ids = [m for g in groups for m in g.members]
    return {
        "icons": len(icon_ids),
        "groups": len(groups),
        "pairs_before": sum(len(captions.get(i, ())) for i in icon_ids),
        "pairs_after": sum(len(g.captions) for g in groups),
        "icons_without_captions": sum(1 for i in icon_ids if not captions.get(i)),
        "groups_without_captions": sum(1 for g in groups if not g.captions),
    }


def group_size_histogram(groups: Iterable[Group]) -> dict[int, int]:
    counts = Counter(g.size for g in groups)
    return dict(sorted(counts.items()))


def largest_groups(groups: Iterable[Group], k: int = 10) -> list[dict[str, Any]]:
    top = sorted(groups, key=lambda g: (-g.size, g.group_id))[:k]
    return [
        {
            "group_id": g.group_id,
            "size": g.size,
            "names": list(g.names[:8]),
            "reasons": dict(Counter(e.reason for e in g.edges)),
        }
        for g in top
    ]


def grouping_metadata(grouping: Grouping, captions: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Everything an analyst wants to see about a grouping run, JSON-serialisable."""
    report = grouping.image_report
    reasons = Counter(e.reason for g in grouping.groups for e in g.edges)
    return {
        **pair_counts(grouping.groups, captions),
        "name_edges": reasons.get("name", 0),
        "image_edges": reasons.get("image", 0),
        "size_histogram": {str(k): v for k, v in group_size_histogram(grouping.groups).items()},
        "largest_groups": largest_groups(grouping.groups),
        "images_hashed": report.hashed,
        "image_candidate_pairs": report.candidate_pairs,
        "image_confirmed_pairs": report.confirmed_pairs,
        "near_empty_images": len(report.near_empty),
        "unreadable_images": [f"{i}: {r}" for i, r in report.unreadable[:20]],
        "capped_image_components": [c[:10] for c in report.capped_components[:10]],
    }


# --- split ------------------------------------------------------------------------------------


def split_groups(
    groups: Grouping | Iterable[Group] | Iterable[str], heldout_share: float = 0.1, seed: int = 0
) -> dict[str, SplitName]:
    """Hold out whole groups: rank group ids by a seeded hash, the first share goes to `heldout`.

    Independent of input order; adding groups moves few existing ones across the line.
    """
    if not 0.0 <= heldout_share < 1.0:
        raise ValueError(f"heldout_share must be in [0, 1), got {heldout_share}")
    items = groups.groups if isinstance(groups, Grouping) else groups
    ids = sorted({g if isinstance(g, str) else g.group_id for g in items})
    ranked = sorted(ids, key=lambda gid: hashlib.sha256(f"{seed}\x1f{gid}".encode()).hexdigest())
    n_heldout = round(len(ids) * heldout_share)
    heldout = set(ranked[:n_heldout])
    return {gid: ("heldout" if gid in heldout else "train") for gid in ids}
