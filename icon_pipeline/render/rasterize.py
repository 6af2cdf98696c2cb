"""Theme-correct rasterization of icons into a content-addressed PNG store.

Every icon, SVG or PNG, comes out as a `size` x `size` RGB image:
aspect ratio kept, fitted into the canvas minus a margin, centered, composited on the theme
background. Monochrome glyphs (the usual icon) are painted in the theme foreground whatever
colour they were drawn in, so an icon drawn white-on-transparent for dark UIs does not vanish on
a light background, and `currentColor` never falls back to black.

Untrusted input is the norm (designers' folders, Figma exports): nothing is ever fetched from a
URL or the file system while rendering, XML entities are refused, sizes are capped, and each
render runs under a time limit in a worker process that is killed if it hangs.

Each step is a module of its own: settings (limits, the error), svg, raster, compose, icon (one
icon under a time limit) and store (the content-addressed store, batch rendering); this module
names what callers use and draws the contact sheet.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from icon_pipeline.render.icon import (
    render_icon,
    render_icon_isolated,
)
from icon_pipeline.render.settings import (
    HARD_TIMEOUT_GRACE_S,
    MAX_CHUNK,
    MAX_RASTER_PIXELS,
    MAX_SVG_DEPTH,
    RASTER_FORMATS,
    RENDERER_VERSION,
    RGB,
    SVG_NS,
    THEME_COLOURS,
    XLINK_HREF,
    RenderError,
    RenderSettings,
    Theme,
)
from icon_pipeline.render.store import (
    IconRenderOutcome,
    IconRenderStatus,
    RenderResult,
    RenderStore,
    render_batch,
)


def preview_grid(
    png_paths: list[Path],
    columns: int = 10,
    cell: int = 64,
    labels: list[str] | None = None,
) -> Image.Image:
    """A contact sheet of thumbnails (with an optional caption under each) for a quick visual check."""
    if columns < 1 or cell < 8:
        raise ValueError("columns must be >= 1 and cell >= 8")
    if labels is not None and len(labels) != len(png_paths):
        raise ValueError(f"{len(labels)} labels for {len(png_paths)} images")
    label_height = 24 if labels else 0  # two lines: long names wrap rather than being cut
    count = max(1, len(png_paths))
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    sheet = Image.new("RGB", (columns * cell, rows * (cell + label_height)), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    for index, path in enumerate(png_paths):
        left, top = (index % columns) * cell, (index // columns) * (cell + label_height)
        try:
            with Image.open(path) as image:
                thumb = image.convert("RGB")
                thumb.thumbnail((cell - 2, cell - 2))
            sheet.paste(thumb, (left + (cell - thumb.width) // 2, top + (cell - thumb.height) // 2))
        except (OSError, ValueError):
            # A missing or broken file shows as a crossed cell rather than breaking the sheet.
            draw.line((left + 4, top + 4, left + cell - 4, top + cell - 4), fill=(200, 0, 0), width=2)
            draw.line((left + cell - 4, top + 4, left + 4, top + cell - 4), fill=(200, 0, 0), width=2)
        if labels:
            width = max(1, cell // 6)  # characters per line of PIL's default font
            text = labels[index]
            lines = [text[i : i + width] for i in range(0, len(text), width)][:2]
            if len(text) > 2 * width:
                lines[1] = lines[1][:-1] + "~"
            draw.text((left + 2, top + cell), "\n".join(lines), fill=(40, 40, 40), spacing=0)
    return sheet


__all__ = [
    "RENDERER_VERSION",
    "THEME_COLOURS",
    "IconRenderOutcome",
    "RenderError",
    "RenderResult",
    "RenderSettings",
    "RenderStore",
    "preview_grid",
    "render_batch",
    "render_icon",
    "render_icon_isolated",
]


__all__ = [
    "HARD_TIMEOUT_GRACE_S",
    "MAX_CHUNK",
    "MAX_RASTER_PIXELS",
    "MAX_SVG_DEPTH",
    "RASTER_FORMATS",
    "RENDERER_VERSION",
    "RGB",
    "RenderError",
    "RenderSettings",
    "SVG_NS",
    "THEME_COLOURS",
    "Theme",
    "XLINK_HREF",
    "render_icon",
    "render_icon_isolated",
    "IconRenderOutcome",
    "IconRenderStatus",
    "RenderResult",
    "RenderStore",
    "render_batch",
    "preview_grid",
]
