"""Raster (PNG, ...) input: decoded under the pixel limit and fitted into the box."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from icon_pipeline.render.settings import MAX_RASTER_PIXELS, RASTER_FORMATS, RenderError
from icon_pipeline.render.svg import fit_size


def load_raster(data: bytes) -> Image.Image:
    """Decode a raster icon to RGBA whatever its mode (palette, LA, 16-bit, grayscale, CMYK)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
            width, height = image.size
            if width <= 0 or height <= 0:
                raise RenderError(f"zero-size image ({width}x{height})")
            if width * height > MAX_RASTER_PIXELS:
                raise RenderError(
                    f"image too large: {width}x{height} pixels > {MAX_RASTER_PIXELS} "
                    "(decompression-bomb guard)"
                )
            image.load()
    except RenderError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RenderError(f"image too large (decompression-bomb guard): {exc}") from None
    except UnidentifiedImageError:
        raise RenderError(f"not a readable image (expected one of {', '.join(RASTER_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise RenderError(f"truncated or corrupt image: {exc}") from None

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit depth grayscale: scale to 8 bits by the type's range, not by clipping.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(255.0, float(values.max()))
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("PA")
    return image.convert("RGBA")


def fit_into(image: Image.Image, box: int) -> Image.Image:
    width, height = fit_size(image.width / image.height, box)
    if (width, height) == image.size:
        return image
    # Pillow premultiplies RGBA while resampling, so transparent pixels do not bleed colour.
    return image.resize((width, height), Image.Resampling.LANCZOS)
