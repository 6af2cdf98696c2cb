"""What every app shares: asset files that may not exist yet, paging, cached reads, image lists;
and what the search surfaces share: one JSON layout of search results (the HTTP API and
`icon-pipeline search --json`), the check of filter values, and icon downloads drawn in a chosen
colour, stroke width and background.

The apps read the assets' files (Parquet, JSONL, PNG) directly: no Dagster import, so an app
starts in about a second and works while a run is going on. Reads are cached by file
modification time, so a re-materialization shows up on the next page load without a restart.
"""

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import pyarrow.parquet as pq

from icon_pipeline.core.storage import asset_path, cached, data_root, resolved_rows, to_relative
from icon_pipeline.search.query import QueryError

if TYPE_CHECKING:
    from icon_pipeline.search.query import SearchHit
    from icon_pipeline.search.service import ResultGroup, SearchPage

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


# --- search results as JSON: one layout for the HTTP API and `icon-pipeline search --json` -------

ICON_SVG_ROUTE, ICON_PNG_ROUTE = "/api/icon.svg", "/api/icon.png"


def icon_file(file_path: str) -> str:
    """An icon's source file as a client may see it: relative to the data root, or the file's
    name alone when it lies outside the data root (a server's folders are not the client's business)."""
    if not file_path:
        return ""
    return _client_path(file_path, data_root())


@functools.lru_cache(maxsize=1 << 16)
def _client_path(file_path: str, root: Path) -> str:
    """icon_file for one data root, kept: a page of results names some 40 files, and each costs a
    path walk (70 us; the largest part of a search server's answer after the search itself)."""
    relative = to_relative(file_path, root)
    return Path(file_path).name if Path(relative).is_absolute() else relative


def icon_urls(icon_id: str) -> dict[str, str]:
    """The API routes that serve the icon (relative to the API's root; download options as query
    parameters, see DownloadOptions)."""
    query = urlencode({"id": icon_id})
    return {"svg_url": f"{ICON_SVG_ROUTE}?{query}", "png_url": f"{ICON_PNG_ROUTE}?{query}"}


def hit_json(hit: SearchHit) -> dict[str, Any]:
    """One icon of a result. New per-icon fields (e.g. a confidence) belong here, once for all surfaces."""
    return {
        "icon_id": hit.icon_id,
        "name": hit.name,
        "group_id": hit.group_id,
        "score": round(hit.score, 6),
        # P(this is what the query means), from the fitted confidence model; None: unrated
        "confidence": None if hit.confidence is None else round(hit.confidence, 6),
        "style": hit.style,
        "category": hit.category,
        "file": icon_file(hit.file_path),
        "channels": {c: round(v, 6) for c, v in hit.channel_scores.items()},
        **icon_urls(hit.icon_id),
    }


def result_json(rank: int, group: ResultGroup) -> dict[str, Any]:
    """One result: its lead icon, and the variants folded into it (each in hit_json's layout)."""
    return {"rank": rank, **hit_json(group.hit), "variants": [hit_json(v) for v in group.variants]}


def page_json(page: SearchPage, query: dict[str, Any]) -> dict[str, Any]:
    """A page of results as the API answers and the CLI prints it; `query` describes what was
    searched ({"kind": "text", "text"} or {"kind": "image", ...}). Page-level fields (e.g. a
    "no match" verdict) belong here."""
    return {
        "query": query,
        "model": page.model,
        "offset": page.offset,
        "has_more": page.has_more,
        "match": page.match,  # "match", "none" (nothing matches well: see message) or "unrated"
        "message": page.message,
        "results": [result_json(page.offset + i, g) for i, g in enumerate(page.results, start=1)],
    }


def check_choices(what: str, given: Collection[str], choices: Collection[str]) -> None:
    """QueryError naming each value of `given` that is not one of `choices`, and the choices (a
    filter value nobody has would otherwise silently return nothing)."""
    unknown = [value for value in given if value not in choices]
    if unknown:
        listed = ", ".join(sorted(choices)) or "(none in this library)"
        names = ", ".join(repr(value) for value in unknown)
        raise QueryError(f"unknown {what} {names}; choose from: {listed}")


def check_filters(
    styles: Collection[str], categories: Collection[str], facets: Callable[[], tuple[list[str], list[str]]]
) -> None:
    """Styles and categories checked against the library's (`facets`: service.facets, read only
    when a filter is given, so an unfiltered search on an unready index says what to materialize)."""
    if not styles and not categories:
        return
    known_styles, known_categories = facets()
    check_choices("style", styles, known_styles)
    check_choices("category", categories, known_categories)


# --- downloads: the icon in a colour, stroke width and background of the user's choice ----------

SVG_NS = "http://www.w3.org/2000/svg"
PNG_SIZES = [16, 24, 32, 48, 64, 128, 256, 512, 1024]
STROKE_WIDTHS = (0.5, 4.0)  # the range offered: hairline to heavy, on a 24-unit icon grid
_HEX_COLOUR = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_RGB_COLOUR = re.compile(r"rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*[\d.]+\s*)?\)")
_CURRENT_COLOUR = re.compile(r"currentcolor", re.IGNORECASE)
TRANSPARENT = "transparent"


