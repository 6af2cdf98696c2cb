"""Render settings, limits and the error every renderer failure is: shared by every step of rendering."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from icon_pipeline.core.limits import DEFAULT_MAX_SVG_BYTES

# Bump when the output of render_icon changes for the same input and settings: it is part of
# the store key, so every icon is rendered again under the new version.
RENDERER_VERSION = "1"

Theme = Literal["light", "dark"]
RGB = tuple[int, int, int]

# (foreground, background) per theme.
THEME_COLOURS: dict[str, tuple[RGB, RGB]] = {
    "light": ((20, 20, 20), (255, 255, 255)),
    "dark": ((235, 235, 235), (24, 24, 24)),
}

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
MAX_RASTER_PIXELS = 40_000_000  # decompression-bomb guard, well below PIL's own limit
RASTER_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
# Extra seconds a worker gets past the in-process alarm before the pool kills it.
HARD_TIMEOUT_GRACE_S = 2.0
MAX_CHUNK = 16  # icons per worker round trip
# Elements inside elements: icons use a handful of levels, Figma exports a few dozen. The renderer
# recurses a few Python frames per level, so this stays far below the recursion limit.
MAX_SVG_DEPTH = 256


class RenderError(Exception):
    """An icon that cannot be rendered; `reason` is short and names the problem."""

    def __init__(self, reason: str, item: str = "") -> None:
        self.reason = reason
        self.item = item
        super().__init__(f"{item}: {reason}" if item else reason)

    def __reduce__(self) -> tuple:
        return (type(self), (self.reason, self.item))  # from a worker process with its reason intact


@dataclass(frozen=True)
class RenderSettings:
    """How icons are rasterized. `key()` names the store folder, so it covers output-affecting fields only."""

    size: int = 224
    theme: Theme = "light"
    max_svg_bytes: int = DEFAULT_MAX_SVG_BYTES
    timeout_s: float = 10.0
    margin: float = 0.0625  # fraction of `size` left empty on each side

    def __post_init__(self) -> None:
        if self.theme not in THEME_COLOURS:
            raise ValueError(f"unknown theme {self.theme!r}; allowed: {', '.join(THEME_COLOURS)}")
        if not 16 <= self.size <= 4096:
            raise ValueError(f"size must be between 16 and 4096 px, got {self.size}")
        if not 0 <= self.margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {self.margin}")
        if self.max_svg_bytes <= 0 or self.timeout_s <= 0:
            raise ValueError("max_svg_bytes and timeout_s must be positive")

    @property
    def foreground(self) -> RGB:
        return THEME_COLOURS[self.theme][0]

    @property
    def background(self) -> RGB:
        return THEME_COLOURS[self.theme][1]

    @property
    def content_box(self) -> int:
        """Side of the square the icon is fitted into."""
        return max(1, self.size - 2 * round(self.size * self.margin))

    @classmethod
    def from_config(cls, render: object) -> RenderSettings:
        """The settings of icon_pipeline.yaml's `render:` section (core.config.RenderConfig)."""
        return cls(
            size=render.size,  # type: ignore[attr-defined]
            theme=render.theme,  # type: ignore[attr-defined]
            max_svg_bytes=render.max_svg_bytes,  # type: ignore[attr-defined]
            timeout_s=render.timeout_s,  # type: ignore[attr-defined]
        )

    def key(self) -> str:
        # Limits (bytes, timeout) only decide which icons fail, not how the others look: leaving
        # them out means raising a limit does not re-render the whole library.
        payload = {
            "renderer": RENDERER_VERSION,
            "size": self.size,
            "theme": self.theme,
            "margin": self.margin,
            "colours": THEME_COLOURS[self.theme],
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.theme}-{self.size}-{digest}"
