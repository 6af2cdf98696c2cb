"""The training job's input path on the CPU: the batched torch augmentation against the PIL one it
replaces (same draws, same pixels, bit-exact with a seed), torch patches against the SigLIP2
processor, the decoded-image cache across runs and the eval cache within one, and the GPU recipe's
config profiles. Real Tabler renders; no GPU needed (the same code runs there)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from transformers import Siglip2ImageProcessorPil

from icon_pipeline.core.config import ConfigError, load_config
from icon_pipeline.core.paths import REPO_ROOT
from icon_pipeline.dataset.augment import AugmentConfig, apply_augment, draw_augment
from icon_pipeline.model.checkpoint import build_base_checkpoint, load_checkpoint
from icon_pipeline.model.pixels import PatchGeometry
from icon_pipeline.model.training.augment_batch import (
    BatchAugmenter,
    BatchDraws,
    apply_augmentations,
    draw_augmentations,
)
from icon_pipeline.model.training.data import decode_images, load_eval_data
from icon_pipeline.model.training.trainer import RetrievalEvaluator
from icon_pipeline_tests.model.test_modeling import RenderedIcon, render_tabler_subset

SIZE = 224
DRAWS = 4000  # per path: enough for a KS test to see a shifted range or a wrong probability


@pytest.fixture(scope="module")
def icons(project_tmp: Path, tabler_package: Path) -> list[RenderedIcon]:
    return render_tabler_subset(tabler_package, project_tmp / "input-png", count=12)


@pytest.fixture(scope="module")
def pixels(icons: list[RenderedIcon]) -> torch.Tensor:
    """(24, 224, 224, 3) uint8: every icon's outline and filled render."""
    paths = [p for icon in icons for p in (icon.outline_png, icon.filled_png)]
    return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]))


def _pil_draws(config: AugmentConfig, count: int) -> list[Any]:
    rng = random.Random(11)
    return [draw_augment(config, (SIZE, SIZE), rng) for _ in range(count)]


def _torch_draws(config: AugmentConfig, count: int) -> list[Any]:
    draws = draw_augmentations(config, count, (SIZE, SIZE), torch.Generator().manual_seed(11))
    return [draws.row(i) for i in range(count)]


def _summary(draws: list[Any]) -> dict[str, np.ndarray]:
    crops = [d.crop for d in draws if d.crop]
    return {
        "crop": np.array([d.crop is not None for d in draws], dtype=float),
        "shift": np.array([d.shift is not None for d in draws], dtype=float),
        "downsample": np.array([d.scale is not None for d in draws], dtype=float),
        "blur": np.array([d.blur_radius is not None for d in draws], dtype=float),
        "crop side": np.array([w for _, _, w, _ in crops], dtype=float),
        # Where the window sits within the room it has (0 = left/top edge, 1 = right/bottom).
        "crop left": np.array([left / max(1, SIZE - w) for left, _, w, _ in crops]),
        "crop top": np.array([top / max(1, SIZE - h) for _, top, _, h in crops]),
        "shift dx": np.array([d.shift[0] for d in draws if d.shift], dtype=float),
        "shift dy": np.array([d.shift[1] for d in draws if d.shift], dtype=float),
        "scale": np.array([d.scale for d in draws if d.scale is not None]),
        "blur radius": np.array([d.blur_radius for d in draws if d.blur_radius is not None]),
    }


def test_torch_draws_follow_the_pil_paths_distributions() -> None:
    """Crop positions and sizes, shifts, scales and blur radii: the same distributions (two-sample
    KS tests), and each step as often (a binomial z-test), on DRAWS draws of each path."""
    config = AugmentConfig(p_crop=0.4, p_shift=0.3, p_downsample=0.5, p_blur=0.3)
    pil, ours = _summary(_pil_draws(config, DRAWS)), _summary(_torch_draws(config, DRAWS))
    for name in ("crop", "shift", "downsample", "blur"):
        rate = (pil[name].mean() + ours[name].mean()) / 2
        z = (ours[name].mean() - pil[name].mean()) / np.sqrt(2 * rate * (1 - rate) / DRAWS)
        assert abs(z) < 4, (name, pil[name].mean(), ours[name].mean())
    for name in ("crop side", "crop left", "crop top", "shift dx", "shift dy", "scale", "blur radius"):
        assert len(ours[name]) > 500, name
        result = stats.ks_2samp(pil[name], ours[name])
        assert result.pvalue > 1e-3, (name, result)
    # The ranges themselves, not only their shape.
    assert ours["crop side"].min() >= round(SIZE * 0.7**0.5) and ours["crop side"].max() <= SIZE
    assert ours["scale"].min() >= config.min_scale and ours["scale"].max() < 1.0
    limit = round(SIZE * config.max_shift)
    assert ours["shift dx"].min() == -limit and ours["shift dx"].max() == limit


