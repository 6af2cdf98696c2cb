"""Theme-correct rasterization of icons into a content-addressed PNG store.

Every icon, SVG or PNG, comes out as a `size` x `size` RGB image:
aspect ratio kept, fitted into the canvas minus a margin, centered, composited on the theme
background. Monochrome glyphs (the usual icon) are painted in the theme foreground whatever
colour they were drawn in, so an icon drawn white-on-transparent for dark UIs does not vanish on
a light background, and `currentColor` never falls back to black.

Untrusted input is the norm (designers' folders, Figma exports): nothing is ever fetched from a
URL or the file system while rendering, XML entities are refused, sizes are capped, and each
render runs under a time limit in a worker process that is killed if it hangs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree

import numpy as np
from cairosvg.parser import Tree
from cairosvg.surface import PNGSurface
from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml import ElementTree as SafeElementTree
from PIL import Image, ImageDraw, ImageFilter, UnidentifiedImageError
from tqdm import tqdm

from icon_pipeline.core.limits import DEFAULT_MAX_SVG_BYTES, MAX_RASTER_BYTES
from icon_pipeline.library.records import IconRecord

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


# ---------------------------------------------------------------------------------------------
# Single icon


def render_icon(
    source: IconRecord | Path | str,
    settings: RenderSettings | None = None,
    *,
    fmt: Literal["svg", "png"] | None = None,
) -> Image.Image:
    """Render one icon (a record, or a path whose suffix gives the format) to an RGB `size`x`size` image.

    Raises RenderError with a short reason for any bad input. The time limit applies when called
    from a process's main thread (as in the render workers); elsewhere it is not enforced.
    """
    settings = settings or RenderSettings()
    if isinstance(source, IconRecord):
        path, fmt = Path(source.file_path), fmt or source.format
        item = source.icon_id
    else:
        path = Path(source)
        item = str(path)
        fmt = fmt or ("svg" if path.suffix.lower() in (".svg", ".svgz") else "png")
    started = time.perf_counter()
    try:
        with _time_limit(settings.timeout_s):
            if fmt == "svg":
                data = _read_file(path, settings.max_svg_bytes, "SVG")
                glyph = _rasterize_svg(data, settings)
            else:
                data = _read_file(path, MAX_RASTER_BYTES, "image")
                glyph = _fit(_load_raster(data), settings.content_box)
            image = _compose(glyph, settings)
        # The alarm cannot interrupt native code, nor fire where another library owns SIGALRM
        # (or off the main thread): an icon that took too long fails the same way after the fact.
        if time.perf_counter() - started > settings.timeout_s:
            raise _RenderTimeout()
        return image
    except RenderError as exc:
        raise RenderError(exc.reason, item) from None
    except _RenderTimeout:
        raise RenderError(f"timed out after {settings.timeout_s:g}s", item) from None
    except MemoryError:
        raise RenderError("out of memory while rendering", item) from None
    except RecursionError:  # the checks below should leave none: a named failure all the same
        raise RenderError(
            "SVG too deeply nested or self-referencing for the renderer (Python's recursion limit)", item
        ) from None


_isolated_pool: Any = None  # a pebble ProcessPool, started on first use
_isolated_lock = threading.Lock()


def render_icon_isolated(
    source: Path | str,
    settings: RenderSettings | None = None,
    *,
    fmt: Literal["svg", "png"] | None = None,
) -> Image.Image:
    """render_icon in a worker process, stopped (killed) past the time limit: for untrusted files
    rendered off a main thread, as search queries are in the API and the app. There the in-process
    alarm cannot run, and cairo's native code may never return (a circle of radius 1e999 draws
    forever): such a file would hold a server thread and a core for good."""
    from pebble import ProcessExpired, ProcessPool

    global _isolated_pool
    settings = settings or RenderSettings()
    with _isolated_lock:
        if _isolated_pool is None:
            import atexit

            pool = ProcessPool(max_workers=2, context=_pool_context())
            atexit.register(pool.stop)
            _isolated_pool = pool
        pool = _isolated_pool
    future = pool.submit(render_icon, settings.timeout_s + HARD_TIMEOUT_GRACE_S, source, settings, fmt=fmt)
    try:
        return future.result()
    except FutureTimeoutError:
        raise RenderError(
            f"timed out after {settings.timeout_s:g}s; the renderer was stopped", str(source)
        ) from None
    except ProcessExpired as exc:
        raise RenderError(f"renderer crashed ({_exit_status(exc.exitcode)})", str(source)) from None


class _RenderTimeout(BaseException):
    """Raised by the alarm; a BaseException so library code catching Exception cannot swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise _RenderTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _read_file(path: Path, max_bytes: int, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise RenderError(f"{what} file too large: {size} bytes > limit {max_bytes}")
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise RenderError(f"cannot read file: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # grew since stat
        raise RenderError(f"{what} file too large: > limit {max_bytes} bytes")
    if not data:
        raise RenderError(f"empty {what} file")
    return data


# ---------------------------------------------------------------------------------------------
# SVG

_URL_FUNC = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)
_IMPORT = re.compile(rb"@import", re.IGNORECASE)
_STYLESHEET_PI = re.compile(rb"<\?xml-stylesheet", re.IGNORECASE)
_CURRENT_COLOR = re.compile(r"currentcolor", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-z%]*)\s*$", re.IGNORECASE)


