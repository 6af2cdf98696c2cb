"""Search queries, checked before they cost anything: text cleaned, images framed like the renders.

Choices, documented here because a caller (CLI, Gradio app) shows these messages to people:

- Text: whitespace is collapsed; an empty query is refused; a query longer than
  MAX_QUERY_CHARS (500) is refused rather than silently truncated, because the text tower only
  reads its first `max_length` tokens (16 to 64) and a silently cut query would search for
  something the user did not see.
- Images: any file PIL can decode (PNG, JPEG, GIF, WebP, BMP), or an SVG (rendered with the
  project's renderer, as the library itself was), given as a path, bytes or a PIL image.
  Unreadable and truncated files are refused, and so is anything over MAX_QUERY_PIXELS (a
  decompression-bomb guard checked from the header, before pixels are decoded). Animated images
  (GIF, APNG, WebP) use their first frame. Transparency is composited on white, and any size or
  aspect is padded to a square on white, centred, then resized to 224 px: the same framing as the
  light-theme renders the index was built from.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
    score: float  # hybrid: the fused score; one channel: its cosine similarity (keyword search: BM25)
    png_path: str | None
    channel_scores: dict[str, float] = field(default_factory=dict)  # each channel's own score
    style: str = ""  # the catalog's style, or the sub-folder/page that tells variants apart
    category: str = ""
    file_path: str = ""  # the icon's source file (SVG or PNG) as the catalog records it
    confidence: float | None = None  # hybrid: P(relevant), one scale for every query; None: not rated


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


def is_svg(data: bytes) -> bool:
    """SVG by content, not by name: an upload's suffix is whatever the browser kept."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"\x1f\x8b"):  # svgz
        return True
    return head.startswith(b"<svg") or (
        head.startswith((b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in data[:4096].lower()
    )


def _render_svg(data: bytes, label: str) -> Image.Image:
    """An SVG query drawn by the renderer the index was built with (same theme, same framing)."""
    import tempfile

    from icon_pipeline.render.rasterize import RenderError, RenderSettings, render_icon_isolated

    with tempfile.TemporaryDirectory(prefix="svg-query-") as folder:
        path = Path(folder) / "query.svg"
        path.write_bytes(data)
        try:
            # In a process of its own: a hostile file that would never finish is stopped.
            return render_icon_isolated(path, RenderSettings(size=QUERY_IMAGE_SIZE), fmt="svg")
        except RenderError as exc:
            # exc.reason only: the item is the temporary file, which means nothing to the user.
            raise QueryError(f"{label}: cannot render this SVG ({exc.reason})") from None


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
    if is_svg(data):
        return _render_svg(data, label)
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that: make it an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise QueryError(f"{label}: image is too large (decompression-bomb guard)") from None
    except UnidentifiedImageError:
        raise QueryError(f"{label}: not an image PIL can read (PNG, JPEG, GIF, WebP, BMP, SVG)") from None
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


def check_k(k: int) -> None:
    if not 1 <= k <= 1000:
        raise QueryError(f"k must be between 1 and 1000, got {k}")
