"""Batched image embedding with decoding overlapped with the model."""

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


def embed_image_files(
    bundle: EncoderBundle,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, float]:
    """L2-normalised embeddings of the PNGs at `paths`, and the seconds it took.

    The next chunk is decoded on a thread while the model embeds the current one (PIL releases
    the GIL while decoding), so decoding does not stall the model.
    """
    started = time.perf_counter()
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