def _local_fetch(url: str, resource_type: str) -> bytes:
    """cairosvg's fetcher: inline `data:` URLs only. Every other reference was rejected before
    rendering; refusing here too means a gap in that check can never become a request."""
    if not url.lower().startswith("data:"):
        raise RenderError(f"external reference blocked: {url[:100]}")
    header, _, payload = url[5:].partition(",")
    try:
        if header.lower().endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return urllib.parse.unquote_to_bytes(payload)
    except ValueError as exc:
        raise RenderError(f"invalid data: URL ({exc})") from None


def _is_internal_ref(value: str) -> bool:
    value = value.strip()
    return value.startswith("#") or value.lower().startswith("data:") or not value


def _gunzip_limited(data: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise RenderError(f"corrupt gzip-compressed SVG: {exc}") from None
    if len(out) > max_bytes:
        raise RenderError(f"SVG too large once decompressed: > limit {max_bytes} bytes")
    return out


def _check_references(root: ElementTree.Element, data: bytes) -> None:
    """Reject anything that would make the renderer read a URL or a file."""
    if _STYLESHEET_PI.search(data):
        raise RenderError("external reference not allowed: <?xml-stylesheet?> instruction")
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        tag = element.tag.rsplit("}", 1)[-1]
        for name, value in element.attrib.items():
            local = name.rsplit("}", 1)[-1]
            # <a href> is a hyperlink the renderer never follows; any other href is loaded.
            if local == "href" and tag != "a" and not _is_internal_ref(value):
                raise RenderError(f"external reference not allowed: <{tag} href={value.strip()[:100]!r}>")
            for match in _URL_FUNC.finditer(value):
                if not _is_internal_ref(match.group(2)):
                    raise RenderError(f"external reference not allowed: url({match.group(2).strip()[:100]})")
        if tag == "style" and element.text:
            if _IMPORT.search(element.text.encode()):
                raise RenderError("external reference not allowed: @import in <style>")
            for match in _URL_FUNC.finditer(element.text):
                if not _is_internal_ref(match.group(2)):
                    raise RenderError(f"external reference not allowed: url({match.group(2).strip()[:100]})")


def _length(value: str | None) -> float | None:
    """A plain or unit-suffixed length as a number; None for absent or relative (%) values."""
    if value is None:
        return None
    match = _NUMBER.match(value)
    if not match:
        raise RenderError(f"invalid length {value[:40]!r}")
    if match.group(2) == "%":
        return None
    return float(match.group(1))


def _svg_aspect(root: ElementTree.Element) -> float:
    """Width / height of the drawing, from viewBox or else width/height."""
    view_box = root.get("viewBox")
    if view_box is not None:
        try:
            numbers = [float(n) for n in re.split(r"[\s,]+", view_box.strip()) if n]
        except ValueError:
            raise RenderError(f"invalid viewBox {view_box[:60]!r}") from None
        if len(numbers) != 4:
            raise RenderError(f"invalid viewBox {view_box[:60]!r} (needs 4 numbers)")
        width, height = numbers[2], numbers[3]
        if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0:
            raise RenderError(f"empty or zero-size viewBox {view_box.strip()[:60]!r}")
        return width / height
    width, height = _length(root.get("width")), _length(root.get("height"))
    if width is None or height is None:
        raise RenderError("no viewBox and no absolute width/height: the drawing has no size")
    if width <= 0 or height <= 0:
        raise RenderError(f"zero-size SVG (width={root.get('width')}, height={root.get('height')})")
    return width / height


class _DepthLimitedBuilder(ElementTree.TreeBuilder):
    """Builds the tree, refusing it as soon as elements nest more than MAX_SVG_DEPTH deep: a
    hostile file (100,000 nested <g>) never becomes a tree that anything walks recursively."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0

    def start(self, tag: str, attrs: dict[str, str]) -> ElementTree.Element:
        self.depth += 1
        if self.depth > MAX_SVG_DEPTH:
            raise RenderError(f"SVG nesting too deep (more than {MAX_SVG_DEPTH} levels of elements)")
        return super().start(tag, attrs)

    def end(self, tag: str) -> ElementTree.Element:
        self.depth -= 1
        return super().end(tag)


def _forbidden_xml(exc: DefusedXmlException) -> str:
    """What the file declares that is refused, by name."""
    where = getattr(exc, "sysid", None) or getattr(exc, "pubid", None)
    if isinstance(exc, EntitiesForbidden):
        target = f" pointing at {where!r}" if where else ""
        return f"XML entities are not allowed (the file declares <!ENTITY {exc.name}>{target})"
    if isinstance(exc, ExternalReferenceForbidden):
        return f"external XML references are not allowed ({where or 'an external entity'})"
    if isinstance(exc, DTDForbidden):
        return "a DOCTYPE declaration is not allowed"
    return f"unsafe XML is not allowed ({exc})"


def _parse_svg(data: bytes) -> ElementTree.Element:
    parser = SafeElementTree.DefusedXMLParser(
        target=_DepthLimitedBuilder(), forbid_dtd=False, forbid_entities=True, forbid_external=True
    )
    try:
        parser.feed(data)
        return parser.close()
    except DefusedXmlException as exc:
        raise RenderError(_forbidden_xml(exc)) from None
    except ElementTree.ParseError as exc:
        raise RenderError(f"malformed SVG (XML parse error: {exc})") from None


# Elements whose content is drawn wherever they are referenced (with url(#id)): one that refers to
# itself, or to an element holding it, makes the renderer recurse until it fails.
_DRAWN_WHERE_REFERENCED = frozenset({"pattern", "mask", "clipPath", "marker"})


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _check_reference_loops(root: ElementTree.Element) -> None:
    """Refuse, by name, a <use>, pattern, mask, clip path or marker that draws itself, directly or
    through others (an element draws every element referenced inside it). Iterative throughout."""
    by_id: dict[str, ElementTree.Element] = {}
    for element in root.iter():
        if isinstance(element.tag, str) and element.get("id"):
            by_id.setdefault(element.get("id", ""), element)
    refers: dict[ElementTree.Element, list[str]] = {}  # element -> ids it draws by reference
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        targets = []
        for name, value in element.attrib.items():
            value = value.strip()
            if _local(element.tag) == "use" and _local(name) == "href" and value.startswith("#"):
                targets.append(value[1:])
            for match in _URL_FUNC.finditer(value):
                ref = match.group(2).strip()
                target = by_id.get(ref[1:]) if ref.startswith("#") else None
                if target is not None and _local(str(target.tag)) in _DRAWN_WHERE_REFERENCED:
                    targets.append(ref[1:])
        if targets:
            refers[element] = targets
    if not refers:
        return
    referenced = {target for targets in refers.values() for target in targets}
    draws: dict[str, set[str]] = {}  # id -> ids drawn inside it
    stack: list[tuple[ElementTree.Element, tuple[str, ...]]] = [(root, ())]
    while stack:
        element, holders = stack.pop()
        own = element.get("id") if isinstance(element.tag, str) else None
        if own in referenced:
            holders = (*holders, own)  # only referenced ids: short, at most MAX_SVG_DEPTH
        for target in refers.get(element, ()):
            for holder in holders:
                draws.setdefault(holder, set()).add(target)
        stack.extend((child, holders) for child in element)
    done: set[str] = set()
    for start in sorted(draws):
        if start in done:
            continue
        path, on_path = [start], {start}
        branches = [iter(sorted(draws.get(start, ())))]
        while branches:
            following = next(branches[-1], None)
            if following is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                branches.pop()
                continue
            if following in on_path:
                loop = [*path[path.index(following) :], following]
                raise RenderError(
                    "SVG refers to itself: " + " draws ".join(f"#{i}" for i in loop) + " (a <use>, pattern, "
                    "mask, clip path or marker inside what it draws)"
                )
            if following not in done:
                path.append(following)
                on_path.add(following)
                branches.append(iter(sorted(draws.get(following, ()))))


def _prepare_svg(data: bytes, settings: RenderSettings) -> tuple[bytes, float]:
    """Validate an SVG and paint `currentColor` in the theme foreground; returns (svg bytes, aspect)."""
    if data[:2] == b"\x1f\x8b":
        data = _gunzip_limited(data, settings.max_svg_bytes)
    root = _parse_svg(data)
    if root.tag not in ("svg", f"{{{SVG_NS}}}svg"):
        raise RenderError(f"not an SVG document (root element is <{root.tag}>)")
    aspect = _svg_aspect(root)
    _check_references(root, data)
    _check_reference_loops(root)

    foreground = "#{:02x}{:02x}{:02x}".format(*settings.foreground)
    # currentColor resolves from `color`, which icons never set: a renderer then paints black.
    for element in root.iter():
        for name, value in element.attrib.items():
            if "currentcolor" in value.lower():
                element.set(name, _CURRENT_COLOR.sub(foreground, value))
        if element.text and "currentcolor" in element.text.lower():
            element.text = _CURRENT_COLOR.sub(foreground, element.text)
    root.set("color", foreground)
    return ElementTree.tostring(root), aspect


def _fit_size(aspect: float, box: int) -> tuple[int, int]:
    if aspect >= 1:
        return box, max(1, round(box / aspect))
    return max(1, round(box * aspect)), box


_NOT_A_NUMBER = re.compile(r"could not convert string to float: (.*)")


def _renderer_failure(exc: Exception) -> str:
    """What in the drawing the renderer could not handle, as far as its exception tells."""
    message = " ".join(str(exc).split())[:200]
    if "INVALID_MATRIX" in message:
        return (
            "a transform, size or font size scales part of the drawing to zero or infinity "
            "(the renderer's matrix is not invertible)"
        )
    if isinstance(exc, ValueError) and (match := _NOT_A_NUMBER.search(message)):
        return f"an attribute or style that needs a number holds {match.group(1)}"
    if isinstance(exc, OverflowError):
        return f"a number in the drawing is too large to draw ({message or 'numeric overflow'})"
    if isinstance(exc, ElementTree.ParseError):
        return f"an embedded SVG image or stylesheet is malformed ({message})"
    return f"the renderer failed on this SVG: {type(exc).__name__}: {message or '(no message)'}"


def _rasterize_svg(data: bytes, settings: RenderSettings) -> Image.Image:
    svg, aspect = _prepare_svg(data, settings)
    width, height = _fit_size(aspect, settings.content_box)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            tree = Tree(bytestring=svg, unsafe=False, url_fetcher=_local_fetch)
            surface = PNGSurface(tree, None, 96, output_width=width, output_height=height)
    except RenderError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RenderError(f"embedded image too large (decompression-bomb guard): {exc}") from None
    except RecursionError:  # nesting and reference loops were refused before: something else
        raise RenderError(
            "SVG too deeply nested or self-referencing for the renderer (Python's recursion limit)"
        ) from None
    except Exception as exc:  # cairosvg raises bare ValueError/TypeError/... for bad documents
        raise RenderError(_renderer_failure(exc)) from None
    cairo_surface = surface.cairo
    cairo_surface.flush()
    # Cairo's ARGB32 is premultiplied BGRA in memory on little-endian machines: "BGRa" un-premultiplies.
    return Image.frombuffer(
        "RGBA",
        (cairo_surface.get_width(), cairo_surface.get_height()),
        bytes(cairo_surface.get_data()),
        "raw",
        "BGRa" if sys.byteorder == "little" else "aRGB",
        cairo_surface.get_stride(),
        1,
    )


# ---------------------------------------------------------------------------------------------
# Raster (PNG) input


def _load_raster(data: bytes) -> Image.Image:
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


def _fit(image: Image.Image, box: int) -> Image.Image:
    width, height = _fit_size(image.width / image.height, box)
    if (width, height) == image.size:
        return image
    # Pillow premultiplies RGBA while resampling, so transparent pixels do not bleed colour.
    return image.resize((width, height), Image.Resampling.LANCZOS)


# ---------------------------------------------------------------------------------------------
# Theme compositing

_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def _colour_to_alpha(rgb: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GIMP's colour-to-alpha: make `reference` transparent, keep every other colour's appearance."""
    ref = reference.astype(np.float32)
    above = np.where(rgb > ref, (rgb - ref) / np.maximum(255.0 - ref, 1e-6), 0.0)
    below = np.where(rgb < ref, (ref - rgb) / np.maximum(ref, 1e-6), 0.0)
    alpha = np.clip(np.maximum(above, below).max(axis=-1), 0.0, 1.0)
    safe = np.maximum(alpha, 1e-6)[..., None]
    colour = np.clip((rgb - ref) / safe + ref, 0.0, 255.0)
    return colour, alpha


def _normalise_glyph(glyph: Image.Image, settings: RenderSettings) -> Image.Image:
    """The fitted glyph as RGBA, recoloured for the theme (alpha kept)."""
    glyph = glyph.convert("RGBA")
    rgba = np.asarray(glyph)
    alpha8 = rgba[..., 3]
    lowest, peak = glyph.getchannel("A").getextrema()
    if lowest > 250:
        # Opaque raster (no alpha channel, or an icon drawn on its own backdrop): if the border is
        # one colour, that colour is the backdrop; make it transparent.
        rgb = rgba[..., :3].astype(np.float32)
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        reference = np.median(border, axis=0)
        if np.mean(np.abs(border - reference).max(axis=1) <= 24) >= 0.9:
            colour, alpha = _colour_to_alpha(rgb, reference)
            rgba = np.dstack([colour, alpha * 255.0]).round().astype(np.uint8)
            alpha8 = rgba[..., 3]
            peak = int(alpha8.max())
    if peak < 13:
        raise RenderError("renders nothing (blank or fully transparent)")

    # Statistics over the solid part of the glyph only: anti-aliased edges carry little colour.
    # Element-wise over the three channel planes: numpy reduces a length-3 axis slowly, and this
    # runs once per icon.
    ink = alpha8 >= max(128, peak // 2)
    red, green, blue = (rgba[..., channel][ink] for channel in range(3))
    chroma = float(
        (np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)).mean()
    )
    ink_luma = (red * _LUMA[0] + green * _LUMA[1] + blue * _LUMA[2]) / 255.0
    foreground = np.array(settings.foreground, dtype=np.float32)
    background = np.array(settings.background, dtype=np.float32)
    background_luma = float(background @ _LUMA / 255.0)
    monochrome = chroma < 0.1 * 255
    single_tone = monochrome and float(ink_luma.max() - ink_luma.min()) < 0.15
    invisible = not monochrome and abs(float(ink_luma.mean()) - background_luma) < 0.15
    if single_tone or invisible:
        # The common case (and a coloured glyph that would vanish on this background): the alpha
        # mask is the glyph; paint it in the theme foreground.
        solid = Image.new("RGBA", glyph.size, (*settings.foreground, 255))
        solid.putalpha(Image.fromarray(np.ascontiguousarray(alpha8)))
        return solid
    if not monochrome:
        return Image.fromarray(rgba)
    # Two-tone monochrome (e.g. a white fill inside a black outline): the glyph's tone is the tone
    # of its outline, the pixels touching transparency. That tone takes the theme foreground, the
    # other one the background, so the fill stays a "hole" in either theme.
    mask = Image.fromarray(ink.astype(np.uint8) * 255)
    edge = ink & ~(np.asarray(mask.filter(ImageFilter.MinFilter(3))) > 0)
    luma = rgba[..., :3].astype(np.float32) @ _LUMA / 255.0
    tone = float(np.median(luma[edge] if edge.any() else luma[ink]))
    strength = np.clip(1.0 - np.abs(luma - tone), 0.0, 1.0)[..., None]
    rgb = background + (foreground - background) * strength
    return Image.fromarray(np.dstack([rgb.round(), alpha8]).astype(np.uint8))


def _compose(glyph: Image.Image, settings: RenderSettings) -> Image.Image:
    """Recolour the fitted glyph, then composite it centered on a theme-background canvas."""
    recoloured = _normalise_glyph(glyph, settings)
    canvas = Image.new("RGB", (settings.size, settings.size), settings.background)
    offset = ((settings.size - recoloured.width) // 2, (settings.size - recoloured.height) // 2)
    # paste with the glyph as its own mask blends by alpha (un-premultiplied RGBA).
    canvas.paste(recoloured, offset, recoloured)
    return canvas


# ---------------------------------------------------------------------------------------------
# Content-addressed store and batch rendering


@dataclass(frozen=True)
class RenderStore:
    """PNG files addressed by (settings key, content hash): an unchanged icon is rendered once."""

    root: Path

    def path_for(self, content_hash: str, settings: RenderSettings) -> Path:
        if not re.fullmatch(r"[0-9a-f]{8,128}", content_hash):
            raise ValueError(f"content hash must be lowercase hex, got {content_hash[:40]!r}")
        return Path(self.root) / settings.key() / content_hash[:2] / f"{content_hash}.png"

    def has(self, content_hash: str, settings: RenderSettings) -> bool:
        return self.path_for(content_hash, settings).is_file()


IconRenderStatus = Literal["rendered", "cached", "failed"]


@dataclass(frozen=True)
class IconRenderOutcome:
    """What happened to one icon: its PNG (rendered now or found in the store) or why it failed."""

    icon_id: str
    status: IconRenderStatus
    png_path: str = ""
    reason: str = ""


@dataclass
class RenderResult:
    settings_key: str
    outcomes: list[IconRenderOutcome] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1

    def count(self, status: IconRenderStatus) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def rendered(self) -> int:
        return self.count("rendered")

    @property
    def cached(self) -> int:
        return self.count("cached")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def failures(self) -> list[IconRenderOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def failure_rate(self) -> float:
        return self.failed / len(self.outcomes) if self.outcomes else 0.0

    @property
    def icons_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0

    def by_icon(self) -> dict[str, IconRenderOutcome]:
        return {o.icon_id: o for o in self.outcomes}


def _as_stored(image: Image.Image) -> Image.Image:
    """A gray RGB render (every light- and dark-theme monochrome icon) is stored as 8-bit gray:
    the same pixels once read back as RGB, a third of the data to compress (about 0.5 ms less
    per icon) and 40% less disk. Every reader converts to RGB (or L) when it opens a render."""
    if image.mode != "RGB":
        return image
    pixels = np.asarray(image)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    if np.array_equal(red, green) and np.array_equal(green, blue):
        return Image.fromarray(np.ascontiguousarray(red))
    return image


def _write_png_atomic(image: Image.Image, destination: Path) -> None:
    try:
        fd, temp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=destination.parent)
    except FileNotFoundError:  # mkdir only when needed: on slow file systems it costs ~1 ms
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            _as_stored(image).save(handle, "PNG", compress_level=3)
        os.replace(temp_name, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


def _render_into_store(record: IconRecord, settings: RenderSettings, destination: str) -> str:
    """Render one icon and write it; returns "" or the failure reason."""
    try:
        image = render_icon(record, settings)
        _write_png_atomic(image, Path(destination))
    except RenderError as exc:
        return exc.reason
    except OSError as exc:
        return f"cannot write PNG: {exc.strerror or exc}"
    return ""


def _render_chunk(tasks: list[tuple[IconRecord, str]], settings: RenderSettings) -> list[str]:
    """Worker task: several icons per round trip (a task costs ~1 ms of pool overhead)."""
    return [_render_into_store(record, settings, destination) for record, destination in tasks]


def _pool_context() -> multiprocessing.context.BaseContext:
    # forkserver: workers do not inherit the parent's threads and locks (Dagster runs threads),
    # and start faster than spawn.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Workers fork from a server that already imported the renderer (cairo, numpy, PIL).
    context.set_forkserver_preload([__name__])
    return context


def _exit_status(code: int | None) -> str:
    """A worker's exit code in words: a negative one is the signal that killed it."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


def render_batch(
    records: list[IconRecord],
    settings: RenderSettings,
    store: RenderStore,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    show_progress_bar: bool = True,
) -> RenderResult:
    """Render the icons not yet in the store, in parallel; one failure never stops the batch.

    `progress(done, total)` is called about every 5% of the icons to render (and at the end), for
    callers that log instead of drawing a bar. Icons sharing content are rendered once.
    """
    from pebble import ProcessExpired, ProcessFuture, ProcessPool

    started = time.perf_counter()
    workers = max(1, workers or os.cpu_count() or 1)
    outcomes: dict[str, IconRenderOutcome] = {}
    todo: dict[str, tuple[IconRecord, Path, list[str]]] = {}  # content hash -> (first record, path, ids)
    for record in records:
        try:
            destination = store.path_for(record.content_hash, settings)
        except ValueError as exc:
            outcomes[record.icon_id] = IconRenderOutcome(record.icon_id, "failed", reason=str(exc))
            continue
        if destination.is_file():
            outcomes[record.icon_id] = IconRenderOutcome(record.icon_id, "cached", str(destination))
        elif record.content_hash in todo:
            todo[record.content_hash][2].append(record.icon_id)
        else:
            todo[record.content_hash] = (record, destination, [record.icon_id])

    total = len(todo)
    if total:
        pool_size = min(workers, total)
        # Small chunks keep every worker busy to the end; one icon per chunk when retrying.
        chunk_size = max(1, min(MAX_CHUNK, total // (pool_size * 4)))
        hashes = list(todo)
        chunks = [hashes[i : i + chunk_size] for i in range(0, total, chunk_size)]
        done = 0
        report_every = max(1, total // 20)

        def record_outcome(content_hash: str, reason: str) -> None:
            nonlocal done
            _, destination, icon_ids = todo[content_hash]
            for icon_id in icon_ids:
                outcomes[icon_id] = (
                    IconRenderOutcome(icon_id, "failed", reason=reason)
                    if reason
                    else IconRenderOutcome(icon_id, "rendered", str(destination))
                )
            done += 1
            bar.update(1)
            if progress and (done % report_every == 0 or done == total):
                progress(done, total)

        with (
            ProcessPool(max_workers=pool_size, context=_pool_context()) as pool,
            tqdm(total=total, desc="render", unit="icon", disable=not show_progress_bar) as bar,
        ):

            def submit(chunk: list[str]) -> ProcessFuture:
                tasks = [(todo[h][0], str(todo[h][1])) for h in chunk]
                # The in-worker alarm stops a slow icon; this kills a worker stuck in native code.
                hard_timeout = len(chunk) * settings.timeout_s + HARD_TIMEOUT_GRACE_S
                return pool.submit(_render_chunk, hard_timeout, tasks, settings)

            pending = {submit(chunk): chunk for chunk in chunks}
            while pending:
                future = next(as_completed(pending))
                chunk = pending.pop(future)
                try:
                    for content_hash, reason in zip(chunk, future.result(), strict=True):
                        record_outcome(content_hash, reason)
                    continue
                except FutureTimeoutError:
                    reason = f"timed out after {settings.timeout_s:g}s (worker killed)"
                except ProcessExpired as exc:
                    reason = f"renderer crashed ({_exit_status(exc.exitcode)})"
                except Exception as exc:  # a bug must not lose the rest of the batch
                    reason = f"unexpected {type(exc).__name__}: {str(exc)[:200]}"
                if len(chunk) > 1:
                    # Retry one by one so only the icon that hung or crashed the worker fails.
                    pending.update({submit([content_hash]): [content_hash] for content_hash in chunk})
                else:
                    record_outcome(chunk[0], reason)
    ordered = [outcomes[r.icon_id] for r in records]
    return RenderResult(settings.key(), ordered, time.perf_counter() - started, workers)


# ---------------------------------------------------------------------------------------------
# Contact sheet


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
