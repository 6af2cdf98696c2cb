"""Augmentation preview: pick icons and see training augmentation draws beside the original, with
the configured probabilities and ranges (editable here to try others), re-rolled on demand.

The draws come from icon_pipeline.dataset.augment.augment, the very function the training collator calls.
"""

from __future__ import annotations

import hashlib
import html
import random
import tempfile
from dataclasses import asdict
from pathlib import Path

import gradio as gr
from PIL import Image

from icon_pipeline.apps.common import (
    IconInfo,
    MissingAsset,
    catalog_file,
    load_icons,
    matches,
    missing_page,
    require_batches,
    require_file,
)
from icon_pipeline.dataset.augment import AugmentConfig, augment

TITLE = "Augmentation preview"
MAX_ICONS = 6
MAX_DRAWS = 8
_out_dir: Path | None = None


def configured() -> tuple[AugmentConfig, str]:
    """The training augmentation settings (`training.augmentation` in the pipeline config, the very
    object the training job receives) and where they came from."""
    try:
        from icon_pipeline.core.config import load_config

        return load_config().training.augmentation, "icon_pipeline.yaml (training.augmentation)"
    except Exception as exc:  # show the defaults, and say why
        return AugmentConfig(), f"augmentation defaults (config not usable: {exc})"


def missing_assets() -> list[MissingAsset]:
    checks = [require_file(catalog_file(), "icon_catalog"), require_batches("rendered", "rendered_icons")]
    return [m for m in checks if m]


def describe(config: AugmentConfig) -> str:
    low, high = config.blur_radius
    lines = [
        f"- downsample: p = {config.p_downsample:.2f}, scale in [{config.min_scale:.2f}, 1) "
        "(NEAREST down, BICUBIC up)",
        f"- blur: p = {config.p_blur:.2f}, GaussianBlur radius in [{low:.2f}, {high:.2f}]",
    ]
    if config.p_crop:
        lines.append(
            f"- crop: p = {config.p_crop:.2f}, kept area in "
            f"[{config.crop_scale[0]:.2f}, {config.crop_scale[1]:.2f}]"
        )
    if config.p_shift:
        lines.append(f"- shift: p = {config.p_shift:.2f}, up to {config.max_shift:.2f} of the side")
    return "\n".join(lines)


def _output_dir() -> Path:
    # In the system temp dir: Gradio serves files from there, and nothing is left in the project.
    global _out_dir
    if _out_dir is None or not _out_dir.exists():
        _out_dir = Path(tempfile.mkdtemp(prefix="icon-augment-"))
    return _out_dir


def pick_icons(query: str) -> list[IconInfo]:
    """Up to MAX_ICONS rendered icons: comma-separated names/ids first, else a search."""
    icons = [i for i in load_icons().values() if i.png_path]
    wanted = [w.strip() for w in (query or "").split(",") if w.strip()]
    exact = [i for w in wanted for i in icons if w in (i.name, i.icon_id)]
    if exact:
        seen: dict[str, IconInfo] = {}
        for icon in exact:
            seen.setdefault(icon.icon_id, icon)
        return list(seen.values())[:MAX_ICONS]
    found = [i for i in icons if matches(query or "", i.name, i.icon_id, i.tags, i.category)]
    return sorted(found, key=lambda i: (i.name, i.icon_id))[:MAX_ICONS]


def augment_preview(
    query: str,
    draws: float,
    seed: float,
    p_downsample: float,
    min_scale: float,
    p_blur: float,
    blur_low: float,
    blur_high: float,
    p_crop: float = 0.0,
    crop_low: float = 0.7,
    crop_high: float = 1.0,
    p_shift: float = 0.0,
    max_shift: float = 0.1,
) -> tuple[list[tuple[str, str]], str]:
    """(gallery: per icon the original then `draws` augmentations, markdown of the settings used)."""
    missing = missing_assets()
    if missing:
        return [], missing_page(TITLE, missing)
    try:
        config = AugmentConfig(
            p_downsample=float(p_downsample),
            min_scale=float(min_scale),
            p_blur=float(p_blur),
            blur_radius=(float(blur_low), float(blur_high)),
            p_crop=float(p_crop),
            crop_scale=(float(crop_low), float(crop_high)),
            p_shift=float(p_shift),
            max_shift=float(max_shift),
        )
    except (TypeError, ValueError) as exc:
        return [], f"**Error:** {html.escape(str(exc))}"
    count = min(max(1, int(draws or 1)), MAX_DRAWS)
    seed_int = int(seed or 0)
    icons = pick_icons(query)
    if not icons:
        return [], f"**No rendered icon matches** `{html.escape(query or '')}`."
    out = _output_dir()
    key = hashlib.sha256(repr((seed_int, sorted(asdict(config).items()))).encode()).hexdigest()[:10]
    gallery: list[tuple[str, str]] = []
    problems = []
    for icon in icons:
        try:
            with Image.open(icon.png_path) as opened:
                original = opened.convert("RGB")
        except OSError as exc:
            problems.append(f"`{icon.icon_id}`: cannot read {icon.png_path} ({exc})")
            continue
        gallery.append((icon.png_path, f"{icon.name}: original"))
        # One stream per icon and seed, like one epoch of the collator for this icon.
        rng = random.Random(f"{seed_int}:{icon.icon_id}")
        stem = hashlib.sha256(icon.icon_id.encode()).hexdigest()[:12]
        for index in range(1, count + 1):
            path = out / f"{stem}-{key}-{index}.png"
            augment(original, config, rng).save(path)
            gallery.append((str(path), f"{icon.name}: draw {index}"))
    note = f"Seed {seed_int}, {count} draw(s) per icon:\n\n{describe(config)}"
    if problems:
        note += "\n\n" + "\n".join(f"- {p}" for p in problems)
    return gallery, note


