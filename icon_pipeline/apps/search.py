"""Icon search for designers: words or an image (upload, SVG included, or paste) -> icons.

Opens on hybrid search (every channel fused, the benchmark's `hybrid` row). Results are one per
icon concept, its variants (outline/filled, sizes) folded in, unless unfolded; style and category
filters come from the catalog; "More results" pages on. A second channel can be shown beside the
first to compare by eye; each panel says what it shows.

Results are an HTML grid of our own, with the name under each icon: a Gallery draws captions over
the image, where Tabler puts its modifier badges, and cuts long names. Clicking a result opens its
detail: a large preview, name (copyable), captions, group, why it matched (each channel's score),
SVG and PNG downloads (any size, drawn by the project's renderer), and a thumbs up / down that is
stored in PostgreSQL (search/judgements.py) for `icon-pipeline evaluate --judgements`.

Built on `service.SearchService`, the same code as `icon-pipeline search` and `icon-pipeline api`:
each request opens its own database connection; loaded checkpoints are shared by all requests.
"""

from __future__ import annotations

import base64
import html
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import gradio as gr
import psycopg
from PIL import Image

from icon_pipeline.apps.common import (
    PNG_SIZES,
    STROKE_WIDTHS,
    DownloadOptions,
    batch_files,
    cached,
    check_filters,
    read_rows,
    styled_png,
    styled_svg,
)
from icon_pipeline.model.checkpoint import CheckpointError, EncoderBundle
from icon_pipeline.model.sentence_encoder import TextEncoderError
from icon_pipeline.search.channels import HYBRID, channel_info
from icon_pipeline.search.confidence import NO_MATCH
from icon_pipeline.search.index import EmbeddingIndexError
from icon_pipeline.search.query import QueryError, SearchHit, prepare_query_image, validate_text_query
from icon_pipeline.search.resident import server_index
from icon_pipeline.search.service import NotReadyError, SearchPage, SearchService

TITLE = "Icon search"
EMBEDDINGS_ASSET = "icon_embeddings"
NO_COMPARE = "(none)"
PER_PAGE = 24
MAX_PAGES = 40  # PER_PAGE * MAX_PAGES stays under the service's 1000-icon ranking depth
DEFAULT_INK = "#000000"  # as the file draws it: the SVG keeps `currentColor`, the PNG is black
DEFAULT_PNG_SIZE = 256
PREVIEW_SIZE = 512
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg", ".svgz"]
SEARCH_ERRORS = (QueryError, NotReadyError, EmbeddingIndexError, CheckpointError, TextEncoderError)

# Loaded checkpoints, shared by every request (each request has its own connection; the service
# loads each once under its own lock, and searches run side by side as the API's do).
_bundles: dict[str, EncoderBundle] = {}
# Downloads and previews: files of our own, under a name that is the icon's (what the browser saves).
_files = Path(tempfile.mkdtemp(prefix="icon-search-"))


class SearchUnavailable(RuntimeError):
    """The index cannot be used (database down, no models); the message says what to do."""


# The database URL, found once per configuration (not a database check on every search):
# (ICON_PIPELINE_DATABASE_URL, data root, embedded data dir) -> libpq URL.
_database_urls: dict[tuple[str, str, str], str] = {}


def _service() -> SearchService:
    from icon_pipeline.core.database import DatabaseError, describe_url, ensure_database
    from icon_pipeline.core.paths import ENV_DATABASE_URL, get_paths

    paths = get_paths()
    where = (os.environ.get(ENV_DATABASE_URL, ""), str(paths.data_dir), str(paths.pgdata))
    if where in _database_urls:
        try:
            conn = psycopg.connect(_database_urls[where], connect_timeout=5, autocommit=True)
            return SearchService(conn, bundles=_bundles, resident=server_index())
        except psycopg.OperationalError:
            del _database_urls[where]  # the server may have been restarted elsewhere: look it up again
    try:
        url = _database_urls[where] = ensure_database().libpq_url
        conn = psycopg.connect(url, connect_timeout=5, autocommit=True)
    except DatabaseError as exc:
        raise SearchUnavailable(f"the search index is unreachable: {exc}") from None
    except psycopg.OperationalError:
        raise SearchUnavailable(
            f"the search index is unreachable: cannot connect to {describe_url(url)}"
        ) from None
    # The checkpoints and tables this process has loaded already.
    return SearchService(conn, bundles=_bundles, resident=server_index())


