"""Where each asset's tables live under the data dir, and how they are read and written.

Assets write plain files (Parquet, PNG, JSONL) so that domain code, apps and analysts can read
them without Dagster; writes are atomic so a crash never leaves a half-written table.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from icon_pipeline.core.paths import get_paths
from icon_pipeline.library.records import IconRecord


def data_path(*parts: str) -> Path:
    path = get_paths().data_dir.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def catalog_path() -> Path:
    return data_path("catalog", "icon_catalog.parquet")


def render_root() -> Path:
    return data_path("rendered", "store")


def batch_table_path(stage: str, batch_key: str) -> Path:
    return data_path(stage, "batches", f"{batch_key}.parquet")


BATCH_STAGES = ("rendered", "captions")  # the partitioned stages that write a table per batch


def retired_batch_path(stage: str, batch_key: str) -> Path:
    """Where a retired batch's table is kept aside (its source was removed from the config)."""
    return data_path(stage, "retired", f"{batch_key}.parquet")


def retire_batch(batch_key: str) -> list[str]:
    """Move a batch's tables aside (retired/); returns the stages that had one."""
    moved = []
    for stage in BATCH_STAGES:
        live = batch_table_path(stage, batch_key)
        if live.exists():
            os.replace(live, retired_batch_path(stage, batch_key))
            moved.append(stage)
    return moved


def restore_batch(batch_key: str) -> list[str]:
    """Bring a retired batch's tables back (its source is configured again, with the same icons)."""
    moved = []
    for stage in BATCH_STAGES:
        aside = retired_batch_path(stage, batch_key)
        if aside.exists() and not batch_table_path(stage, batch_key).exists():
            os.replace(aside, batch_table_path(stage, batch_key))
            moved.append(stage)
    return moved


def read_batch_history() -> dict[str, str]:
    path = batch_history_path()
    if not path.exists():
        return {}
    frame = pd.read_parquet(path)
    return dict(zip(frame["icon_id"], frame["batch_key"], strict=True))


def write_batch_history(history: dict[str, str]) -> Path:
    ordered = sorted(history.items())
    frame = pd.DataFrame({"icon_id": [i for i, _ in ordered], "batch_key": [k for _, k in ordered]})
    return write_table(frame, batch_history_path())


def batch_history_path() -> Path:
    """icon_id -> batch key for every icon ever assigned one: keys stay stable across config switches."""
    return data_path("catalog", "batch_history.parquet")


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write Parquet atomically: a temp file in the same dir, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_table(path: Path, what: str) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}: materialize it first")
    return pd.read_parquet(path)


def read_catalog() -> list[IconRecord]:
    frame = read_table(catalog_path(), "icon_catalog")
    return [IconRecord.from_row(row) for row in frame.to_dict("records")]


def write_catalog(icons: list[IconRecord]) -> Path:
    frame = pd.DataFrame([icon.to_row() for icon in icons], columns=list(IconRecord.__dataclass_fields__))
    return write_table(frame, catalog_path())


def lexicon_path() -> Path:
    return data_path("lexicon", "icon_lexicon.parquet")


def caption_cache_path() -> Path:
    return data_path("captions", "cache.sqlite")


def read_batch_table(stage: str, batch_key: str) -> pd.DataFrame:
    return read_table(batch_table_path(stage, batch_key), f"{stage} for batch {batch_key}")


def pairs_path() -> Path:
    return data_path("pairs", "training_pairs.parquet")


def icon_images_path() -> Path:
    """icon_id -> rendered PNG for every icon that rendered: what training and eval read."""
    return data_path("pairs", "icon_images.parquet")


def eval_dir(library: str) -> Path:
    """The frozen eval and query sets of one library (config.library_id): another library's are
    never read."""
    path = get_paths().data_dir / "eval" / library
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_all_batches(stage: str, batch_keys: list[str]) -> pd.DataFrame:
    """Every batch's table of a partitioned stage; a batch not yet materialized is an error."""
    missing = [b for b in batch_keys if not batch_table_path(stage, b).exists()]
    if missing:
        raise FileNotFoundError(
            f"{stage} is missing for {len(missing)} batch(es) ({', '.join(missing[:5])}): "
            "materialize them first"
        )
    frames = [pd.read_parquet(batch_table_path(stage, b)) for b in batch_keys]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_records(path: Path, what: str) -> list[dict]:
    """Rows as plain Python (lists, not numpy arrays), for domain code that reads them."""
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}: materialize it first")
    return pq.read_table(path).to_pylist()


def models_dir() -> Path:
    path = get_paths().data_dir / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_pointer(name: str) -> Path:
    """A small JSON naming the current checkpoint of `name` (base, finetuned)."""
    return models_dir() / f"{name}.json"


def read_checkpoint_pointer(name: str, asset: str) -> dict:
    import json

    path = checkpoint_pointer(name)
    if not path.exists():
        raise FileNotFoundError(f"no {name} checkpoint yet ({path}): materialize {asset} first")
    return json.loads(path.read_text())
