"""SVG input: parsed without entities or external references, depth and reference loops checked, sized,
and drawn by cairosvg."""

from __future__ import annotations

import base64
import math
import re
import sys
import urllib.parse
import warnings
import zlib
from xml.etree import ElementTree

from cairosvg.parser import Tree
from cairosvg.surface import PNGSurface
from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml import ElementTree as SafeElementTree
from PIL import Image

from icon_pipeline.render.settings import MAX_SVG_DEPTH, SVG_NS, RenderError, RenderSettings

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


def fit_size(aspect: float, box: int) -> tuple[int, int]:
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


def rasterize_svg(data: bytes, settings: RenderSettings) -> Image.Image:
    svg, aspect = _prepare_svg(data, settings)
    width, height = fit_size(aspect, settings.content_box)
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
