"""Visual near-duplicate vectors: an icon's drawing, normalised, as a small grayscale picture.

A screenshot of an icon differs from its render by where the icon sits (crop, padding, odd
aspect), the theme (light ink on a dark background) and the resolution. Each of those is undone
before comparing: grayscale, inverted when the background is dark, cropped to the ink's bounding
box, padded square, resized to 32x32, mean-centred and L2-normalised. Measured on the frozen v1
img2img queries (Tabler): R@1 0.217 against 0.103 for plain 16x16 pixels (docs/search_quality.md).

These vectors are the `pixels` channel of image search (stored in pgvector like the models') and
the fallback a hybrid image query always has, trained model or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

SIDE = 32
DIM = SIDE * SIDE
INK_THRESHOLD = 40  # 0..255 darkness above which a pixel counts as ink (after inversion to dark ink)
MARGIN = 0.1  # share of the ink box added on every side


def _grayscale_dark_ink(image: Image.Image) -> Image.Image:
    """Grayscale with dark ink on a light background (a dark-theme copy is inverted)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        image = flat
    gray = image.convert("L")
    array = np.asarray(gray)
    corners = [array[0, 0], array[0, -1], array[-1, 0], array[-1, -1]]
    return ImageOps.invert(gray) if float(np.median(corners)) < 128 else gray


def normalised_drawing(image: Image.Image, side: int = SIDE) -> Image.Image:
    """The icon's ink, cropped, padded square and resized to `side` (grayscale, dark on light)."""
    gray = _grayscale_dark_ink(image)
    ink = ImageOps.invert(gray).point(lambda v: 255 if v > INK_THRESHOLD else 0)
    box = ink.getbbox()
    if box:
        gray = gray.crop(box)
        width, height = gray.size
        square = max(width, height)
        pad = max(1, round(square * MARGIN))
        canvas = Image.new("L", (square + 2 * pad, square + 2 * pad), 255)
        canvas.paste(gray, ((canvas.width - width) // 2, (canvas.height - height) // 2))
        gray = canvas
    return gray.resize((side, side), Image.Resampling.BILINEAR)


def pixel_vector(image: Image.Image, side: int = SIDE) -> np.ndarray:
    """The normalised drawing as a mean-centred, L2-normalised float32 vector (a blank image: zeros)."""
    vector = np.asarray(normalised_drawing(image, side), dtype=np.float32).ravel() / 255.0
    vector = vector - vector.mean()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def pixel_vectors(images: list[Image.Image], side: int = SIDE) -> np.ndarray:
    return (
        np.stack([pixel_vector(image, side) for image in images])
        if images
        else np.zeros((0, side * side), np.float32)
    )


@dataclass(frozen=True)
class PixelRows:
    """The `pixels` channel's rows: one vector per icon with ink; a blank drawing has no row."""

    icon_ids: list[str]
    vectors: np.ndarray
    blank: list[str]


def pixel_rows(icon_ids: list[str], png_paths: list[str]) -> PixelRows:
    """Each rendered icon's normalised drawing as a vector, read from its PNG."""
    vectors, kept, blank = [], [], []
    for icon_id, path in zip(icon_ids, png_paths, strict=True):
        with Image.open(path) as image:
            vector = pixel_vector(image)
        (kept if vector.any() else blank).append(icon_id)
        if vector.any():
            vectors.append(vector)
    return PixelRows(kept, np.stack(vectors), blank)
