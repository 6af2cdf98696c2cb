"""Query checks: text limits, bad and hostile images refused with the reason, any image framed alike."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icon_pipeline.search.query import (
    MAX_QUERY_CHARS,
    QueryError,
    prepare_query_image,
    validate_text_query,
)


def test_text_query_validation() -> None:
    assert validate_text_query("  hide \n layer ") == "hide layer"
    with pytest.raises(QueryError, match="text query is empty"):
        validate_text_query(" \t\n")
    assert validate_text_query("a" * MAX_QUERY_CHARS) == "a" * MAX_QUERY_CHARS
    with pytest.raises(
        QueryError, match=f"{MAX_QUERY_CHARS + 1} characters long; the limit is {MAX_QUERY_CHARS}"
    ):
        validate_text_query("a" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(QueryError, match="must be a string"):
        validate_text_query(None)  # type: ignore[arg-type]


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_bad_images_fail_clearly(fresh_dir: Path) -> None:
    with pytest.raises(QueryError, match="cannot read file"):
        prepare_query_image(fresh_dir / "missing.png")
    garbage = fresh_dir / "garbage.png"
    garbage.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(QueryError, match=r"garbage.png: not an image PIL can read"):
        prepare_query_image(garbage)
    empty = fresh_dir / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(QueryError, match="empty file"):
        prepare_query_image(empty)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    truncated = fresh_dir / "truncated.png"
    truncated.write_bytes(_png_bytes(noise)[:20_000])
    with pytest.raises(QueryError, match="truncated.png: unreadable or truncated image"):
        prepare_query_image(truncated)


def test_decompression_bombs_are_refused() -> None:
    # Over our own limit (40 Mpx) though under PIL's warning threshold: refused from the header.
    big = _png_bytes(Image.new("1", (7000, 7000)))
    with pytest.raises(QueryError, match="7000x7000 = 49000000 pixels is over the 40000000-pixel limit"):
        prepare_query_image(big)
    # Over PIL's MAX_IMAGE_PIXELS: PIL's warning is turned into a refusal too.
    huge = _png_bytes(Image.new("1", (10000, 10000)))
    with pytest.raises(QueryError, match="too large"):
        prepare_query_image(huge)


def test_animated_takes_first_frame_and_any_aspect_is_padded_white() -> None:
    red, blue = Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 255))
    gif = io.BytesIO()
    red.save(gif, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    prepared = prepare_query_image(gif.getvalue())
    assert prepared.size == (224, 224) and prepared.mode == "RGB"
    r, g, b = prepared.getpixel((112, 112))
    assert r > 200 and b < 50  # the red first frame, not the blue second one

    tall = Image.new("RGB", (100, 300), (0, 0, 0))
    square = prepare_query_image(tall)
    assert square.size == (224, 224)
    assert square.getpixel((5, 112)) == (255, 255, 255)  # padding left and right is white
    assert square.getpixel((112, 112)) == (0, 0, 0)

    transparent = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert prepare_query_image(transparent).getpixel((10, 10)) == (255, 255, 255)