def test_a_wrong_range_is_caught_by_the_distribution_test() -> None:
    """The KS test above can fail: a blur range shifted by a tenth is seen at once."""
    config = AugmentConfig(p_blur=1.0)
    shifted = AugmentConfig(p_blur=1.0, blur_radius=(0.6, 1.6))
    pil = _summary(_pil_draws(config, DRAWS))["blur radius"]
    ours = _summary(_torch_draws(shifted, DRAWS))["blur radius"]
    assert stats.ks_2samp(pil, ours).pvalue < 1e-6


@pytest.mark.parametrize(
    "config",
    [
        AugmentConfig(p_crop=1, p_shift=0, p_downsample=0, p_blur=0),
        AugmentConfig(p_crop=0, p_shift=1, p_downsample=0, p_blur=0),
        AugmentConfig(p_crop=0, p_shift=0, p_downsample=1, p_blur=0),
        AugmentConfig(p_crop=0, p_shift=0, p_downsample=0, p_blur=1),
        AugmentConfig(p_crop=0.5, p_shift=0.5, p_downsample=0.5, p_blur=0.5),
    ],
    ids=["crop", "shift", "downsample", "blur", "all"],
)
def test_one_draw_gives_the_pil_paths_pixels(pixels: torch.Tensor, config: AugmentConfig) -> None:
    """The same draw applied by both paths to real renders: the same image, up to the bicubic
    kernel and the Gaussian's box approximation at the strokes' edges."""
    draws = _pil_draws(config, len(pixels))
    expected = np.stack(
        [
            np.asarray(apply_augment(Image.fromarray(image.numpy()), d))
            for image, d in zip(pixels, draws, strict=True)
        ]
    ).astype(np.float32)
    ours = apply_augmentations(pixels, BatchDraws.from_draws(draws)).permute(0, 2, 3, 1).numpy()
    difference = np.abs(ours - expected)
    assert difference.mean() < 1.0, difference.mean()  # out of 255
    assert np.percentile(difference, 99) < 12, np.percentile(difference, 99)
    # Where a stroke went is where it goes: the ink's centre of mass agrees to a pixel.
    for image_ours, image_pil in zip(ours, expected, strict=True):
        ink_ours, ink_pil = 255 - image_ours.mean(axis=2), 255 - image_pil.mean(axis=2)
        grid = np.arange(SIZE)
        for axis in (0, 1):
            centre_ours = (ink_ours.sum(axis=1 - axis) * grid).sum() / max(ink_ours.sum(), 1)
            centre_pil = (ink_pil.sum(axis=1 - axis) * grid).sum() / max(ink_pil.sum(), 1)
            assert abs(centre_ours - centre_pil) < 1.0


def test_a_seed_gives_bit_identical_batches(pixels: torch.Tensor) -> None:
    augmenter = BatchAugmenter(AugmentConfig(), PatchGeometry(patch_size=16, max_num_patches=196))
    first = augmenter.train_inputs(pixels, seed=7)["pixel_values"]
    assert torch.equal(first, augmenter.train_inputs(pixels, seed=7)["pixel_values"])
    assert not torch.equal(first, augmenter.train_inputs(pixels, seed=8)["pixel_values"])


@pytest.mark.parametrize(
    ("patch_size", "patches", "tolerance"), [(16, 196, 1e-6), (32, 1, 2 / 255), (16, 256, 2 / 255)]
)
def test_torch_patches_are_the_processors(
    pixels: torch.Tensor, patch_size: int, patches: int, tolerance: float
) -> None:
    """At the processor's own size (224 px, 196 patches) the same numbers; where it resizes, the
    same to about one grey level (torch's antialiased bilinear for PIL's)."""
    processor = Siglip2ImageProcessorPil(patch_size=patch_size, max_num_patches=patches)
    images = [Image.fromarray(image.numpy()) for image in pixels[:6]]
    expected = processor(images, max_num_patches=patches, patch_size=patch_size, return_tensors="pt")
    ours = PatchGeometry.of(processor, patches).patchify(pixels[:6])
    assert torch.equal(ours["spatial_shapes"], expected["spatial_shapes"])
    assert torch.equal(ours["pixel_attention_mask"], expected["pixel_attention_mask"].int())
    assert (ours["pixel_values"] - expected["pixel_values"]).abs().max() <= tolerance


# --- the decoded-image cache and the eval cache ------------------------------------------------


def test_the_decoded_cache_is_reused_across_runs_until_an_input_changes(
    icons: list[RenderedIcon], tmp_path: Path
) -> None:
    paths = []
    for icon in icons:
        for source in (icon.outline_png, icon.filled_png):
            paths.append(str(tmp_path / "png" / source.name))
            Path(paths[-1]).parent.mkdir(exist_ok=True)
            Path(paths[-1]).write_bytes(source.read_bytes())
    first = decode_images(paths, 64, tmp_path / "cache", workers=2)
    cache_file = tmp_path / "cache" / f"images-{first.key}.npy"
    written = cache_file.stat().st_mtime_ns
    again = decode_images(paths, 64, tmp_path / "cache", workers=2)  # the next run
    assert again.key == first.key and cache_file.stat().st_mtime_ns == written
    assert np.array_equal(np.asarray(again.array), np.asarray(first.array))
    # Another drawing under the same name: a new cache, decoded from the new file.
    Image.new("RGB", (224, 224), (0, 0, 0)).save(paths[3])
    os.utime(paths[3], ns=(written + 10**9, written + 10**9))
    changed = decode_images(paths, 64, tmp_path / "cache", workers=2)
    assert changed.key != first.key
    assert int(np.asarray(changed.array[3]).max()) == 0 and int(np.asarray(first.array[3]).min()) < 255
    assert np.array_equal(np.asarray(changed.array[4]), np.asarray(first.array[4]))


