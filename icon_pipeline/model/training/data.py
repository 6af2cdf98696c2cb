"""Training and eval data: grouped pairs from parquet, the frozen eval set, a decoded-image cache.

Images are decoded once into a uint8 array file (N, S, S, 3) and memory-mapped, so every rank and
every dataloader worker on a machine shares one copy through the page cache, and no PNG is
decoded again during training. Unreadable images are recorded and skipped; a group left without
images is dropped (and counted), never a reason to stop the whole run.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from icon_pipeline.core.hashing import sha256_file
from icon_pipeline.model.training.config import TrainConfigError

PAIR_COLUMNS = ("group_id", "captions", "png_paths", "split")


@dataclass(frozen=True)
class TrainGroup:
    group_id: str
    captions: tuple[str, ...]
    image_rows: tuple[int, ...]  # rows of the decoded-image array


@dataclass(frozen=True)
class EvalRow:
    eval_id: str
    group_id: str
    caption: str
    icon_ids: tuple[str, ...]
    representative_icon_id: str


@dataclass
class DecodedImages:
    """A (N, S, S, 3) uint8 array (usually a read-only memmap) plus what could not be read."""

    array: np.ndarray
    failures: dict[str, str] = field(default_factory=dict)  # path -> reason
    paths: list[str] = field(default_factory=list)  # the file of each row
    key: str = ""  # names the cache file: the same paths, sizes and times give the same key

    def image(self, row: int) -> Image.Image:
        return Image.fromarray(np.asarray(self.array[row]), mode="RGB")


def _resolve(path: str, base: Path) -> str:
    candidate = Path(path)
    return str(candidate if candidate.is_absolute() else (base / candidate).resolve())


def read_pairs(
    path: str | Path, images_root: str | Path | None = None
) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """The train split of the grouped pairs: (group_id, captions, png paths) per group; relative
    png paths start at `images_root` (default: the file's directory)."""
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"training pairs file {path} does not exist")
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise TrainConfigError(f"training pairs file {path} is not readable parquet: {error}") from error
    missing = [name for name in PAIR_COLUMNS if name not in table.column_names]
    if missing:
        raise TrainConfigError(
            f"training pairs file {path} lacks columns {', '.join(missing)} "
            f"(has {', '.join(table.column_names)})"
        )
    base = Path(images_root) if images_root else path.resolve().parent
    groups = []
    columns = {name: table.column(name).to_pylist() for name in PAIR_COLUMNS}
    for group_id, captions, pngs, split in zip(*(columns[name] for name in PAIR_COLUMNS), strict=True):
        if split != "train":
            continue
        captions = tuple(c.strip() for c in captions or () if c and c.strip())
        pngs = tuple(_resolve(p, base) for p in pngs or () if p)
        if captions and pngs:
            groups.append((str(group_id), captions, pngs))
    if not groups:
        raise TrainConfigError(
            f"training pairs file {path} has no train-split group with captions and images"
        )
    return groups


def read_eval_set(path: str | Path, expected_sha256: str | None) -> tuple[list[EvalRow], str]:
    """The frozen eval rows and the file's sha256; a hash other than `expected_sha256` stops the run."""
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"eval set {path} does not exist")
    actual = sha256_file(path)
    if expected_sha256 and actual != expected_sha256.lower():
        raise TrainConfigError(
            f"eval set {path} is another version than the config expects: sha256 {actual}, "
            f"expected {expected_sha256} (the frozen eval set was replaced or edited)"
        )
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                rows.append(
                    EvalRow(
                        eval_id=str(raw["eval_id"]),
                        group_id=str(raw["group_id"]),
                        caption=str(raw["caption"]),
                        icon_ids=tuple(str(i) for i in raw["icon_ids"]),
                        representative_icon_id=str(raw["representative_icon_id"]),
                    )
                )
            except (ValueError, KeyError, TypeError) as error:
                raise TrainConfigError(f"eval set {path}:{number}: bad row ({error!r})") from error
    if not rows:
        raise TrainConfigError(f"eval set {path} is empty")
    return rows, actual


