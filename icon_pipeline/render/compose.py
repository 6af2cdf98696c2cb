"""Theme compositing: a glyph normalised to the theme foreground and centered on its background."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from icon_pipeline.render.settings import RenderError, RenderSettings

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


def compose_on_theme(glyph: Image.Image, settings: RenderSettings) -> Image.Image:
    """Recolour the fitted glyph, then composite it centered on a theme-background canvas."""
    recoloured = _normalise_glyph(glyph, settings)
    canvas = Image.new("RGB", (settings.size, settings.size), settings.background)
    offset = ((settings.size - recoloured.width) // 2, (settings.size - recoloured.height) // 2)
    # paste with the glyph as its own mask blends by alpha (un-premultiplied RGBA).
    canvas.paste(recoloured, offset, recoloured)
    return canvas