@contextmanager
def open_search() -> Iterator[SearchService]:
    """A service on its own connection; SearchUnavailable when the database goes away meanwhile."""
    service = _service()
    try:
        yield service
    except psycopg.OperationalError:
        raise SearchUnavailable("the search index became unreachable during the query; try again") from None
    finally:
        service.close()


def available_models() -> list[str]:
    """hybrid, then every single channel; SearchUnavailable if the index is empty or down."""
    with open_search() as service:
        models = service.models()
    if HYBRID not in models:
        raise SearchUnavailable(
            f"the search index has no models yet: materialize `{EMBEDDINGS_ASSET}` "
            f"(`icon-pipeline materialize {EMBEDDINGS_ASSET}`), then reload this page"
        )
    return models


def describe_channel(model: str) -> str:
    """A panel's title: what the results in it come from."""
    return channel_info(model).description


# --- results as HTML ----------------------------------------------------------------------------

GRID_CSS = """
.panel-title { font-size: 1.05rem; margin: 0 0 .5rem; }
.icon-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(136px, 1fr)); gap: 10px; }
.icon-card { display: flex; flex-direction: column; align-items: center; gap: 4px; padding: 8px;
  border: 1px solid var(--border-color-primary); border-radius: 8px; cursor: pointer;
  background: var(--background-fill-primary); text-align: center; font: inherit; color: inherit; }
.icon-card:hover, .icon-card:focus { border-color: var(--color-accent); outline: none; }
.icon-card img { width: 96px; height: 96px; object-fit: contain; }
.icon-card .icon-name { font-weight: 600; overflow-wrap: anywhere; white-space: normal; }
.icon-card .icon-meta, .icon-card .icon-variants { font-size: .8rem; opacity: .75; overflow-wrap: anywhere; }
.icon-card .no-render { width: 96px; height: 96px; display: flex; align-items: center;
  justify-content: center; font-size: .75rem; opacity: .6; }
.icon-card .icon-variants { display: flex; flex-wrap: wrap; justify-content: center; gap: 6px; }
.icon-card .icon-variant { display: flex; flex-direction: column; align-items: center; font-size: .75rem; }
.icon-card .icon-variant img { width: 32px; height: 32px; }
"""
# The detail view floats over the grid, where the user clicked, whatever the scroll position.
DETAIL_CSS = """<style>
#detail { position: fixed; top: 4vh; right: 2vw; width: min(980px, 96vw); max-height: 92vh;
  overflow: auto; z-index: 1000; background: var(--background-fill-primary);
  border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 12px;
  box-shadow: 0 12px 48px rgba(0, 0, 0, .35); }
</style>"""
# Delegated: the grid is re-rendered on each search, the listener on its element stays.
GRID_JS = """
element.addEventListener('click', (event) => {
  const card = event.target.closest('[data-icon-id]');
  if (card) trigger('click', {icon_id: card.dataset.iconId, panel: card.dataset.panel});
});
"""


def _thumbnail(png_path: str | None) -> str | None:
    """The render inline (data URI): no file route, no server path in the page."""
    if not png_path:
        return None
    try:
        data = Path(png_path).read_bytes()
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _variant_label(hit: SearchHit) -> str:
    return hit.style or hit.name


def _variants_html(variants: tuple[SearchHit, ...], panel: int) -> str:
    """The variants folded into a card, each seen: a small picture and its style (or name)."""
    if not variants:
        return ""
    items = []
    for hit in variants:
        thumb = _thumbnail(hit.png_path)
        label = html.escape(_variant_label(hit))
        picture = f"<img src='{thumb}' alt='{label}'>" if thumb else ""
        variant_id = html.escape(hit.icon_id)
        items.append(f"<span class='icon-variant' data-variant-id='{variant_id}'>{picture}+ {label}</span>")
    return "<span class='icon-variants'>" + "".join(items) + "</span>"


