"""Search the icon index by text or by image, with every query checked before it costs anything.

Choices, documented here because a caller (CLI, Gradio app) shows these messages to people:

- Text: whitespace is collapsed; an empty query is refused; a query longer than
  MAX_QUERY_CHARS (500) is refused rather than silently truncated, because the text tower only
  reads its first `max_length` tokens (16 to 64) and a silently cut query would search for
  something the user did not see.
- Images: any file PIL can decode (PNG, JPEG, GIF, WebP, BMP), a path, bytes or a PIL image.
  Unreadable and truncated files are refused, and so is anything over MAX_QUERY_PIXELS (a
  decompression-bomb guard checked from the header, before pixels are decoded). Animated images
  (GIF, APNG, WebP) use their first frame. Transparency is composited on white, and any size or
  aspect is padded to a square on white, centred, then resized to 224 px: the same framing as the
  light-theme renders the index was built from.

Plain Python: no Dagster import.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import psycopg
from PIL import Image, ImageOps, UnidentifiedImageError

from icon_pipeline.index import ModelIndex, get_model_index, search_vectors
from icon_pipeline.lexical import LibraryKeywords

# Keyword search (BM25 over names, tags and captions) is offered beside the index's models by
# this name, the name of its row in the benchmark report.
KEYWORD_SEARCH = "bm25"
MAX_QUERY_CHARS = 500
MAX_QUERY_PIXELS = 40_000_000  # the renderer's own limit, well below PIL's bomb threshold
MAX_QUERY_BYTES = 50_000_000
QUERY_IMAGE_SIZE = 224
WHITE = (255, 255, 255)


class Embedder(Protocol):
    """What search and the benchmark need from a model (modeling.EncoderBundle satisfies it)."""

    @property
    def dim(self) -> int: ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


class QueryError(ValueError):
    """A query that cannot be searched; the message says what is wrong and what is accepted."""


@dataclass(frozen=True)
class SearchHit:
    icon_id: str
    name: str
    group_id: str
    score: float  # cosine similarity (keyword search: the BM25 score)
    png_path: str | None


# icon_id -> (name, png_path)
CatalogLookup = Mapping[str, tuple[str, str | None]]
ImageQuery = str | Path | bytes | Image.Image


def validate_text_query(query: str) -> str:
    """The query with whitespace collapsed; QueryError if it is empty or too long."""
    if not isinstance(query, str):
        raise QueryError(f"text query must be a string, got {type(query).__name__}")
    cleaned = " ".join(query.split())
    if not cleaned:
        raise QueryError("text query is empty: type a few words, e.g. 'delete file'")
    if len(cleaned) > MAX_QUERY_CHARS:
        raise QueryError(
            f"text query is {len(cleaned)} characters long; the limit is {MAX_QUERY_CHARS} "
            "(a few words work best)"
        )
    return cleaned


def _open(source: ImageQuery, label: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes):
        if len(source) > MAX_QUERY_BYTES:
            raise QueryError(f"{label}: {len(source)} bytes is over the {MAX_QUERY_BYTES}-byte limit")
        data = source
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > MAX_QUERY_BYTES:
                raise QueryError(f"{label}: file is {size} bytes, over the {MAX_QUERY_BYTES}-byte limit")
            data = path.read_bytes()
        except OSError as exc:
            raise QueryError(f"{label}: cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise QueryError(f"{label}: empty file")
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that: make it an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise QueryError(f"{label}: image is too large (decompression-bomb guard)") from None
    except UnidentifiedImageError:
        raise QueryError(f"{label}: not an image PIL can read (PNG, JPEG, GIF, WebP, BMP)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise QueryError(f"{label}: unreadable image ({exc})") from None


def prepare_query_image(
    source: ImageQuery, size: int = QUERY_IMAGE_SIZE, label: str | None = None
) -> Image.Image:
    """An RGB `size` x `size` image framed like the renders; QueryError for anything unusable."""
    label = label or (str(source) if isinstance(source, str | Path) else "query image")
    image = _open(source, label)
    width, height = image.size
    if width < 1 or height < 1:
        raise QueryError(f"{label}: image has no pixels ({width}x{height})")
    if width * height > MAX_QUERY_PIXELS:
        raise QueryError(
            f"{label}: {width}x{height} = {width * height} pixels is over the {MAX_QUERY_PIXELS}-pixel limit"
        )
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # animated: the first frame
        image.load()
        image = ImageOps.exif_transpose(image) or image
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, WHITE)
            flat.paste(rgba, mask=rgba.getchannel("A"))
            image = flat
        else:
            image = image.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated files fail here, when pixels are decoded ("image file is truncated").
        raise QueryError(f"{label}: unreadable or truncated image ({exc})") from None
    side = max(image.size)
    square = Image.new("RGB", (side, side), WHITE)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square.resize((size, size), Image.Resampling.BICUBIC) if side != size else square


def _hits(
    conn: psycopg.Connection,
    model: ModelIndex,
    vector: np.ndarray,
    k: int,
    catalog: CatalogLookup,
    exact: bool,
) -> list[SearchHit]:
    hits = search_vectors(conn, model, vector, k, exact=exact)
    results = []
    for hit in hits:
        # An icon indexed but missing from the catalog (a stale index) still shows, by id.
        name, png_path = catalog.get(hit.icon_id, (hit.icon_id, None))
        results.append(SearchHit(hit.icon_id, name, hit.group_id, hit.score, png_path))
    return results


def _check_k(k: int) -> None:
    if not 1 <= k <= 1000:
        raise QueryError(f"k must be between 1 and 1000, got {k}")


def search_text(
    conn: psycopg.Connection,
    bundle: Embedder,
    model_id: str,
    query: str,
    k: int = 10,
    *,
    catalog: CatalogLookup | None = None,
    exact: bool = False,
) -> list[SearchHit]:
    """The k icons closest to a text query (HNSW by default; exact=True scans every row)."""
    text = validate_text_query(query)
    _check_k(k)
    model = get_model_index(conn, model_id)  # fail on an unknown model before running the encoder
    vector = bundle.embed_texts([text])[0]
    return _hits(conn, model, vector, k, catalog or {}, exact)


def search_image(
    conn: psycopg.Connection,
    bundle: Embedder,
    model_id: str,
    image: ImageQuery,
    k: int = 10,
    *,
    catalog: CatalogLookup | None = None,
    exact: bool = False,
) -> list[SearchHit]:
    """The k icons closest to an image (a path, bytes or PIL image of any size; see the module doc)."""
    _check_k(k)
    prepared = prepare_query_image(image)
    model = get_model_index(conn, model_id)
    vector = bundle.embed_images([prepared])[0]
    return _hits(conn, model, vector, k, catalog or {}, exact)


def search_keywords(
    keywords: LibraryKeywords, query: str, k: int = 10, *, catalog: CatalogLookup | None = None
) -> list[SearchHit]:
    """Icons whose name, tags or captions share a word with the query, best BM25 score first
    (fewer than k when fewer match: keyword search does not pad with guesses)."""
    text = validate_text_query(query)
    _check_k(k)
    catalog = catalog or {}
    results = []
    for icon_id, score in keywords.index.search(text, k):
        name, png_path = catalog.get(icon_id, (icon_id, None))
        results.append(SearchHit(icon_id, name, keywords.groups.get(icon_id, icon_id), score, png_path))
    return results
