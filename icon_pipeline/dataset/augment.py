"""Image augmentations for training and degradations for img2img benchmark queries.

`augment` keeps the two steps of the prototype this project started from, exact logic: with
probability `p_downsample` downsample by a scale in [min_scale, 1) with NEAREST and upsample back
with BICUBIC; with probability `p_blur` apply GaussianBlur(radius). Crop and shift come first,
each with its own probability (see AugmentConfig for why they are on by default).

`degrade` makes the "screenshot" copies used as img2img queries. Every random choice comes
from the `random.Random` passed in, so a seeded caller gets identical pixels on every run.

Used by the training job as well (torch-free).
"""

from __future__ import annotations

import io
import random
from collections import Counter
from dataclasses import dataclass

from PIL import Image, ImageFilter

from icon_pipeline.core.augmentation import AugmentConfig  # its home is core/; imported from here too

DEGRADATION_KINDS: tuple[str, ...] = ("downsample", "blur", "crop", "aspect", "jpeg", "dark")


def background_color(image: Image.Image) -> tuple[int, ...]:
    """The theme background: the most common of the four corner pixels."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    corners = [rgb.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
    return Counter(corners).most_common(1)[0][0]


def downsample_upsample(image: Image.Image, scale: float) -> Image.Image:
    w, h = image.size
    small = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.NEAREST)
    return small.resize((w, h), Image.Resampling.BICUBIC)


def crop_box_resize(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """Keep the window (left, top, width, height), scaled back to full size (BICUBIC)."""
    left, top, width, height = box
    return image.crop((left, top, left + width, top + height)).resize(image.size, Image.Resampling.BICUBIC)


def crop_box(size: tuple[int, int], area: float, rng: random.Random) -> tuple[int, int, int, int]:
    """A square-ish window of `area` share at a random place: (left, top, width, height)."""
    w, h = size
    side = area**0.5
    cw, ch = max(1, round(w * side)), max(1, round(h * side))
    return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch


def crop_resize(image: Image.Image, area: float, rng: random.Random) -> Image.Image:
    """Keep a square-ish window of `area` share at a random place, scaled back to full size."""
    return crop_box_resize(image, crop_box(image.size, area, rng))


def shift(image: Image.Image, dx: int, dy: int) -> Image.Image:
    """Translate without wrap-around; uncovered pixels take the background colour."""
    canvas = Image.new(image.mode, image.size, background_color(image)[: len(image.getbands())])
    canvas.paste(image, (dx, dy))
    return canvas


@dataclass(frozen=True)
class AugmentDraw:
    """One augmentation draw: what `augment` does to one image (None: that step is skipped).
    The training job's batched torch path (model/training/augment_batch.py) draws the same
    quantities from the same distributions and applies them the same way."""

    crop: tuple[int, int, int, int] | None = None  # left, top, width, height
    shift: tuple[int, int] | None = None  # dx, dy in pixels
    scale: float | None = None  # downsample scale
    blur_radius: float | None = None


def draw_augment(config: AugmentConfig, size: tuple[int, int], rng: random.Random) -> AugmentDraw:
    """The random choices of one augmentation of an image of `size`. With p_crop = p_shift = 0 it
    draws exactly the random numbers of the prototype's two-step recipe (downsample, blur)."""
    crop = offset = scale = radius = None
    # Optional geometry first; no random numbers are drawn for a disabled option.
    if config.p_crop > 0 and rng.random() < config.p_crop:
        crop = crop_box(size, rng.uniform(*config.crop_scale), rng)
    if config.p_shift > 0 and rng.random() < config.p_shift:
        limit_x, limit_y = round(size[0] * config.max_shift), round(size[1] * config.max_shift)
        offset = (rng.randint(-limit_x, limit_x), rng.randint(-limit_y, limit_y))
    # The prototype's two steps.
    if rng.random() < config.p_downsample:
        scale = rng.uniform(config.min_scale, 1.0)
    if rng.random() < config.p_blur:
        radius = rng.uniform(*config.blur_radius)
    return AugmentDraw(crop, offset, scale, radius)


def apply_augment(image: Image.Image, draw: AugmentDraw) -> Image.Image:
    """Crop, shift, downsample-upsample, blur: the steps `draw` chose, in that order."""
    image = image.convert("RGB")
    if draw.crop is not None:
        image = crop_box_resize(image, draw.crop)
    if draw.shift is not None:
        image = shift(image, *draw.shift)
    if draw.scale is not None:
        image = downsample_upsample(image, draw.scale)
    if draw.blur_radius is not None:
        image = image.filter(ImageFilter.GaussianBlur(draw.blur_radius))
    return image


def augment(image: Image.Image, config: AugmentConfig, rng: random.Random) -> Image.Image:
    """One training augmentation draw, applied (draw_augment, then apply_augment)."""
    return apply_augment(image, draw_augment(config, image.size, rng))


# --- screenshot degradations for img2img queries ----------------------------------------------

_DARK_BACKGROUNDS = ((18, 18, 18), (30, 30, 30), (32, 33, 36), (13, 17, 23), (40, 44, 52))
_LIGHT_FOREGROUNDS = ((255, 255, 255), (230, 230, 230), (201, 209, 217), (171, 178, 191))


def pad_to_aspect(image: Image.Image, ratio: float, horizontal: bool, rng: random.Random) -> Image.Image:
    """Place the icon at a random spot on a wider (or taller) canvas of the background colour."""
    w, h = image.size
    size = (round(w * ratio), h) if horizontal else (w, round(h * ratio))
    canvas = Image.new("RGB", size, background_color(image))
    offset = (rng.randint(0, size[0] - w), 0) if horizontal else (0, rng.randint(0, size[1] - h))
    canvas.paste(image, offset)
    return canvas


def dark_theme(
    image: Image.Image, background: tuple[int, int, int], foreground: tuple[int, int, int]
) -> Image.Image:
    """Recolour a light-theme render: ink (dark pixels) becomes `foreground` on `background`."""
    ink = Image.eval(image.convert("L"), lambda v: 255 - v)  # 255 where the icon is drawn
    return Image.composite(
        Image.new("RGB", image.size, foreground), Image.new("RGB", image.size, background), ink
    )


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def degrade(image: Image.Image, kind: str, rng: random.Random) -> Image.Image:
    """A screenshot-like copy of an icon render, for img2img queries (see DEGRADATION_KINDS)."""
    image = image.convert("RGB")
    if kind == "downsample":
        return downsample_upsample(image, rng.uniform(0.15, 0.4))
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.5)))
    if kind == "crop":
        return crop_resize(image, rng.uniform(0.6, 0.85), rng)
    if kind == "aspect":
        return pad_to_aspect(image, rng.uniform(1.5, 2.5), rng.random() < 0.5, rng)
    if kind == "jpeg":
        return jpeg_roundtrip(image, rng.randint(8, 25))
    if kind == "dark":
        return dark_theme(image, rng.choice(_DARK_BACKGROUNDS), rng.choice(_LIGHT_FOREGROUNDS))
    raise ValueError(f"unknown degradation kind {kind!r}; known: {', '.join(DEGRADATION_KINDS)}")