def results_html(page: SearchPage | None, panel: int, note: str = "") -> str:
    if page is None:
        return f"<p class='panel-note'>{html.escape(note)}</p>" if note else ""
    title = f"<h3 class='panel-title'>{html.escape(describe_channel(page.model))}</h3>"
    if not page.results:
        return title + "<p>No icon matches (try other words, or fewer filters).</p>"
    if page.match == NO_MATCH:
        # Said above the grid: the closest icons still show, as what the library has nearest.
        title += (
            f"<p class='no-match' role='status' data-match='{NO_MATCH}'><strong>No match.</strong> "
            f"{html.escape(page.message)}. The closest icons:</p>"
        )
    cards = []
    for group in page.results:
        hit = group.hit
        thumb = _thumbnail(hit.png_path)
        picture = (
            f"<img src='{thumb}' alt='{html.escape(hit.name)}'>"
            if thumb
            else "<span class='no-render'>no render</span>"
        )
        rated = f"{hit.confidence:.1%} likely" if hit.confidence is not None else f"{hit.score:.3f}"
        meta = " · ".join(x for x in (hit.style, rated) if x)
        variants = _variants_html(group.variants, panel)
        cards.append(
            f"<button type='button' class='icon-card' data-icon-id='{html.escape(hit.icon_id)}' "
            f"data-panel='{panel}' title='{html.escape(hit.name)}'>{picture}"
            f"<span class='icon-name'>{html.escape(hit.name)}</span>"
            f"<span class='icon-meta'>{html.escape(meta)}</span>{variants}</button>"
        )
    return title + "<div class='icon-grid'>" + "".join(cards) + "</div>"


def _remember(page: SearchPage | None) -> dict[str, dict[str, Any]]:
    """What the detail view needs of each shown icon (variants included), by icon id."""
    seen: dict[str, dict[str, Any]] = {}
    for group in page.results if page else []:
        for hit in (group.hit, *group.variants):
            seen[hit.icon_id] = {
                "score": hit.score,
                "channels": dict(hit.channel_scores),
                "group": hit.group_id,
                "png_path": hit.png_path,
                "model": page.model,  # type: ignore[union-attr]
                "variants": [v.icon_id for v in (group.hit, *group.variants) if v.icon_id != hit.icon_id],
            }
    return seen


# --- searching -----------------------------------------------------------------------------------


def _query_of(state: dict[str, Any] | None) -> str | Image.Image | None:
    if not state:
        return None
    if state["kind"] == "text":
        return state["text"]
    return Image.open(Path(state["image"])).convert("RGB")


def _search(
    state: dict[str, Any] | None,
    model: str | None,
    compare: str | None,
    fold: bool,
    styles: list[str] | None,
    categories: list[str] | None,
    pages: int,
) -> tuple[str, str, str, Any, dict]:
    """(first panel, second panel, message, more-button update, shown icons) for `pages` pages."""
    query = _query_of(state)
    if query is None:
        return (
            "",
            gr.update(value="", visible=False),
            "Type a few words or choose an image, then search.",
            gr.update(visible=False),
            {},
        )
    models = [model or HYBRID] + ([compare] if compare and compare not in (NO_COMPARE, model) else [])
    options = {
        "k": PER_PAGE * pages,
        "fold": bool(fold),
        "styles": tuple(styles or ()),
        "categories": tuple(categories or ()),
    }
    panels: list[SearchPage | None] = [None, None]
    notes, errors = [], ["", ""]
    try:
        with open_search() as service:
            check_filters(options["styles"], options["categories"], service.facets)
            for slot, name in enumerate(models):
                try:
                    page = service.search(query, name, **options)
                except QueryError as exc:
                    if slot == 0:
                        raise
                    errors[1] = f"{name}: {exc}"
                    notes.append(f"**{html.escape(name)}**: {html.escape(str(exc))}")
                    continue
                panels[slot] = page
                icons = sum(1 + len(g.variants) for g in page.results)
                what = f"{len(page.results)} results" + (
                    f" ({icons} icons)" if icons != len(page.results) else ""
                )
                notes.append(
                    f"**{html.escape(page.model)}**: {what}"
                    + (
                        " — **no match**: nothing in the library matches this well"
                        if page.match == NO_MATCH
                        else ""
                    )
                )
    except (*SEARCH_ERRORS, SearchUnavailable) as exc:
        return (
            "",
            gr.update(value="", visible=False),
            f"**Error:** {html.escape(str(exc))}",
            gr.update(visible=False),
            {},
        )
    more = bool(panels[0] and panels[0].has_more) and pages < MAX_PAGES
    shown = {**_remember(panels[1]), **_remember(panels[0])}
    return (
        results_html(panels[0], 0),
        gr.update(value=results_html(panels[1], 1, errors[1]), visible=len(models) > 1),
        "  \n".join(notes),
        gr.update(visible=more),
        shown,
    )


