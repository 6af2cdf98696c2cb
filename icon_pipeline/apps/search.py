"""Icon search for designers: a text box or an image (upload or paste) -> a grid of icons with names
and scores. Hybrid search (every channel merged, as the benchmark's `hybrid` row) by default; any
single channel can be picked instead, and a second one shown beside it to compare by eye.

Built on `service.SearchService`, the same code as `icon-pipeline search`: each request opens its
own database connection; loaded checkpoints are shared by all requests.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

import gradio as gr
import psycopg

from icon_pipeline.model.checkpoint import CheckpointError, EncoderBundle
from icon_pipeline.model.sentence_encoder import TextEncoderError
from icon_pipeline.search.index import EmbeddingIndexError
from icon_pipeline.search.query import QueryError, SearchHit
from icon_pipeline.search.service import NotReadyError, SearchService

TITLE = "Icon search"
EMBEDDINGS_ASSET = "icon_embeddings"
NO_COMPARE = "(none)"
DEFAULT_K = 24
MAX_K = 96

# Loaded checkpoints, shared by every request (each request has its own connection).
_bundles: dict[str, EncoderBundle] = {}
_bundles_lock = threading.Lock()


class SearchUnavailable(RuntimeError):
    """The index cannot be used (database down, no models); the message says what to do."""


def _service() -> SearchService:
    from icon_pipeline.core.database import DatabaseError, describe_url, ensure_database

    try:
        url = ensure_database().libpq_url
    except DatabaseError as exc:
        raise SearchUnavailable(f"the search index is unreachable: {exc}") from None
    try:
        conn = psycopg.connect(url, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError:
        raise SearchUnavailable(
            f"the search index is unreachable: cannot connect to {describe_url(url)}"
        ) from None
    return SearchService(conn, bundles=_bundles)  # the checkpoints this process has loaded already


def available_models() -> list[str]:
    """hybrid, then every single channel; SearchUnavailable if the index is empty or down."""
    service = _service()
    try:
        models = service.models()
    finally:
        service.close()
    if "hybrid" not in models:
        raise SearchUnavailable(
            f"the search index has no models yet: materialize `{EMBEDDINGS_ASSET}` "
            f"(`icon-pipeline materialize {EMBEDDINGS_ASSET}`), then reload this page"
        )
    return models


def _gallery(hits: list[SearchHit]) -> list[tuple[str, str]]:
    return [(h.png_path, f"{h.name} · {h.score:.3f}") for h in hits if h.png_path]


def _run(
    models: list[str], k: float | None, do: Callable[[SearchService, str, int], list[SearchHit]]
) -> tuple:
    """Run `do` for each chosen model: (first gallery, second gallery, message)."""
    k_int = int(k or DEFAULT_K)
    if not 1 <= k_int <= MAX_K:
        return [], [], f"**Error:** show between 1 and {MAX_K} icons, got {k_int}"
    galleries: list[list] = [[], []]
    notes = []
    try:
        service = _service()
        try:
            for slot, model in enumerate(models[:2]):
                try:
                    with _bundles_lock:  # one model load at a time; searching itself is per connection
                        model = service.resolve(model)
                        hits = do(service, model, k_int)
                except QueryError as exc:
                    if slot == 0:
                        raise
                    notes.append(f"**{html.escape(model)}**: {html.escape(str(exc))}")
                    continue
                galleries[slot] = _gallery(hits)
                top = f"{hits[0].name} ({hits[0].score:.3f})" if hits else "nothing"
                note = f"**{html.escape(model)}**: {len(hits)} icons, best {html.escape(top)}"
                missing = [h for h in hits if not h.png_path]
                if missing:
                    note += f"; {len(missing)} without a render: " + ", ".join(h.icon_id for h in missing[:5])
                notes.append(note)
        finally:
            service.close()
    except (
        QueryError,
        SearchUnavailable,
        NotReadyError,
        EmbeddingIndexError,
        CheckpointError,
        TextEncoderError,
    ) as exc:
        return [], [], f"**Error:** {html.escape(str(exc))}"
    except psycopg.OperationalError:
        return [], [], "**Error:** the search index became unreachable during the query; try again"
    return galleries[0], galleries[1], "  \n".join(notes)


def _models(model: str | None, compare: str | None) -> list[str]:
    return [model or "hybrid"] + ([compare] if compare and compare not in (NO_COMPARE, model) else [])


def search_by_text(model: str, compare: str | None, query: str, k: float | None) -> tuple[list, list, str]:
    """(gallery of `model`, gallery of `compare`, message) for a text query."""
    return _run(_models(model, compare), k, lambda service, m, n: service.text(query or "", m, n))


def search_by_image(
    model: str, compare: str | None, upload: str | None, pasted: str | None, k: float | None
) -> tuple[list, list, str]:
    """Like search_by_text for an image: a pasted one wins over an uploaded file."""
    source = pasted or upload
    if not source:
        return [], [], "**Error:** upload or paste an image first (PNG, JPEG, GIF, WebP, BMP)"
    return _run(_models(model, compare), k, lambda service, m, n: service.image(source, m, n))


def models_api() -> list[str]:
    """The choices the page offers: hybrid search, then each channel."""
    return available_models()


def page_state() -> tuple[Any, Any, str, bool]:
    """(model dropdown update, compare dropdown update, message, whether search is usable)."""
    try:
        models = available_models()
    except SearchUnavailable as exc:
        return (
            gr.update(choices=[], value=None),
            gr.update(choices=[NO_COMPARE], value=NO_COMPARE),
            f"## {TITLE}: not ready\n\n{html.escape(str(exc))}",
            False,
        )
    return (
        gr.update(choices=models, value="hybrid"),
        gr.update(choices=[NO_COMPARE, *models], value=NO_COMPARE),
        "",
        True,
    )


def build() -> gr.Blocks:
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nDescribe what the icon is for, or drop a screenshot of one.")
        status = gr.Markdown(elem_id="status")
        with gr.Column(visible=True) as main:
            with gr.Row():
                # Choices are refreshed on every page load (models come and go with icon_embeddings);
                # any value is accepted and an unknown one is answered with the list of known ones.
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
                k = gr.Slider(1, MAX_K, value=DEFAULT_K, step=1, label="Icons to show", scale=1)
            with gr.Row():
                query = gr.Textbox(
                    label="Search text", placeholder="e.g. delete file", scale=4, elem_id="query"
                )
                text_button = gr.Button("Search text", variant="primary", scale=1, elem_id="search-text")
            with gr.Row():
                upload = gr.File(label="Image file (PNG, JPEG, GIF, WebP, BMP)", type="filepath", height=120)
                pasted = gr.Image(
                    label="or paste a screenshot",
                    sources=["clipboard"],  # files go through the upload box and its checks
                    type="filepath",
                    image_mode=None,  # passed on as is: the size checks run before any decoding
                    height=160,
                )
                image_button = gr.Button("Search image", scale=0)
            message = gr.Markdown(elem_id="message")
            with gr.Row():
                first = gr.Gallery(
                    label="Results",
                    columns=4,
                    height=560,
                    allow_preview=False,
                    fit_columns=False,
                    elem_id="results",
                )
                second = gr.Gallery(
                    label="Compare with", columns=4, height=560, allow_preview=False, fit_columns=False
                )

        def refresh() -> tuple:
            model_update, compare_update, note, ready = page_state()
            return model_update, compare_update, note, gr.update(visible=ready)

        demo.load(refresh, None, [model, compare, status, main], api_visibility="private")
        outputs = [first, second, message]
        gr.on(
            [text_button.click, query.submit],
            search_by_text,
            [model, compare, query, k],
            outputs,
            api_name="search_by_text",
        )
        image_button.click(
            search_by_image, [model, compare, upload, pasted, k], outputs, api_name="search_by_image"
        )
        gr.api(models_api, api_name="available_models", api_visibility="undocumented")
    return demo
