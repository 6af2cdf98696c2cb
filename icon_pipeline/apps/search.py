"""Icon search for designers: a text box or an image (upload or paste) -> a grid of icons with
names and cosine scores from the pgvector index, for one model or two side by side (base vs
fine-tuned, compared by eye). Keyword search (`bm25`: names, tags and captions) is offered beside
the models, for text.

Which checkpoint embeds a query: the one `icon_embeddings` recorded beside the model's rows
(`service.model_checkpoint`). Loaded checkpoints are kept in memory.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

import gradio as gr
import psycopg

from icon_pipeline.apps.common import load_icons
from icon_pipeline.index import EmbeddingIndexError, list_models
from icon_pipeline.lexical import LibraryKeywords, library_keywords
from icon_pipeline.search import (
    KEYWORD_SEARCH,
    QueryError,
    SearchHit,
    search_image,
    search_keywords,
    search_text,
)
from icon_pipeline.service import NotReadyError, model_checkpoint

TITLE = "Icon search"
EMBEDDINGS_ASSET = "icon_embeddings"
NO_COMPARE = "(none)"
DEFAULT_K = 24
MAX_K = 96

_bundles: dict[tuple[str, str], Any] = {}
_bundles_lock = threading.Lock()


class SearchUnavailable(RuntimeError):
    """The index cannot be used (database down, no models); the message says what to do."""


def _connect() -> psycopg.Connection:
    from icon_pipeline.database import DatabaseError, describe_url, ensure_database

    try:
        url = ensure_database().libpq_url
    except DatabaseError as exc:
        raise SearchUnavailable(f"the search index is unreachable: {exc}") from None
    try:
        return psycopg.connect(url, connect_timeout=5)
    except psycopg.OperationalError:
        raise SearchUnavailable(
            f"the search index is unreachable: cannot connect to {describe_url(url)}"
        ) from None


def available_models() -> list[str]:
    """Model ids with stored embeddings; SearchUnavailable if none or the database is down."""
    with _connect() as conn:
        models = [m.model_id for m in list_models(conn)]
    if not models:
        raise SearchUnavailable(
            f"the search index has no models yet: materialize `{EMBEDDINGS_ASSET}` "
            f"(`icon-pipeline materialize {EMBEDDINGS_ASSET}`), then reload this page"
        )
    return models


def _bundle(checkpoint: str, model_id: str):
    from icon_pipeline.modeling import CheckpointError, load_checkpoint

    key = (model_id, checkpoint)
    with _bundles_lock:
        if key not in _bundles:
            try:
                _bundles[key] = load_checkpoint(checkpoint)
            except CheckpointError as exc:
                raise SearchUnavailable(f"model {model_id!r}: cannot load its checkpoint: {exc}") from None
        return _bundles[key]


def _library_keywords() -> LibraryKeywords:
    try:
        return library_keywords()
    except FileNotFoundError:
        raise SearchUnavailable(
            "keyword search needs the icon catalog and the training pairs: materialize `training_pairs`"
        ) from None


def _catalog() -> dict[str, tuple[str, str | None]]:
    try:
        # The variant (style or folder) tells the outline and filled icon of one name apart.
        return {
            i.icon_id: (f"{i.name} ({i.variant})" if i.variant else i.name, i.png_path)
            for i in load_icons().values()
        }
    except FileNotFoundError:
        return {}  # no catalog: hits still show by id and score


def _gallery(hits: list[SearchHit]) -> list[tuple[str, str]]:
    return [(h.png_path, f"{h.name} · {h.score:.3f}") for h in hits if h.png_path]


def _run(
    models: list[str],
    k: float | None,
    do: Callable[[psycopg.Connection, Any, str, int], list[SearchHit]],
    keywords: Callable[[int], list[SearchHit]] | None = None,
) -> tuple[list, list, str]:
    """Run `do` for each model (`keywords` for keyword search; None: the query has no words)."""
    k_int = int(k or DEFAULT_K)
    if not 1 <= k_int <= MAX_K:
        return [], [], f"**Error:** show between 1 and {MAX_K} icons, got {k_int}"
    galleries: list[list] = [[], []]
    notes = []
    try:
        with _connect() as conn:
            for slot, model_id in enumerate(models[:2]):
                if model_id == KEYWORD_SEARCH:
                    if keywords is None:
                        notes.append(f"**{KEYWORD_SEARCH}**: keyword search takes words, not an image")
                        continue
                    hits = keywords(k_int)
                else:
                    # An unknown model: UnknownModelError says which ones exist, and nothing is loaded.
                    bundle = _bundle(model_checkpoint(conn, model_id), model_id)
                    hits = do(conn, bundle, model_id, k_int)
                galleries[slot] = _gallery(hits)
                missing = [h for h in hits if not h.png_path]
                top = f"{hits[0].name} ({hits[0].score:.3f})" if hits else "nothing"
                note = f"**{html.escape(model_id)}**: {len(hits)} icons, best {html.escape(top)}"
                if missing:
                    note += f"; {len(missing)} without a render: " + ", ".join(h.icon_id for h in missing[:5])
                notes.append(note)
    except (QueryError, SearchUnavailable, NotReadyError, EmbeddingIndexError) as exc:
        return [], [], f"**Error:** {html.escape(str(exc))}"
    except psycopg.OperationalError:
        return [], [], "**Error:** the search index became unreachable during the query; try again"
    return galleries[0], galleries[1], "  \n".join(notes)


def _models(model: str | None, compare: str | None) -> list[str] | str:
    if not model:
        return "**Error:** choose a model"
    return [model] + ([compare] if compare and compare not in (NO_COMPARE, model) else [])


def search_by_text(model: str, compare: str | None, query: str, k: float | None) -> tuple[list, list, str]:
    """(gallery of `model`, gallery of `compare`, message) for a text query."""
    models = _models(model, compare)
    if isinstance(models, str):
        return [], [], models
    catalog = _catalog()
    return _run(
        models,
        k,
        lambda conn, bundle, m, n: search_text(conn, bundle, m, query or "", n, catalog=catalog),
        keywords=lambda n: search_keywords(_library_keywords(), query or "", n, catalog=catalog),
    )


def search_by_image(
    model: str, compare: str | None, upload: str | None, pasted: str | None, k: float | None
) -> tuple[list, list, str]:
    """Like search_by_text for an image: a pasted one wins over an uploaded file."""
    models = _models(model, compare)
    if isinstance(models, str):
        return [], [], models
    source = pasted or upload
    if not source:
        return [], [], "**Error:** upload or paste an image first (PNG, JPEG, GIF, WebP, BMP)"
    catalog = _catalog()
    return _run(
        models, k, lambda conn, bundle, m, n: search_image(conn, bundle, m, source, n, catalog=catalog)
    )


def models_api() -> list[str]:
    """The model ids the page offers, then keyword search."""
    return [*available_models(), KEYWORD_SEARCH]


def page_state() -> tuple[dict, dict, str, bool]:
    """(model dropdown update, compare dropdown update, message, whether search is usable)."""
    try:
        models = available_models()
    except SearchUnavailable as exc:
        return (
            gr.update(choices=[], value=None),
            gr.update(choices=[NO_COMPARE], value=NO_COMPARE),
            (f"## {TITLE}: not ready\n\n{html.escape(str(exc))}"),
            False,
        )
    compare = models[1] if len(models) > 1 else NO_COMPARE
    return (
        gr.update(choices=[*models, KEYWORD_SEARCH], value=models[0]),
        gr.update(choices=[NO_COMPARE, *models, KEYWORD_SEARCH], value=compare),
        "",
        True,
    )


def build() -> gr.Blocks:
    _catalog()  # read once at start-up: the first query is as fast as the next ones
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nDescribe what the icon is for, or drop a screenshot of one.")
        status = gr.Markdown(elem_id="status")
        with gr.Column(visible=True) as main:
            with gr.Row():
                # Choices are refreshed on every page load (models come and go with icon_embeddings);
                # any value is accepted and an unknown model is answered with the list of known ones.
                model = gr.Dropdown(
                    label="Model", choices=[], elem_id="model", scale=2, allow_custom_value=True
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
                # Four columns leave room for "name · score" under each icon.
                first = gr.Gallery(
                    label="Model",
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