def _label(path: str) -> str:
    """An upload's own file name: never the server's temporary folder."""
    return Path(path).name or "uploaded image"


def prepare_image(upload: str | None, pasted: str | None) -> tuple[Image.Image, dict[str, Any]]:
    """The image query (a pasted one wins over a file) as searched, and its state; QueryError."""
    source = pasted or upload
    if not source:
        raise QueryError("upload or paste an image first (PNG, JPEG, GIF, WebP, BMP or SVG)")
    label = "pasted image" if pasted else _label(source)
    image = prepare_query_image(source, label=label)
    path = _files / f"query-{uuid.uuid4().hex}.png"
    image.save(path)
    return image, {"kind": "image", "image": str(path), "label": label}


# --- detail view --------------------------------------------------------------------------------


def _captions() -> dict[str, list[str]]:
    paths = batch_files("captions")

    def load() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for path in paths:
            for row in read_rows(path, ["icon_id", "phrases"]):
                out[row["icon_id"]] = list(row.get("phrases") or [])
        return out

    return cached("search-captions", paths, load)


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "icon"


def render_png(file_path: str, fmt: str, size: int, name: str) -> Path:
    """The icon drawn at `size` px by the project's renderer, as a file named after the icon."""
    from icon_pipeline.render.rasterize import RenderError, RenderSettings, render_icon

    if not PNG_SIZES[0] <= size <= PNG_SIZES[-1]:
        raise QueryError(f"PNG size must be {PNG_SIZES[0]} to {PNG_SIZES[-1]} px, got {size}")
    try:
        image = render_icon(Path(file_path), RenderSettings(size=max(size, 16)), fmt=fmt)  # type: ignore[arg-type]
    except RenderError as exc:
        raise QueryError(f"{name}: cannot render ({exc.reason})") from None
    folder = _files / uuid.uuid4().hex
    folder.mkdir()
    path = folder / f"{_file_stem(name)}-{size}px.png"
    image.save(path)
    return path


def download_files(record: Any, options: DownloadOptions) -> tuple[Path | None, Path]:
    """(SVG or None for a raster icon, PNG) as drawn with `options`, under the icon's name."""
    folder = _files / uuid.uuid4().hex
    folder.mkdir()
    stem = "-".join(x for x in (_file_stem(record.name), options.suffix()) if x)
    svg = None
    if record.format == "svg" and Path(record.file_path).suffix.lower() == ".svg":
        svg = folder / f"{stem}.svg"
        svg.write_bytes(styled_svg(record.file_path, options))
    png = folder / f"{stem}-{options.size}px.png"
    png.write_bytes(styled_png(record.file_path, record.format, options))
    return svg, png


def download_options(
    size: int | None, ink: str | None, stroke: float | None, transparent: bool
) -> DownloadOptions:
    """The detail view's choices; black and a stroke of 2 (the library's own) leave the file as drawn."""
    return DownloadOptions.parse(
        colour=None if not ink or ink.lower() == DEFAULT_INK else ink,
        stroke_width=None if stroke is None or float(stroke) == 2.0 else float(stroke),
        background=None if transparent else "#ffffff",
        size=int(size or DEFAULT_PNG_SIZE),
    )


def url_search(request: gr.Request | None) -> dict[str, Any]:
    """What a shared link's query string asks for (empty values when it asks for nothing)."""
    params = getattr(request, "query_params", None) or {}

    def every(name: str) -> list[str]:
        return (
            list(params.getlist(name))
            if hasattr(params, "getlist")
            else [params[name]]
            if name in params
            else []
        )

    return {
        "q": (params.get("q") or "").strip(),
        "model": params.get("model") or None,
        "fold": (params.get("fold") or "true").lower() not in ("0", "false", "no"),
        "style": every("style"),
        "category": every("category"),
    }


