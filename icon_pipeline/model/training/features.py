"""A frozen trunk's features, one row per image file, computed once and kept.

The trunk of a trunk_lit model never changes (its fingerprint names the store), so an image's pooled
features are the same for the base checkpoint, every fine-tune, the training run's eval gallery and
the index: each file (by path, size and modification time) passes through the trunk once. Rows are
float16 (the heads work in float32; 5,120 features of 25k images take 250 MB, not 500).

The store is two files beside each other, replaced atomically on every addition, so a reader sees
either the old or the new version; two writers at once would only lose one's additions (a cache).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from icon_pipeline.model.training.data import decode_image

FEATURE_BATCH = 128
IMAGE_SIZE = 224  # what the processor gives the trunk (196 patches of 16 px)


def file_key(path: str) -> str:
    stat = os.stat(path)
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


class FeatureStore:
    def __init__(self, directory: Path, fingerprint: str, dim: int):
        self.matrix_path = directory / f"trunk-features-{fingerprint}.npy"
        self.keys_path = directory / f"trunk-features-{fingerprint}.keys.json"
        self.dim = dim
        self.directory = directory

    def _load(self) -> tuple[dict[str, int], np.ndarray]:
        if not (self.matrix_path.is_file() and self.keys_path.is_file()):
            return {}, np.zeros((0, self.dim), dtype=np.float16)
        keys = json.loads(self.keys_path.read_text())
        matrix = np.load(self.matrix_path, mmap_mode="r")
        if matrix.shape != (len(keys), self.dim):  # a torn pair of files: start again
            return {}, np.zeros((0, self.dim), dtype=np.float16)
        return {key: row for row, key in enumerate(keys)}, matrix

    def get(self, keys: Sequence[str]) -> dict[int, np.ndarray]:
        """index in `keys` -> float32 features, for the keys the store has."""
        rows, matrix = self._load()
        return {
            i: np.asarray(matrix[rows[key]], dtype=np.float32) for i, key in enumerate(keys) if key in rows
        }

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if not len(keys):
            return
        rows, matrix = self._load()
        order = sorted(rows, key=rows.get)
        combined = np.concatenate([np.asarray(matrix), vectors.astype(np.float16)])
        self.directory.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex
        matrix_tmp = self.matrix_path.with_name(f".{self.matrix_path.name}.{tag}.npy")
        keys_tmp = self.keys_path.with_name(f".{self.keys_path.name}.{tag}")
        np.save(matrix_tmp, combined)
        keys_tmp.write_text(json.dumps([*order, *keys]))
        os.replace(matrix_tmp, self.matrix_path)
        os.replace(keys_tmp, self.keys_path)


def trunk_features(
    model: torch.nn.Module,
    paths: Sequence[str],
    cache_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """(len(paths), pooled_dim) float32 features of the images at `paths` (rows of unreadable files
    are zero) and path -> reason for those. Only files the store lacks are decoded and embedded."""
    store = FeatureStore(cache_dir, model.trunk_fingerprint(), model.config.pooled_dim)
    failures: dict[str, str] = {}
    keys: list[str | None] = []
    for path in paths:
        try:
            keys.append(file_key(path))
        except OSError as error:
            failures[path] = f"{type(error).__name__}: {error}"
            keys.append(None)
    out = np.zeros((len(paths), model.config.pooled_dim), dtype=np.float32)
    known = store.get([k or "" for k in keys])
    for index, vector in known.items():
        out[index] = vector
    todo = [i for i, key in enumerate(keys) if key is not None and i not in known]
    device = next(model.parameters()).device
    added_keys: list[str] = []
    added: list[np.ndarray] = []

    def decode(index: int) -> np.ndarray | None:
        try:
            return decode_image(paths[index], IMAGE_SIZE)
        except Exception as error:  # a corrupt file is recorded, the rest carry on
            failures[paths[index]] = f"{type(error).__name__}: {error}"
            return None

    model.eval()
    batches = [todo[s : s + FEATURE_BATCH] for s in range(0, len(todo), FEATURE_BATCH)]
    # Decoding (PIL releases the GIL) runs on threads, one batch ahead of the trunk.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:

        def decode_batch(batch: list[int]) -> list[np.ndarray | None]:
            return list(pool.map(decode, batch))

        with ThreadPoolExecutor(max_workers=1) as ahead:
            pending = ahead.submit(decode_batch, batches[0]) if batches else None
            done = 0
            for number, batch in enumerate(batches):
                arrays = pending.result()
                pending = (
                    ahead.submit(decode_batch, batches[number + 1]) if number + 1 < len(batches) else None
                )
                good = [(i, a) for i, a in zip(batch, arrays, strict=True) if a is not None]
                if good:
                    pixels = torch.from_numpy(np.stack([a for _, a in good])).to(device)
                    pixels = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # the processor's [-1, 1]
                    with (
                        torch.inference_mode(),
                        torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
                    ):
                        vectors = model.pooled_features(pixels).float().cpu().numpy()
                    for (i, _), vector in zip(good, vectors, strict=True):
                        out[i] = vector
                        added_keys.append(keys[i])  # type: ignore[arg-type]
                        added.append(vector)
                done += len(batch)
                if progress:
                    progress(done, len(todo))
    if added:
        store.add(added_keys, np.stack(added))
    return out, failures