def build() -> gr.Blocks:
    if not missing_assets():
        load_icons()  # read once at start-up: the first page load is as fast as the next ones
    config, source = configured()
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\nTraining augmentations as the training job draws them; settings from {source}, "
            "editable below to try others."
        )
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            query = gr.Textbox(label="Icons (names or ids, comma separated, or a search)", value="", scale=4)
            draws = gr.Slider(1, MAX_DRAWS, value=5, step=1, label="Draws per icon", scale=1)
            seed = gr.Number(value=0, precision=0, label="Seed", scale=1)
        with gr.Row():
            show = gr.Button("Show", variant="primary")
            reroll = gr.Button("Re-roll")
            reset = gr.Button("Reset to configured")
        with gr.Accordion("Probabilities and ranges", open=False):
            with gr.Row():
                p_downsample = gr.Slider(0, 1, value=config.p_downsample, step=0.05, label="p downsample")
                min_scale = gr.Slider(0.05, 1, value=config.min_scale, step=0.05, label="min scale")
                p_blur = gr.Slider(0, 1, value=config.p_blur, step=0.05, label="p blur")
                blur_low = gr.Slider(0, 5, value=config.blur_radius[0], step=0.1, label="blur radius from")
                blur_high = gr.Slider(0, 5, value=config.blur_radius[1], step=0.1, label="blur radius to")
            with gr.Row():
                p_crop = gr.Slider(0, 1, value=config.p_crop, step=0.05, label="p crop")
                crop_low = gr.Slider(0.1, 1, value=config.crop_scale[0], step=0.05, label="kept area from")
                crop_high = gr.Slider(0.1, 1, value=config.crop_scale[1], step=0.05, label="kept area to")
                p_shift = gr.Slider(0, 1, value=config.p_shift, step=0.05, label="p shift")
                max_shift = gr.Slider(0, 0.45, value=config.max_shift, step=0.05, label="max shift")
        gallery = gr.Gallery(
            label="Original, then draws", columns=6, height=560, allow_preview=True, fit_columns=False
        )
        settings = [
            p_downsample,
            min_scale,
            p_blur,
            blur_low,
            blur_high,
            p_crop,
            crop_low,
            crop_high,
            p_shift,
            max_shift,
        ]
        inputs = [query, draws, seed, *settings]

        def first_page(q: str) -> tuple:
            missing = missing_assets()
            if missing:
                return missing_page(TITLE, missing), q
            if q:
                return "", q
            icons = [i for i in load_icons().values() if i.png_path]
            return "", ", ".join(sorted({i.name for i in icons})[:3])

        # The public endpoint first: it takes the function's name, the private events reuse it.
        gr.on(
            [show.click, query.submit], augment_preview, inputs, [gallery, status], api_name="augment_preview"
        )
        demo.load(first_page, [query], [status, query], api_visibility="private").then(
            augment_preview, inputs, [gallery, status], api_visibility="private"
        )
        reroll.click(lambda s: int(s or 0) + 1, [seed], [seed], api_visibility="private").then(
            augment_preview, inputs, [gallery, status], api_visibility="private"
        )

        def defaults() -> list[float]:
            current, _ = configured()
            return [
                current.p_downsample,
                current.min_scale,
                current.p_blur,
                *current.blur_radius,
                current.p_crop,
                *current.crop_scale,
                current.p_shift,
                current.max_shift,
            ]

        reset.click(defaults, None, settings, api_visibility="private")
    return demo