def share_link(
    state: dict | None,
    model: str | None,
    compare: str | None,
    fold: bool,
    styles: list[str] | None,
    categories: list[str] | None,
) -> str:
    """A link to this search (text searches; an image cannot ride in a URL)."""
    if not state or state.get("kind") != "text":
        return ""
    params: list[tuple[str, str]] = [("q", state["text"]), ("model", model or "hybrid")]
    params += [("fold", "false")] if not fold else []
    params += [("style", s) for s in styles or []] + [("category", c) for c in categories or []]
    link = "?" + urlencode(params)
    return f"Share this search: [{html.escape(link)}]({link})"


def why_matched(info: dict[str, Any]) -> str:
    channels = info.get("channels") or {}
    if not channels:
        if info.get("variants"):
            return "Ranked with its concept: another variant of it matched."
        return "Filled in after the matching channels (no channel ranked it in its top results)."
    rows = [f"| {html.escape(c)} | {v:.3f} |" for c, v in sorted(channels.items(), key=lambda kv: -kv[1])]
    lead = f"Score {info['score']:.3f} ({html.escape(str(info['model']))}). Channels that returned it:"
    return "\n".join([lead, "", "| channel | its own score |", "|---|---|", *rows])


def detail(icon_id: str, shown: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything the detail view shows of one result; QueryError naming an unknown icon."""
    with open_search() as service:
        record = service.icon(icon_id)
        others = {
            v: service.records[v].name
            for v in shown.get(icon_id, {}).get("variants", [])
            if v in service.records
        }
    info = shown.get(icon_id, {"score": 0.0, "channels": {}, "group": icon_id, "model": "", "variants": []})
    full_name = f"{record.name} ({record.style})" if record.style else record.name
    captions = _captions().get(icon_id, [])
    lines = [
        f"### {html.escape(full_name)}",
        f"**Group:** `{html.escape(str(info['group']))}`"
        + (f" (also: {html.escape(', '.join(others.values()))})" if others else ""),
        f"**Style:** {html.escape(record.style or record.context or '-')} · "
        f"**Category:** {html.escape(record.category or '-')} · **Source:** {html.escape(record.source)}",
        f"**Captions:** {html.escape('; '.join(captions)) if captions else '(none yet)'}",
        f"**Tags:** {html.escape(', '.join(record.tags)) if record.tags else '-'}",
        "**Why it matched.** " + why_matched(info),
    ]
    return {"record": record, "name": record.name, "markdown": "\n\n".join(lines)}


# --- the page ------------------------------------------------------------------------------------


def page_state() -> tuple[Any, Any, Any, Any, str, bool]:
    """(model, compare, styles, categories updates, message, whether search is usable)."""
    try:
        models = available_models()
        with open_search() as service:
            styles, categories = service.facets()
    except (SearchUnavailable, NotReadyError) as exc:
        return (
            gr.update(choices=[], value=None),
            gr.update(choices=[NO_COMPARE], value=NO_COMPARE),
            gr.update(choices=[]),
            gr.update(choices=[]),
            f"## {TITLE}: not ready\n\n{html.escape(str(exc))}",
            False,
        )
    return (
        gr.update(choices=models, value=HYBRID),
        gr.update(choices=[NO_COMPARE, *models], value=NO_COMPARE),
        gr.update(choices=styles, value=[]),
        gr.update(choices=categories, value=[]),
        "",
        True,
    )


def models_api() -> list[str]:
    """The choices the page offers: hybrid search, then each channel."""
    return available_models()


# --- the page's panels: one builder each, wired together in build() -------------------------------


def _query_panel() -> SimpleNamespace:
    """Words, or an image uploaded or pasted; the searched image as it was prepared."""
    with gr.Row():
        query = gr.Textbox(label="Search text", placeholder="e.g. delete file", scale=4, elem_id="query")
        text_button = gr.Button("Search", variant="primary", scale=1, elem_id="search-text")
    with gr.Row():
        upload = gr.File(
            label="Image file (PNG, JPEG, GIF, WebP, BMP, SVG)",
            type="filepath",
            file_types=IMAGE_TYPES,
            height=120,
            elem_id="upload",
        )
        pasted = gr.Image(
            label="or paste a screenshot",
            sources=["clipboard"],  # files go through the upload box and its checks
            type="filepath",
            image_mode=None,  # passed on as is: the size checks run before any decoding
            height=160,
        )
        query_image = gr.Image(
            label="Searched image", interactive=False, type="pil", height=160, elem_id="query-image"
        )
        image_button = gr.Button("Search image", scale=0, elem_id="search-image")
    return SimpleNamespace(
        query=query,
        text_button=text_button,
        upload=upload,
        pasted=pasted,
        query_image=query_image,
        image_button=image_button,
    )


def _options_panel(style_choices: list[str], category_choices: list[str]) -> SimpleNamespace:
    """Which channel (and one to compare), folding, and the style and category filters."""
    with gr.Row():
        # Choices come on page load (models come and go with icon_embeddings); an unknown
        # value is answered with the list of known ones.
        model = gr.Dropdown(
            label="Search with", choices=[], elem_id="model", scale=2, allow_custom_value=True
        )
        compare = gr.Dropdown(
            label="Compare with",
            choices=[NO_COMPARE],
            value=NO_COMPARE,
            scale=2,
            allow_custom_value=True,
            elem_id="compare",
        )
        fold = gr.Checkbox(
            value=True, label="One result per icon (variants folded in)", scale=1, elem_id="fold"
        )
    with gr.Row():
        styles = gr.CheckboxGroup(label="Style", choices=style_choices, elem_id="styles", scale=1)
        categories = gr.Dropdown(
            label="Category",
            choices=category_choices,
            multiselect=True,
            allow_custom_value=True,  # catalogs change between page loads
            elem_id="categories",
            scale=2,
        )
    return SimpleNamespace(model=model, compare=compare, fold=fold, styles=styles, categories=categories)


def _results_panel() -> SimpleNamespace:
    """What the search found (and the compared channel beside it), its summary, link and paging."""
    message = gr.Markdown(elem_id="message")
    share = gr.Markdown(elem_id="share-link")  # a link to the text search shown
    with gr.Row():
        first = gr.HTML(
            elem_id="results",
            js_on_load=GRID_JS,
            css_template=GRID_CSS,
            padding=False,
            head=DETAIL_CSS,
        )
        second = gr.HTML(
            elem_id="compare-results",
            js_on_load=GRID_JS,
            css_template=GRID_CSS,
            padding=False,
            visible=False,
        )
    more = gr.Button("More results", visible=False, elem_id="more")
    return SimpleNamespace(message=message, share=share, first=first, second=second, more=more)


def _detail_panel() -> SimpleNamespace:
    """One result's detail, floating over the grid (DETAIL_CSS): preview, facts, downloads, thumbs."""
    with gr.Column(visible=False, elem_id="detail") as detail_box, gr.Row():
        preview = gr.Image(
            label="Preview",
            interactive=False,
            type="filepath",
            height=PREVIEW_SIZE,
            scale=1,
            elem_id="detail-image",
        )
        with gr.Column(scale=2):
            info = gr.Markdown(elem_id="detail-info")
            name = gr.Textbox(label="Name", interactive=False, buttons=["copy"], elem_id="detail-name")
            with gr.Row():
                ink = gr.ColorPicker(value=DEFAULT_INK, label="Colour", elem_id="ink-colour")
                stroke = gr.Slider(
                    *STROKE_WIDTHS, value=2.0, step=0.25, label="Stroke width", elem_id="stroke-width"
                )
                transparent = gr.Checkbox(value=True, label="Transparent background", elem_id="transparent")
            with gr.Row():
                svg_button = gr.DownloadButton("Download SVG", elem_id="download-svg")
                png_size = gr.Dropdown(
                    label="PNG size (px)",
                    choices=PNG_SIZES,
                    value=DEFAULT_PNG_SIZE,
                    elem_id="png-size",
                )
                png_button = gr.DownloadButton("Download PNG", elem_id="download-png")
            with gr.Row():
                up = gr.Button("Relevant (thumbs up)", elem_id="thumbs-up")
                down = gr.Button("Not relevant (thumbs down)", elem_id="thumbs-down")
                close = gr.Button("Close", elem_id="detail-close")
            judged = gr.Markdown(elem_id="judge-message")
    return SimpleNamespace(
        box=detail_box,
        preview=preview,
        info=info,
        name=name,
        ink=ink,
        stroke=stroke,
        transparent=transparent,
        svg_button=svg_button,
        png_size=png_size,
        png_button=png_button,
        up=up,
        down=down,
        close=close,
        judged=judged,
    )


def build() -> gr.Blocks:
    from icon_pipeline.search.service import catalog_facets

    try:  # the choices API clients are checked against; refreshed on every page load
        style_choices, category_choices = catalog_facets()
    except NotReadyError:
        style_choices, category_choices = [], []
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nDescribe what the icon is for, or drop a screenshot or an SVG of one.")
        status = gr.Markdown(elem_id="status")
        query_state = gr.State(None)  # {"kind": "text", "text"} or {"kind": "image", "image", "label"}
        pages = gr.State(1)
        shown = gr.State({})  # icon id -> what the detail view needs
        selected = gr.State(None)  # icon id in the detail view
        with gr.Column(visible=True) as main:
            asked, chosen, found, detail_view = (
                _query_panel(),
                _options_panel(style_choices, category_choices),
                _results_panel(),
                _detail_panel(),
            )
        query, text_button, upload, pasted = asked.query, asked.text_button, asked.upload, asked.pasted
        query_image, image_button = asked.query_image, asked.image_button
        model, compare, fold = chosen.model, chosen.compare, chosen.fold
        styles, categories = chosen.styles, chosen.categories
        message, share, first, second, more = (
            found.message,
            found.share,
            found.first,
            found.second,
            found.more,
        )
        detail_box, preview, info, name = (
            detail_view.box,
            detail_view.preview,
            detail_view.info,
            detail_view.name,
        )
        ink, stroke, transparent = detail_view.ink, detail_view.stroke, detail_view.transparent
        svg_button, png_size, png_button = (
            detail_view.svg_button,
            detail_view.png_size,
            detail_view.png_button,
        )
        up, down, close, judged = detail_view.up, detail_view.down, detail_view.close, detail_view.judged

        search_inputs = [model, compare, fold, styles, categories]
        search_outputs = [first, second, message, more, shown]

        def _query_error(exc: QueryError) -> tuple:
            """Empty panels and the reason, for a query refused before any search."""
            message = f"**Error:** {html.escape(str(exc))}"
            return ("", "", message, gr.update(visible=False), {}, None, 1, None)

        def by_text(text: str, *options: Any) -> tuple:
            try:
                state = {"kind": "text", "text": validate_text_query(text or "")}
            except QueryError as exc:
                return _query_error(exc)
            return (*_search(state, *options, 1), state, 1, None)

        def by_image(upload_path: str | None, pasted_path: str | None, *options: Any) -> tuple:
            try:
                image, state = prepare_image(upload_path, pasted_path)
            except QueryError as exc:
                return _query_error(exc)
            return (*_search(state, *options, 1), state, 1, image)

        def again(state: dict | None, *options: Any) -> tuple:
            return _search(state, *options, 1)

        def next_page(state: dict | None, page_count: int, *options: Any) -> tuple:
            count = min(MAX_PAGES, int(page_count or 1) + 1)
            return (*_search(state, *options, count), count)

        text_outputs = [*search_outputs, query_state, pages, query_image]
        searched = gr.on(
            [text_button.click, query.submit],
            by_text,
            [query, *search_inputs],
            text_outputs,
            api_name="search_by_text",
        )
        searched.then(share_link, [query_state, *search_inputs], share, api_visibility="private")

        def from_url(request: gr.Request) -> tuple:
            """The page as a shared link asks for it: ?q=words&model=..&style=..&category=..&fold=false."""
            *updates, note, ready = page_state()
            asked = url_search(request)
            if not ready or not asked["q"]:
                return (*updates, note, gr.update(visible=ready), gr.update(), *[gr.update()] * 8, "")
            chosen = [
                asked["model"] or "hybrid",
                NO_COMPARE,
                asked["fold"],
                asked["style"],
                asked["category"],
            ]
            model_update, compare_update, style_update, category_update = updates
            model_update["value"], style_update["value"] = chosen[0], asked["style"]
            category_update["value"] = asked["category"]
            answer = by_text(asked["q"], *chosen)
            return (
                model_update,
                compare_update,
                style_update,
                category_update,
                note,
                gr.update(visible=True),
                asked["q"],
                *answer,
                share_link(answer[5], *chosen),
            )

        demo.load(
            from_url,
            None,
            [model, compare, styles, categories, status, main, query, *text_outputs, share],
            api_visibility="private",
        )
        image_button.click(
            by_image, [upload, pasted, *search_inputs], text_outputs, api_name="search_by_image"
        )
        gr.on(
            [model.input, compare.input, fold.input, styles.input, categories.input],
            again,
            [query_state, *search_inputs],
            search_outputs,
            api_visibility="private",
        )
        more.click(
            next_page,
            [query_state, pages, *search_inputs],
            [*search_outputs, pages],
            api_visibility="private",
        )

        def open_detail(evt: gr.EventData, known: dict, size: int, *style: Any) -> tuple:
            icon_id = getattr(evt, "icon_id", None) or ""
            try:
                shown_detail = detail(icon_id, known)
                record = shown_detail["record"]
                preview_path = render_png(record.file_path, record.format, PREVIEW_SIZE, record.name)
                svg_path, png_path = download_files(record, download_options(size, *style))
            except (QueryError, SearchUnavailable) as exc:
                return (
                    gr.update(visible=True),
                    None,
                    f"**Error:** {html.escape(str(exc))}",
                    "",
                    gr.update(value=None, visible=False),
                    gr.update(value=None),
                    None,
                    "",
                )
            return (
                gr.update(visible=True),
                str(preview_path),
                shown_detail["markdown"],
                shown_detail["name"],
                gr.update(value=str(svg_path) if svg_path else None, visible=svg_path is not None),
                gr.update(value=str(png_path)),
                icon_id,
                "",
            )

        detail_outputs = [detail_box, preview, info, name, svg_button, png_button, selected, judged]
        for panel in (first, second):
            panel.click(
                open_detail,
                [shown, png_size, ink, stroke, transparent],
                detail_outputs,
                api_visibility="private",
            )

        def redraw(icon_id: str | None, size: int, *style: Any) -> tuple:
            """Both downloads again, in the chosen size, colour, stroke and background."""
            if not icon_id:
                return gr.update(), gr.update(), ""
            try:
                with open_search() as service:
                    record = service.icon(icon_id)
                svg_path, png_path = download_files(record, download_options(size, *style))
            except (QueryError, SearchUnavailable) as exc:
                return gr.update(value=None), gr.update(value=None), f"**Error:** {html.escape(str(exc))}"
            return gr.update(value=str(svg_path) if svg_path else None), gr.update(value=str(png_path)), ""

        gr.on(
            [png_size.change, ink.change, stroke.release, transparent.change],
            redraw,
            [selected, png_size, ink, stroke, transparent],
            [svg_button, png_button, judged],
            api_visibility="private",
        )
        close.click(lambda: (gr.update(visible=False), None), None, [detail_box, selected])

        def judge(relevant: bool) -> Callable[..., str]:
            def store(icon_id: str | None, state: dict | None, known: dict, request: gr.Request) -> str:
                return record_judgement(demo, request, icon_id, state, known, relevant)

            return store

        judge_inputs = [selected, query_state, shown]
        up.click(judge(True), judge_inputs, judged, api_visibility="private")
        down.click(judge(False), judge_inputs, judged, api_visibility="private")
        gr.api(models_api, api_name="available_models", api_visibility="undocumented")
    return demo


def record_judgement(
    blocks: gr.Blocks,
    request: gr.Request | None,
    icon_id: str | None,
    state: dict | None,
    known: dict,
    relevant: bool,
) -> str:
    """Store a thumbs up / down on the result in the detail view; the message says what was kept."""
    from icon_pipeline.apps import AppError, signed_in_user
    from icon_pipeline.search.judgements import record_judgement as store

    query = _query_of(state)
    if not icon_id or query is None:
        return "**Error:** search, then open a result, before judging it"
    try:
        user = signed_in_user(blocks, request)
        with open_search() as service:
            service.icon(icon_id)  # only icons of the catalog are judged
            stored = store(
                service.conn,
                query,
                icon_id,
                relevant,
                model=str(known.get(icon_id, {}).get("model", "")),
                judged_by=user,
            )
    except (AppError, QueryError, SearchUnavailable) as exc:
        return f"**Error:** {html.escape(str(exc))}"
    verdict = "relevant" if relevant else "not relevant"
    who = f" by {html.escape(user)}" if user else ""
    return (
        f"Saved: {html.escape(icon_id)} is {verdict} for this query{who} ({stored.judged_at:%Y-%m-%d %H:%M})."
    )