def read_icon_paths(path: str | Path, images_root: str | Path | None = None) -> dict[str, str]:
    """icon_id -> png path from a parquet (icon_id, png_path) or a JSON object; relative png paths
    start at `images_root` (default: the file's directory)."""
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"eval image map {path} does not exist")
    base = Path(images_root) if images_root else path.resolve().parent
    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text())
        except ValueError as error:
            raise TrainConfigError(f"eval image map {path} is not valid JSON: {error}") from error
        if not isinstance(raw, dict):
            raise TrainConfigError(f"eval image map {path} must be a JSON object icon_id -> png path")
        return {str(k): _resolve(str(v), base) for k, v in raw.items()}
    try:
        table = pq.read_table(path)
    except Exception as error:
        raise TrainConfigError(f"eval image map {path} is not readable parquet: {error}") from error
    path_column = next((c for c in ("png_path", "path") if c in table.column_names), None)
    if "icon_id" not in table.column_names or path_column is None:
        raise TrainConfigError(f"eval image map {path} needs columns icon_id and png_path")
    ids, paths = table.column("icon_id").to_pylist(), table.column(path_column).to_pylist()
    return {str(i): _resolve(str(p), base) for i, p in zip(ids, paths, strict=True) if p}


def decode_image(path: str, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "P"):
            # Icons with transparency go on white, as the renderer does for the light theme.
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            canvas.alpha_composite(rgba)
            image = canvas
        rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def _cache_key(paths: Sequence[str], size: int) -> str:
    digest = hashlib.sha256(f"v1:{size}".encode())
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"\n{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"\n{path}:missing".encode())
    return digest.hexdigest()[:24]


PROCESS_DECODE_MIN_IMAGES = 512  # below this, threads: starting processes would cost more than it saves


def _decode_rows(target: str, size: int, items: list[tuple[int, str]]) -> dict[str, str]:
    """Decode `items` (row, path) into rows of the .npy at `target` (opened for writing in place)."""
    array = np.load(target, mmap_mode="r+")
    failures: dict[str, str] = {}
    for row, path in items:
        try:
            array[row] = decode_image(path, size)
        except Exception as error:  # a corrupt or missing file is recorded, the rest carry on
            failures[path] = f"{type(error).__name__}: {error}"
            array[row] = 255
    array.flush()
    return failures


def _write_cache(target: Path, paths: Sequence[str], size: int, workers: int) -> dict[str, str]:
    """Decode every path into a new .npy at `target`; returns path -> reason for the unreadable ones.

    PNG decoding holds the GIL for much of its time (threads decoded ~210 images/s on a 16-core GPU
    node), so a large cache is decoded by `workers` forked processes writing their own rows of the
    memory-mapped file; a small one, or where processes cannot be started, on threads."""
    array = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    array.flush()
    del array
    items = list(enumerate(paths))
    chunks = [items[start::workers] for start in range(workers)] if workers > 1 else [items]
    chunks = [chunk for chunk in chunks if chunk]
    if workers > 1 and len(items) >= PROCESS_DECODE_MIN_IMAGES and "fork" in mp.get_all_start_methods():
        try:
            # fork: the children only decode (PIL, NumPy), so a parent's CUDA state is never touched.
            with ProcessPoolExecutor(len(chunks), mp_context=mp.get_context("fork")) as pool:
                results = list(
                    pool.map(_decode_rows, [str(target)] * len(chunks), [size] * len(chunks), chunks)
                )
            return {path: reason for result in results for path, reason in result.items()}
        except (OSError, BrokenProcessPool):
            pass  # no processes here (a sandbox, a limit): threads below
    # PIL releases the GIL while inflating and resizing, so threads still overlap part of the work.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(_decode_rows, [str(target)] * len(chunks), [size] * len(chunks), chunks))
    return {path: reason for result in results for path, reason in result.items()}


