"""Byte limits of one icon file, on the bottom floor: the config's default, the scanners (checked
before reading) and the renderer share them.

The SVG limit is configurable (`render.max_svg_bytes` in icon_pipeline.yaml); this is its default.
"""

DEFAULT_MAX_SVG_BYTES = 2_000_000
MAX_RASTER_BYTES = 50_000_000
