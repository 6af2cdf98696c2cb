"""Batched image embedding with decoding overlapped with the model.

A model with a frozen trunk (trunk_lit) embeds files through the training job's feature store when
given `cache_dir` (model/training/features.py): the trunk's features of a file (same path, size and
time) are reused, so the base and the fine-tuned checkpoint, and the training run before them,
pass the library through the trunk once between them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from icon_pipeline.model.checkpoint import EncoderBundle


def _decode(paths: Sequence[str | Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def _cached_trunk_embeddings(
    bundle: EncoderBundle,
    paths: Sequence[str | Path],
    cache_dir: Path,
    progress: Callable[[int, int], None] | None,
) -> np.ndarray:
    import torch

    from icon_pipeline.model.training.features import trunk_features

    pooled, failures = trunk_features(bundle.model, [str(p) for p in paths], cache_dir, progress)
    if failures:
        path, reason = next(iter(failures.items()))
        raise OSError(f"cannot read {path}: {reason} ({len(failures)} unreadable image(s))")
    with torch.inference_mode():
        return np.concatenate(
            [
                bundle.model.embed_pooled(torch.from_numpy(pooled[start : start + 1024])).float().numpy()
                for start in range(0, len(pooled), 1024)
            ]
        )


def embed_image_files(
    bundle: EncoderBundle,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, float]:
    """L2-normalised embeddings of the PNGs at `paths`, and the seconds it took.

    The next chunk is decoded on a thread while the model embeds the current one (PIL releases
    the GIL while decoding), so decoding does not stall the model. A frozen-trunk model with a
    `cache_dir` reuses the decoded images and trunk features found there.
    """
    started = time.perf_counter()
    if cache_dir is not None and hasattr(bundle.model, "embed_pooled") and paths:
        return _cached_trunk_embeddings(bundle, paths, cache_dir, progress), time.perf_counter() - started
    chunks = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    out: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = pool.submit(_decode, chunks[0]) if chunks else None
        for index in range(len(chunks)):
            images = pending.result()
            pending = pool.submit(_decode, chunks[index + 1]) if index + 1 < len(chunks) else None
            out.append(bundle.embed_images(images, batch_size=batch_size))
            if progress:
                progress(min((index + 1) * batch_size, len(paths)), len(paths))
    embeddings = np.concatenate(out) if out else np.zeros((0, bundle.dim), dtype=np.float32)
    return embeddings, time.perf_counter() - started
