"""Rendering: theme-correct output on real Tabler icons, raster quirks, hostile input, the store."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import struct
import threading
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icon_pipeline.core.paths import get_paths
from icon_pipeline.library.records import IconRecord
from icon_pipeline.render.rasterize import (
    RenderError,
    RenderSettings,
    RenderStore,
    preview_grid,
    render_batch,
    render_icon,
)

LIGHT = RenderSettings(theme="light")
DARK = RenderSettings(theme="dark")


@pytest.fixture(scope="module")
def tabler_icons() -> Path:
    icons = get_paths().sources_dir / "tabler" / "3.51.0" / "package" / "icons"
    if not (icons / "outline" / "bell.svg").is_file():
        pytest.skip(f"Tabler icons not unpacked at {icons} (run `make data` / fetch_tabler first)")
    return icons


def record_for(path: Path, icon_id: str | None = None) -> IconRecord:
    fmt = "svg" if path.suffix.lower() == ".svg" else "png"
    return IconRecord(
        icon_id=icon_id or f"test:{path.name}",
        source="test",
        name=path.stem,
        raw_name=path.stem,
        file_path=str(path),
        format=fmt,
        content_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def ink_fraction(image: Image.Image, settings: RenderSettings) -> float:
    """Share of pixels that differ clearly from the theme background."""
    diff = np.abs(pixels(image) - np.array(settings.background)).max(axis=-1)
    return float((diff > 40).mean())


def luma(array: np.ndarray) -> np.ndarray:
    return array[..., :3] @ np.array([0.2126, 0.7152, 0.0722])


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def svg(body: str, attrs: str = 'viewBox="0 0 24 24"') -> str:
    namespaces = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
    return f"<svg {namespaces} {attrs}>{body}</svg>"


# ------------------------------------------------------------------------------------------------
# Real icons, themes


@pytest.mark.parametrize("style,name", [("outline", "bell"), ("filled", "bell"), ("outline", "a-b-2")])
def test_real_tabler_icon_is_theme_correct_in_both_themes(tabler_icons: Path, style: str, name: str) -> None:
    path = tabler_icons / style / f"{name}.svg"
    if not path.is_file():
        pytest.skip(f"{path} missing from this Tabler version")
    light, dark = render_icon(path, LIGHT), render_icon(path, DARK)
    for image, settings in ((light, LIGHT), (dark, DARK)):
        assert image.size == (224, 224) and image.mode == "RGB"
        array = pixels(image)
        assert 0.02 < ink_fraction(image, settings) < 0.7, "blank, or drawn as a solid block"
        # Padding: every border pixel is the theme background.
        for edge in (array[0], array[-1], array[:, 0], array[:, -1]):
            assert (edge == settings.background).all()
    # The currentColor trap: dark theme must not be black strokes on a dark (or black) canvas.
    light_array, dark_array = pixels(light), pixels(dark)
    assert luma(dark_array[0, 0]) < 60, "dark theme background must be dark"
    assert luma(dark_array).max() > 200, "dark theme glyph must be light"
    assert luma(light_array).min() < 60 and luma(light_array[0, 0]) > 240
    assert (light_array != dark_array).any()
    assert (luma(light_array) < 128).mean() < 0.7, "light render is not all black"


def test_current_color_on_transparent_is_not_black(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cc.svg",
        svg('<path d="M4 4h16v16H4z" fill="none" stroke="currentColor" stroke-width="2"/>'),
    )
    dark = pixels(render_icon(path, DARK))
    ring = dark[112, 47]  # left side of the square: 14 px margin + 4/24 of 196 px
    assert luma(ring) > 200, (
        f"currentColor stroke rendered {ring}, expected the dark theme's light foreground"
    )
    assert luma(dark[112, 112]) < 60, "inside the square is the dark background, not white"


def test_style_element_current_color_is_replaced(tmp_path: Path) -> None:
    body = "<style>.a { fill: currentColor; }</style><rect class='a' x='4' y='4' width='16' height='16'/>"
    dark = pixels(render_icon(write(tmp_path, "style.svg", svg(body)), DARK))
    assert luma(dark[112, 112]) > 200


def test_white_glyph_drawn_for_dark_ui_is_visible_on_light_theme(tmp_path: Path) -> None:
    path = write(tmp_path, "white.svg", svg('<circle cx="12" cy="12" r="8" fill="#ffffff"/>'))
    light = pixels(render_icon(path, LIGHT))
    assert luma(light[112, 112]) < 60, (
        "white-on-transparent glyph must take the light theme's dark foreground"
    )
    assert luma(light[5, 5]) > 240


def test_two_tone_outline_keeps_its_hole(tmp_path: Path) -> None:
    body = '<circle cx="12" cy="12" r="9" fill="#ffffff" stroke="#000000" stroke-width="3"/>'
    path = write(tmp_path, "two-tone.svg", svg(body))
    light, dark = pixels(render_icon(path, LIGHT)), pixels(render_icon(path, DARK))
    ring_x = 112 - round(9 * 196 / 24)  # left edge of the circle
    assert luma(light[112, ring_x]) < 60 and luma(light[112, 112]) > 240
    assert luma(dark[112, ring_x]) > 200 and luma(dark[112, 112]) < 60


def test_coloured_icon_keeps_its_colour(tmp_path: Path) -> None:
    path = write(tmp_path, "red.svg", svg('<rect x="4" y="4" width="16" height="16" fill="#e02020"/>'))
    for settings in (LIGHT, DARK):
        r, g, b = pixels(render_icon(path, settings))[112, 112]
        assert r > 200 and g < 60 and b < 60


def test_a_coloured_render_is_stored_in_colour(tmp_path: Path) -> None:
    red = record_for(
        write(tmp_path, "red.svg", svg('<rect x="4" y="4" width="16" height="16" fill="#e02020"/>'))
    )
    result = render_batch([red], LIGHT, RenderStore(tmp_path / "store"), workers=1, show_progress_bar=False)
    with Image.open(result.outcomes[0].png_path) as stored:
        assert stored.mode == "RGB"
        assert np.array_equal(np.asarray(stored), np.asarray(render_icon(red, LIGHT)))


# ------------------------------------------------------------------------------------------------
# PNG inputs


def save_png(image: Image.Image, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    image.save(path, "PNG")
    return path


def test_odd_aspect_png_is_fitted_centered_and_padded(tmp_path: Path) -> None:
    image = Image.new("RGBA", (300, 60), (0, 0, 0, 0))
    image.paste((30, 30, 30, 255), (10, 10, 290, 50))
    out = pixels(render_icon(save_png(image, tmp_path, "wide.png"), DARK))
    assert (out[:80] == DARK.background).all() and (out[-80:] == DARK.background).all()
    rows = np.where((np.abs(out - np.array(DARK.background)).max(axis=-1) > 40).any(axis=1))[0]
    cols = np.where((np.abs(out - np.array(DARK.background)).max(axis=-1) > 40).any(axis=0))[0]
    assert abs((rows[0] + rows[-1]) / 2 - 111.5) <= 1.5, "content vertically centered"
    assert abs((cols[0] + cols[-1]) / 2 - 111.5) <= 1.5, "content horizontally centered"
    assert luma(out[112, 112]) > 200, "dark glyph recoloured to the dark theme foreground"


def glyph_l(size: int = 48) -> Image.Image:
    """A black ring on white, as an opaque grayscale image (no alpha channel)."""
    image = Image.new("L", (size, size), 255)
    for y in range(size):
        for x in range(size):
            if 14**2 <= (x - size / 2) ** 2 + (y - size / 2) ** 2 <= 20**2:
                image.putpixel((x, y), 0)
    return image


def png_variants() -> dict[str, Image.Image]:
    ring = glyph_l()
    alpha = ring.point(lambda v: 255 - v)
    la = Image.merge("LA", (Image.new("L", ring.size, 0), alpha))
    palette = la.convert("RGBA").convert("P", palette=Image.Palette.ADAPTIVE)
    palette_transparent = Image.new("P", ring.size, 0)
    palette_transparent.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    palette_transparent.paste(1, mask=alpha.point(lambda v: 255 if v > 128 else 0))
    palette_transparent.info["transparency"] = 0
    sixteen = Image.fromarray(np.asarray(ring).astype(np.uint16) * 257)
    return {
        "grayscale-opaque": ring,
        "one-bit": ring.convert("1"),
        "la": la,
        "palette": palette,
        "palette-transparent": palette_transparent,
        "16-bit": sixteen,
        "rgb-opaque": ring.convert("RGB"),
    }


@pytest.mark.parametrize("variant", sorted(png_variants()))
def test_png_modes_give_the_same_contract(tmp_path: Path, variant: str) -> None:
    path = save_png(png_variants()[variant], tmp_path, f"{variant}.png")
    light, dark = render_icon(path, LIGHT), render_icon(path, DARK)
    for image, settings in ((light, LIGHT), (dark, DARK)):
        assert image.size == (224, 224) and image.mode == "RGB"
        array = pixels(image)
        assert (array[0] == settings.background).all(), f"{variant}: border must be the theme background"
        assert 0.05 < ink_fraction(image, settings) < 0.6, f"{variant}: glyph missing or a solid block"
        # The white backdrop of opaque icons disappears; the ring's centre is the theme background.
        assert np.abs(array[112, 112] - np.array(settings.background)).max() < 30, variant
    assert luma(pixels(dark)).max() > 200, f"{variant}: dark theme glyph must be light"


# ------------------------------------------------------------------------------------------------
# Bad and hostile input: each a RenderError with a clear reason


def truncated_png(tmp_path: Path) -> Path:
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(buffer, "PNG")
    return write(tmp_path, "truncated.png", buffer.getvalue()[: len(buffer.getvalue()) // 2])


def bomb_png(tmp_path: Path) -> Path:
    """A tiny file whose header claims 100000 x 100000 pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of header
    ihdr[4:12] = struct.pack(">II", 100_000, 100_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return write(tmp_path, "bomb.png", bytes(data))


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><text>&b;</text></svg>'
)

