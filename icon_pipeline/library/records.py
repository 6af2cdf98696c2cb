"""The catalog's data contract: one `IconRecord` per icon, whatever its source.

Sources produce records, rendering consumes them, and the catalog
asset stores them as a table (one row per icon, `to_row`/`from_row`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

IconFormat = Literal["svg", "png"]


@dataclass(frozen=True)
class IconRecord:
    """One icon of a library.

    icon_id: stable across runs: `<source>:<path or node id>:<style>`-derived, never the content,
        so an edited icon keeps its id and its batch.
    content_hash: sha256 of the raw file bytes; drives render and caption caches.
    file_path: where the raw SVG/PNG lies on disk (sources download into the data dir first).
    """

    icon_id: str
    source: str
    name: str
    raw_name: str
    file_path: str
    format: IconFormat
    content_hash: str
    tags: tuple[str, ...] = ()
    category: str = ""
    style: str = ""
    context: str = ""  # sub-folder, Figma page/frame: where the designer put it
    source_version: str = ""
    collection: str = ""  # the source's own unit (a Figma page): batches never span two
    batch_key: str = ""  # assigned by batching: the icon_batches partition it belongs to
    stale: bool = False  # kept from the last good scan because its source could not be read

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["tags"] = list(self.tags)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> IconRecord:
        data = dict(row)
        tags = data.get("tags")  # a list, or a numpy array when read back from Parquet
        data["tags"] = tuple(str(t) for t in tags) if tags is not None else ()
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class SourceFailure:
    """An item a source could not turn into an icon: recorded, never fatal for the batch."""

    source: str
    item: str
    reason: str


@dataclass
class SourceScan:
    """What one source yielded: icons, failures, and a version string that changes when it does.

    `error`: the source could not be read in full (a missing folder, an HTTP error from Figma, a
    refused export batch). Its icons are then incomplete, and a catalog built from it would
    silently lose some: icon_catalog refuses it (or keeps the source's last good rows).
    `failures` are single items that could not be used (a broken SVG): recorded, never fatal.
    """

    source: str
    version: str
    icons: list[IconRecord] = field(default_factory=list)
    failures: list[SourceFailure] = field(default_factory=list)
    error: str | None = None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stable_id(*parts: str) -> str:
    """A short readable-safe id from parts; stable across runs and machines."""
    return hashlib.sha1("\x1f".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:16]