def parse_colour(value: str, what: str) -> str:
    """'#1a2b3c', '1a2b3c' or '#abc' as '#rrggbb'; QueryError naming `what` otherwise."""
    rgb = _RGB_COLOUR.fullmatch(value.strip())
    if rgb:  # what a browser's colour picker may send
        return "#" + "".join(f"{min(255, round(float(c))):02x}" for c in rgb.groups())
    match = _HEX_COLOUR.fullmatch(value.strip())
    if not match:
        raise QueryError(f"{what} must be a hex colour such as #1a73e8, got {value!r}")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    return "#" + digits.lower()


@dataclass(frozen=True)
class DownloadOptions:
    """How a downloaded icon is drawn: `colour` for its ink (None: as the file draws it),
    `stroke_width` for outline icons (None: as drawn; Tabler's is 2), `background` None for
    transparent or a colour, `size` in px (PNG only)."""

    colour: str | None = None
    stroke_width: float | None = None
    background: str | None = None
    size: int = 256

    @classmethod
    def parse(
        cls,
        colour: str | None = None,
        stroke_width: float | None = None,
        background: str | None = None,
        size: int | None = None,
    ) -> DownloadOptions:
        """From user input; QueryError naming the bad value and what is allowed."""
        low, high = STROKE_WIDTHS
        if stroke_width is not None and not low <= float(stroke_width) <= high:
            raise QueryError(f"stroke width must be {low:g} to {high:g}, got {stroke_width:g}")
        size = int(size or 256)
        if not PNG_SIZES[0] <= size <= PNG_SIZES[-1]:
            raise QueryError(f"PNG size must be {PNG_SIZES[0]} to {PNG_SIZES[-1]} px, got {size}")
        blank = not background or background.strip().lower() in (TRANSPARENT, "none")
        return cls(
            colour=parse_colour(colour, "colour") if colour else None,
            stroke_width=None if stroke_width is None else float(stroke_width),
            background=None if blank else parse_colour(background or "", "background"),
            size=size,
        )

    def suffix(self) -> str:
        """What the options change, for the downloaded file's name."""
        parts = [self.colour.lstrip("#")] if self.colour else []
        if self.stroke_width is not None:
            parts.append(f"stroke{self.stroke_width:g}")
        if self.background:
            parts.append("on-" + self.background.lstrip("#"))
        return "-".join(parts)


def styled_svg(file_path: str | Path, options: DownloadOptions) -> bytes:
    """The icon's SVG with `currentColor` (the ink of Tabler-like icons) in the chosen colour, the
    stroke width set where the file sets one, and a background rectangle unless transparent."""
    from xml.etree import ElementTree

    import defusedxml.ElementTree as SafeTree

    ElementTree.register_namespace("", SVG_NS)  # written back without `ns0:` prefixes
    try:
        root = SafeTree.fromstring(Path(file_path).read_bytes())
    except (OSError, ElementTree.ParseError) as exc:
        raise QueryError(f"{Path(file_path).name}: cannot read this SVG ({exc})") from None
    for element in root.iter():
        for name, value in element.attrib.items():
            if options.colour and "currentcolor" in value.lower():
                element.set(name, _CURRENT_COLOUR.sub(options.colour, value))
        if options.stroke_width is not None and "stroke-width" in element.attrib:
            element.set("stroke-width", f"{options.stroke_width:g}")
    if options.colour:
        root.set("color", options.colour)  # what any remaining currentColor resolves to
    if options.stroke_width is not None and "stroke-width" not in root.attrib:
        root.set("stroke-width", f"{options.stroke_width:g}")  # inherited by strokes that set none
    if options.background:
        backdrop = ElementTree.Element(
            f"{{{SVG_NS}}}rect",
            {"width": "100%", "height": "100%", "fill": options.background, "stroke": "none"},
        )
        root.insert(0, backdrop)
    return ElementTree.tostring(root, xml_declaration=False)


def styled_png(file_path: str | Path, fmt: str, options: DownloadOptions) -> bytes:
    """The icon as a `size` px PNG: an SVG drawn with styled_svg's changes, on a transparent or
    coloured square canvas (aspect kept, centered); a raster icon resized as is (ink colour and
    stroke apply to SVGs only)."""
    from PIL import Image

    size = options.size
    if fmt == "svg":
        import cairosvg

        svg = styled_svg(file_path, DownloadOptions(options.colour, options.stroke_width))
        try:
            drawn = cairosvg.svg2png(bytestring=svg, output_width=size, unsafe=False)
        except Exception as exc:  # cairosvg raises bare ValueError/TypeError/... for bad documents
            raise QueryError(f"{Path(file_path).name}: cannot draw this SVG ({exc})") from None
        glyph = Image.open(io.BytesIO(drawn)).convert("RGBA")
    else:
        try:
            glyph = Image.open(file_path).convert("RGBA")
        except OSError as exc:
            raise QueryError(f"{Path(file_path).name}: cannot read this image ({exc})") from None
    glyph.thumbnail((size, size), Image.Resampling.LANCZOS)
    if glyph.width < size and glyph.height < size:  # a small raster: grown to the size asked for
        scale = size / max(glyph.size)
        glyph = glyph.resize(
            (round(glyph.width * scale), round(glyph.height * scale)), Image.Resampling.LANCZOS
        )
    canvas = Image.new("RGBA", (size, size), options.background or (0, 0, 0, 0))
    canvas.alpha_composite(glyph, ((size - glyph.width) // 2, (size - glyph.height) // 2))
    out = io.BytesIO()
    (canvas.convert("RGB") if options.background else canvas).save(out, format="PNG")
    return out.getvalue()