BAD_INPUTS = {
    "malformed": (
        lambda p: write(p, "bad.svg", "<svg xmlns='http://www.w3.org/2000/svg'><path d='M0 0'"),
        "malformed",
    ),
    "zero-viewbox": (
        lambda p: write(p, "zero.svg", svg('<path d="M0 0h1"/>', 'viewBox="0 0 0 24"')),
        "viewBox",
    ),
    "zero-size": (
        lambda p: write(p, "zs.svg", svg('<path d="M0 0h1"/>', 'width="0" height="24"')),
        "zero-size",
    ),
    "no-size": (lambda p: write(p, "ns.svg", svg('<path d="M0 0h1"/>', "")), "no size"),
    "not-svg": (lambda p: write(p, "html.svg", "<html><body/></html>"), "not an SVG"),
    "entities": (lambda p: write(p, "laughs.svg", BILLION_LAUGHS), "entities"),
    "blank": (
        lambda p: write(p, "blank.svg", svg('<path d="M0 0h24v24H0z" fill="none"/>')),
        "renders nothing",
    ),
    "empty-file": (lambda p: write(p, "empty.svg", b""), "empty"),
    "missing-file": (lambda p: p / "does-not-exist.svg", "cannot read"),
    "truncated-png": (truncated_png, "truncated"),
    "bomb-png": (bomb_png, "decompression-bomb"),
    "garbage-png": (lambda p: write(p, "garbage.png", b"not an image at all"), "not a readable image"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_clear_render_error(tmp_path: Path, case: str) -> None:
    make, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(RenderError) as caught:
        render_icon(path, LIGHT)
    assert expected.lower() in caught.value.reason.lower(), caught.value.reason
    assert str(path) in str(caught.value), "the error names the item"


def test_oversized_svg_is_refused_before_parsing(tmp_path: Path) -> None:
    path = write(tmp_path, "big.svg", svg("<!--" + "x" * 5000 + '--><path d="M0 0h24"/>'))
    with pytest.raises(RenderError, match="too large"):
        render_icon(path, RenderSettings(max_svg_bytes=1000))


def test_slow_svg_times_out(tmp_path: Path) -> None:
    circles = "".join(f'<circle cx="{i % 24}" cy="{i // 1000}" r="1"/>' for i in range(20_000))
    path = write(tmp_path, "slow.svg", svg(circles))
    with pytest.raises(RenderError, match="timed out after 0.3s"):
        render_icon(path, RenderSettings(timeout_s=0.3))


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        _CountingHandler.requests.append(self.path)
        body = b"@import url(x.css); rect { fill: red }"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def counting_server() -> Iterator[str]:
    _CountingHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def external_svgs(base: str, tmp_path: Path) -> dict[str, str]:
    local_file = write(tmp_path, "secret.svg", svg('<path d="M0 0h24"/>'))
    rect = '<rect x="2" y="2" width="20" height="20"/>'
    return {
        "image-href": svg(f'<image href="{base}/a.png" width="24" height="24"/>{rect}'),
        "image-xlink": svg(f'<image xlink:href="{base}/b.png" width="24" height="24"/>{rect}'),
        "use-remote": svg(f'<use xlink:href="{base}/c.svg#icon"/>{rect}'),
        "file-url": svg(f'<use href="file://{local_file}#x"/>{rect}'),
        "relative-file": svg(f'<image href="secret.svg" width="24" height="24"/>{rect}'),
        "css-import": svg(f'<style>@import url("{base}/d.css");</style>{rect}'),
        "css-url": svg(f"<style>rect {{ fill: url({base}/e.svg#g); }}</style>{rect}"),
        "fill-url": svg(f'<rect width="24" height="24" fill="url({base}/f.svg#g)"/>'),
        "style-attr-url": svg(f'<rect width="24" height="24" style="filter: url(\'{base}/g.svg#f\')"/>'),
        "stylesheet-pi": f'<?xml-stylesheet href="{base}/h.css"?>' + svg(rect),
    }


def test_external_references_are_refused_and_never_fetched(tmp_path: Path, counting_server: str) -> None:
    cases = external_svgs(counting_server, tmp_path)
    for name, content in cases.items():
        path = write(tmp_path, f"{name}.svg", content)
        with pytest.raises(RenderError, match="external reference") as caught:
            render_icon(path, LIGHT)
        assert name in str(caught.value)
    assert _CountingHandler.requests == [], f"the renderer fetched {_CountingHandler.requests}"
    # The server did work: a request made on purpose is counted, so the empty list above means something.
    urllib.request.urlopen(f"{counting_server}/probe", timeout=5).read()
    assert _CountingHandler.requests == ["/probe"]


def test_internal_references_and_data_urls_still_render(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 255)).save(buffer, "PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body = (
        '<defs><linearGradient id="g"><stop offset="0" stop-color="#000"/></linearGradient>'
        '<path id="p" d="M4 4h8v8H4z"/></defs><use href="#p" fill="url(#g)"/>'
        f'<image href="{data_url}" x="12" y="12" width="8" height="8"/>'
    )
    image = render_icon(write(tmp_path, "internal.svg", svg(body)), LIGHT)
    assert ink_fraction(image, LIGHT) > 0.05


# ------------------------------------------------------------------------------------------------
# Store and batches


def test_settings_key_covers_output_not_limits() -> None:
    assert LIGHT.key() != DARK.key()
    assert LIGHT.key() != RenderSettings(size=128).key()
    assert LIGHT.key() == RenderSettings(timeout_s=3, max_svg_bytes=10).key()
    with pytest.raises(ValueError, match="theme"):
        RenderSettings(theme="sepia")  # type: ignore[arg-type]


def test_render_batch_renders_once_and_carries_on_after_failures(tabler_icons: Path, tmp_path: Path) -> None:
    good = [
        record_for(p, f"tabler:{p.parent.name}:{p.stem}")
        for p in sorted(tabler_icons.glob("*/bell*.svg"))[:6]
    ]
    duplicate = IconRecord(**{**good[0].to_row(), "icon_id": "copy-of-first", "tags": ()})
    bad = [
        record_for(write(tmp_path, "bad.svg", "<svg")),
        record_for(write(tmp_path, "zero.svg", svg('<path d="M0 0h1"/>', 'viewBox="0 0 24 0"'))),
        record_for(bomb_png(tmp_path)),
    ]
    records = [bad[0], *good[:3], bad[1], duplicate, *good[3:], bad[2]]
    store = RenderStore(tmp_path / "store")
    calls: list[tuple[int, int]] = []

    first = render_batch(records, LIGHT, store, workers=2, progress=lambda d, t: calls.append((d, t)))
    assert [o.icon_id for o in first.outcomes] == [r.icon_id for r in records]
    assert first.failed == 3 and first.rendered == len(good) + 1
    reasons = {o.icon_id: o.reason for o in first.failures}
    assert "malformed" in reasons[bad[0].icon_id] and "viewBox" in reasons[bad[1].icon_id]
    assert "decompression-bomb" in reasons[bad[2].icon_id]
    by_id = first.by_icon()
    assert by_id["copy-of-first"].png_path == by_id[good[0].icon_id].png_path
    for record in good:
        png = Path(by_id[record.icon_id].png_path)
        assert png == store.path_for(record.content_hash, LIGHT)
        with Image.open(png) as image:
            # A gray render is stored as 8-bit gray; read back as RGB it is exactly the render.
            assert image.size == (224, 224) and image.mode in ("L", "RGB")
            assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(render_icon(record, LIGHT)))
    assert calls[-1] == (len(good) + len(bad), len(good) + len(bad))
    assert not list((tmp_path / "store").rglob(".tmp-*")), "no temp files left behind"

    second = render_batch(records, LIGHT, store, workers=2)
    assert second.rendered == 0 and second.cached == len(good) + 1 and second.failed == 3

    dark = render_batch(good, DARK, store, workers=1, show_progress_bar=False)
    assert dark.rendered == len(good), "other settings, other store folder"


