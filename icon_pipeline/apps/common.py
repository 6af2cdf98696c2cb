"""What every app shares: asset files that may not exist yet, paging, cached reads, image lists.

The apps read the assets' files (Parquet, JSONL, PNG) directly: no Dagster import, so an app
starts in about a second and works while a run is going on. Reads are cached by file
modification time, so a re-materialization shows up on the next page load without a restart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.parquet as pq

from icon_pipeline.core.storage import asset_path, cached, data_root, resolved_rows

PER_PAGE = 48
T = TypeVar("T")


@dataclass(frozen=True)
class MissingAsset:
    """An asset an app needs whose file is not there yet."""

    asset: str
    path: Path
    why: str = ""

    def message(self) -> str:
        reason = f" ({self.why})" if self.why else ""
        return (
            f"`{self.asset}` has not been materialized yet{reason}: expected `{self.path}`. "
            f"Materialize it with `icon-pipeline materialize {self.asset}` (or `make demo` for everything), "
            "then reload this page."
        )


class AssetsMissing(RuntimeError):
    def __init__(self, missing: Sequence[MissingAsset]) -> None:
        self.missing = list(missing)
        super().__init__("; ".join(m.message() for m in self.missing))


def missing_page(app_title: str, missing: Sequence[MissingAsset]) -> str:
    """Markdown for an app started before its assets exist."""
    lines = [f"## {app_title}: nothing to show yet", ""]
    lines += [f"- {m.message()}" for m in missing]
    return "\n".join(lines)


def data_dir() -> Path:
    return data_root()


def stage_dir(stage: str) -> Path:
    return asset_path("batch_dir", stage=stage)


def batch_files(stage: str) -> list[Path]:
    folder = stage_dir(stage)
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def require_file(path: Path, asset: str, why: str = "") -> MissingAsset | None:
    return None if path.exists() else MissingAsset(asset, path, why)


def require_batches(stage: str, asset: str) -> MissingAsset | None:
    if batch_files(stage):
        return None
    return MissingAsset(
        asset, asset_path("batch_table", stage=stage, batch="<batch>"), "no batch has been materialized"
    )


# --- cached reads ------------------------------------------------------------------------------


def read_rows(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parquet rows as plain Python (lists, not numpy arrays); only the columns asked for that exist.
    Path columns come back resolved against the current data root (they are stored relative)."""
    schema = pq.read_schema(path)
    wanted = [c for c in columns if c in schema.names] if columns else None
    return resolved_rows(pq.read_table(path, columns=wanted).to_pylist())


# --- icons ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IconInfo:
    icon_id: str
    name: str
    source: str
    category: str
    style: str
    context: str  # sub-folder or Figma page: tells variants of one name apart when style is empty
    tags: tuple[str, ...]
    batch_key: str
    png_path: str | None
    render_status: str
    render_reason: str

    @property
    def variant(self) -> str:
        return self.style or self.context


def catalog_file() -> Path:
    return asset_path("icon_catalog")


def load_icons() -> dict[str, IconInfo]:
    """icon_id -> IconInfo from icon_catalog and every rendered batch (png_path None if not rendered)."""
    catalog = catalog_file()
    renders = batch_files("rendered")

    def load() -> dict[str, IconInfo]:
        rendered: dict[str, dict[str, Any]] = {}
        for path in renders:
            for row in read_rows(path, ["icon_id", "status", "png_path", "reason"]):
                rendered[row["icon_id"]] = row
        icons = {}
        columns = ["icon_id", "name", "source", "category", "style", "context", "tags", "batch_key"]
        for row in read_rows(catalog, columns):
            render = rendered.get(row["icon_id"], {})
            ok = render.get("status") not in (None, "failed") and render.get("png_path")
            icons[row["icon_id"]] = IconInfo(
                icon_id=row["icon_id"],
                name=row.get("name") or row["icon_id"],
                source=row.get("source") or "",
                category=row.get("category") or "",
                style=row.get("style") or "",
                context=row.get("context") or "",
                tags=tuple(row.get("tags") or ()),
                batch_key=row.get("batch_key") or "",
                png_path=str(render["png_path"]) if ok else None,
                render_status=str(render.get("status") or "not rendered"),
                render_reason=str(render.get("reason") or ""),
            )
        return icons

    return cached("icons", [catalog, *renders], load)


# --- paging -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    items: list
    page: int  # 1-based, clamped to [1, pages]
    pages: int
    total: int

    def label(self, noun: str = "icons") -> str:
        if not self.total:
            return f"no {noun} match"
        return f"page {self.page} of {self.pages} ({self.total} {noun})"


def paginate(items: Sequence[T], page: int | float | None, per_page: int = PER_PAGE) -> Page:
    pages = max(1, math.ceil(len(items) / per_page))
    try:
        number = int(page or 1)
    except (TypeError, ValueError):
        number = 1
    number = min(max(1, number), pages)
    start = (number - 1) * per_page
    return Page(list(items[start : start + per_page]), number, pages, len(items))


def matches(query: str, *fields: object) -> bool:
    """Every word of the query occurs in one of the fields (case-insensitive substring)."""
    words = query.lower().split()
    if not words:
        return True
    haystack = " ".join(
        " ".join(map(str, f)) if isinstance(f, list | tuple) else str(f) for f in fields if f
    ).lower()
    return all(w in haystack for w in words)


def gallery_items(
    icons: Sequence[IconInfo], label: Callable[[IconInfo], str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """(png path, caption) pairs for gr.Gallery and the icon ids in the same order; icons without
    a render are left out (they are listed by name in the app's text instead)."""
    shown = [i for i in icons if i.png_path]
    return [(i.png_path, label(i)) for i in shown], [i.icon_id for i in shown]