def test_the_parallel_decode_matches_the_single_threaded_one(
    icons: list[RenderedIcon], tmp_path: Path
) -> None:
    """Over PROCESS_DECODE_MIN_IMAGES paths the cache is decoded by forked processes: the same rows,
    and an unreadable file still a named failure."""
    sources = [p for icon in icons for p in (icon.outline_png, icon.filled_png)]
    paths = [str(sources[i % len(sources)]) for i in range(520)] + [str(tmp_path / "missing.png")]
    parallel = decode_images(paths, 32, tmp_path / "parallel", workers=2)
    serial = decode_images(paths, 32, tmp_path / "serial", workers=1)
    assert np.array_equal(np.asarray(parallel.array), np.asarray(serial.array))
    assert list(parallel.failures) == [str(tmp_path / "missing.png")]
    assert "FileNotFoundError" in parallel.failures[str(tmp_path / "missing.png")]


@pytest.fixture(scope="module")
def eval_inputs(project_tmp: Path, icons: list[RenderedIcon]) -> dict[str, Any]:
    import json

    root = project_tmp / "input-eval"
    root.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "eval_id": f"{icon.name}:0",
            "group_id": icon.name,
            "caption": icon.captions[-1],
            "icon_ids": [f"outline:{icon.name}", f"filled:{icon.name}"],
            "representative_icon_id": f"outline:{icon.name}",
        }
        for icon in icons
    ]
    (root / "eval.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    icon_map = {
        f"{s}:{icon.name}": str(getattr(icon, f"{s}_png")) for icon in icons for s in ("outline", "filled")
    }
    (root / "icons.json").write_text(json.dumps(icon_map))
    base = build_base_checkpoint(root / "base", [c for icon in icons for c in icon.captions], size="tiny")
    return {"root": root, "eval": root / "eval.jsonl", "icons": root / "icons.json", "checkpoint": base}


def test_the_eval_cache_is_prepared_once_and_scores_as_the_processor_path(
    eval_inputs: dict[str, Any],
) -> None:
    data = load_eval_data(
        eval_inputs["eval"], eval_inputs["icons"], None, SIZE, eval_inputs["root"] / "cache"
    )
    bundle = load_checkpoint(eval_inputs["checkpoint"])
    evaluator = RetrievalEvaluator(data, bundle, batch_size=5)
    first = evaluator(bundle.model)
    assert evaluator.cache.preparations == 1
    assert evaluator(bundle.model) == first and evaluator.cache.preparations == 1  # reused, same scores
    # The cache's embeddings are the PIL processor path's (what the job did before it).
    texts, images = evaluator.embed(bundle.model)
    reference_images = bundle.embed_images([data.images.image(row) for row in data.image_rows])
    reference_texts = bundle.embed_texts([row.caption for row in data.rows])
    assert np.abs(images - reference_images).max() < 1e-4
    assert np.abs(texts - reference_texts).max() < 1e-4
    # Another eval gallery (new inputs): prepared again, not served from the old one.
    evaluator.cache.data = load_eval_data(
        eval_inputs["eval"], eval_inputs["icons"], None, 64, eval_inputs["root"] / "cache"
    )
    evaluator(bundle.model)
    assert evaluator.cache.preparations == 2


# --- the GPU recipe's profiles ------------------------------------------------------------------


def test_the_gpu_profiles_extend_the_main_config_with_only_what_differs() -> None:
    main = load_config(REPO_ROOT / "icon_pipeline.yaml")
    small = load_config(REPO_ROOT / "configs" / "gpu-small.yaml")
    base = load_config(REPO_ROOT / "configs" / "gpu-base.yaml")
    assert (small.model.size, small.model.text_tower) == ("small", "minilm")
    assert (base.model.size, base.model.text_tower) == ("base", "own")
    assert small.sources == main.sources and small.corpus == main.corpus and small.eval == main.eval
    assert small.training.augmentation == main.training.augmentation
    assert base.training.max_steps == small.training.max_steps  # inherited through gpu-small.yaml
    assert base.training.per_device_batch_size == 256 != small.training.per_device_batch_size


def test_a_profile_that_extends_itself_or_nothing_is_refused(tmp_path: Path) -> None:
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(loop)
    missing = tmp_path / "missing.yaml"
    missing.write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml.*does not exist"):
        load_config(missing)