def test_render_batch_times_out_one_icon_and_finishes_the_rest(tabler_icons: Path, tmp_path: Path) -> None:
    circles = "".join(f'<circle cx="{i % 24}" cy="{i // 1000}" r="1"/>' for i in range(20_000))
    slow = record_for(write(tmp_path, "slow.svg", svg(circles)))
    good = record_for(tabler_icons / "outline" / "bell.svg")
    result = render_batch([slow, good], RenderSettings(timeout_s=0.3), RenderStore(tmp_path), workers=2)
    assert result.by_icon()[good.icon_id].status == "rendered"
    assert "timed out" in result.by_icon()[slow.icon_id].reason


def test_preview_grid_lays_out_cells_and_tolerates_missing_files(tabler_icons: Path, tmp_path: Path) -> None:
    pngs = []
    for i, path in enumerate(sorted((tabler_icons / "outline").glob("b*.svg"))[:5]):
        png = tmp_path / f"{i}.png"
        render_icon(path, LIGHT).save(png)
        pngs.append(png)
    pngs.append(tmp_path / "missing.png")
    sheet = preview_grid(pngs, columns=4, cell=64, labels=[p.stem for p in pngs])
    assert sheet.size == (4 * 64, 2 * (64 + 24))  # two label lines under each cell
    assert ink_fraction(sheet.crop((0, 0, 64, 64)), LIGHT) > 0.02
    assert preview_grid([], columns=3).size == (64, 64)