def decode_images(
    paths: Sequence[str], size: int, cache_dir: Path, workers: int | None = None
) -> DecodedImages:
    """Decode `paths` into a cached (N, size, size, 3) uint8 memmap, reusing a cache of the same files.

    Safe to call from several processes: the cache is written to a unique temporary name and
    renamed into place, so a reader sees either nothing or a complete file.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(paths, size)
    array_path = cache_dir / f"images-{key}.npy"
    failures_path = cache_dir / f"images-{key}.failures.json"
    if array_path.is_file() and failures_path.is_file():
        failures = json.loads(failures_path.read_text())
        return DecodedImages(np.load(array_path, mmap_mode="r"), failures, list(paths), key)

    tmp = cache_dir / f".images-{key}.{uuid.uuid4().hex}.npy"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    failures = _write_cache(tmp, paths, size, workers or min(16, cores))
    failures_tmp = failures_path.with_name(f".{failures_path.name}.{uuid.uuid4().hex}")
    failures_tmp.write_text(json.dumps(failures, indent=1, sort_keys=True))
    os.replace(tmp, array_path)
    os.replace(failures_tmp, failures_path)
    return DecodedImages(np.load(array_path, mmap_mode="r"), failures, list(paths), key)


@dataclass
class TrainingData:
    groups: list[TrainGroup]
    images: DecodedImages
    dropped_groups: list[str]  # groups whose every image failed to decode

    @property
    def image_failures(self) -> dict[str, str]:
        return self.images.failures


def merge_groups(
    groups: Sequence[tuple[str, tuple[str, ...], tuple[str, ...]]],
) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Groups of one id from several tables (a library group and the corpus drawings that join it)
    as one: captions and images in first-seen order."""
    merged: dict[str, tuple[dict[str, None], dict[str, None]]] = {}
    for group_id, captions, pngs in groups:
        texts, images = merged.setdefault(group_id, ({}, {}))
        texts.update(dict.fromkeys(captions))
        images.update(dict.fromkeys(pngs))
    return [(g, tuple(texts), tuple(images)) for g, (texts, images) in merged.items()]


def load_training_data(
    pairs_path: str | Path,
    size: int,
    cache_dir: Path,
    images_root: str | Path | None = None,
    corpus_pairs_path: str | Path | None = None,
) -> TrainingData:
    """The library's train-split groups, joined (by group id) by the corpus's groups when given."""
    raw_groups = read_pairs(pairs_path, images_root)
    if corpus_pairs_path:
        raw_groups = merge_groups([*raw_groups, *read_pairs(corpus_pairs_path, images_root)])
    unique_paths = sorted({p for _, _, pngs in raw_groups for p in pngs})
    row_of = {p: i for i, p in enumerate(unique_paths)}
    images = decode_images(unique_paths, size, cache_dir)
    groups, dropped = [], []
    for group_id, captions, pngs in raw_groups:
        rows = tuple(row_of[p] for p in pngs if p not in images.failures)
        if rows:
            groups.append(TrainGroup(group_id, captions, rows))
        else:
            dropped.append(group_id)
    if len(groups) < 2:
        sample = "; ".join(f"{p}: {r}" for p, r in list(images.failures.items())[:3])
        raise TrainConfigError(
            f"only {len(groups)} training group(s) have a readable image ({len(images.failures)} unreadable"
            f"{': ' + sample if sample else ''}); a contrastive loss needs at least 2"
        )
    return TrainingData(groups, images, dropped)


@dataclass
class EvalData:
    rows: list[EvalRow]
    sha256: str
    icon_ids: list[str]  # the image gallery (readable images only)
    image_rows: list[int]  # row of each gallery icon in `images`
    images: DecodedImages
    missing_icons: list[str]  # icon ids named by the eval set with no (readable) image


def load_eval_data(
    eval_path: str | Path,
    icon_map_path: str | Path,
    expected_sha256: str | None,
    size: int,
    cache_dir: Path,
    images_root: str | Path | None = None,
) -> EvalData:
    rows, digest = read_eval_set(eval_path, expected_sha256)
    icon_paths = read_icon_paths(icon_map_path, images_root)
    wanted = sorted({i for row in rows for i in (*row.icon_ids, row.representative_icon_id)})
    missing = [i for i in wanted if i not in icon_paths]
    all_ids = sorted(icon_paths)
    images = decode_images([icon_paths[i] for i in all_ids], size, cache_dir)
    readable = [(i, row) for row, i in enumerate(all_ids) if icon_paths[i] not in images.failures]
    missing = sorted(set(missing) | ({i for i in all_ids if icon_paths[i] in images.failures} & set(wanted)))
    if len(missing) == len(wanted):
        raise TrainConfigError(
            f"none of the {len(wanted)} icons named by eval set {eval_path} "
            f"has a readable image in {icon_map_path}"
        )
    return EvalData(rows, digest, [i for i, _ in readable], [r for _, r in readable], images, missing)
