"""core/storage: one layout, relative persisted paths, reads without side effects, old absolute paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from icon_pipeline.core.storage import (
    asset_path,
    read_checkpoint_pointer,
    read_records,
    read_table,
    relative_path,
    resolve_checkpoint,
    resolve_path,
    resolved_rows,
    same_location,
    to_relative,
    write_checkpoint_pointer,
    write_table,
)


@pytest.fixture
def root(fresh_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = fresh_dir / "data"
    monkeypatch.setenv("ICON_PIPELINE_DATA", str(path))
    return path


def test_asking_for_a_path_creates_nothing(root: Path) -> None:
    assert asset_path("batch_table", stage="rendered", batch="b-1") == root / "rendered/batches/b-1.parquet"
    assert str(relative_path("eval_dir", library="mine")) == "eval/mine"
    assert not root.exists()
    with pytest.raises(ValueError, match="'batch_table': batch='../x'"):
        asset_path("batch_table", stage="rendered", batch="../x")
    with pytest.raises(ValueError, match="unknown storage item 'nope'"):
        asset_path("nope")


def test_tables_and_pointers_store_paths_relative_and_read_them_back_absolute(
    root: Path, fresh_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = root / "rendered" / "store" / "k" / "ab" / "ab.png"
    outside = fresh_dir / "icons" / "bell.svg"
    frame = pd.DataFrame({"icon_id": ["a", "b"], "png_path": [str(png), ""], "png_paths": [[str(png)], []]})
    table = write_table(frame, asset_path("icon_images"))
    stored = pd.read_parquet(table)
    assert list(stored["png_path"]) == ["rendered/store/k/ab/ab.png", ""]
    assert list(stored["png_paths"][0]) == ["rendered/store/k/ab/ab.png"]
    assert to_relative(outside) == str(outside)  # outside the data root: kept as given
    write_checkpoint_pointer("base", path=str(root / "models" / "base" / "tiny"), model_id="m")
    assert json.loads(asset_path("checkpoint_pointer", name="base").read_text())["path"] == "models/base/tiny"

    moved = fresh_dir / "moved"
    shutil.move(root, moved)
    monkeypatch.setenv("ICON_PIPELINE_DATA", str(moved))
    assert read_table(asset_path("icon_images"), "icon images")["png_path"][0] == str(
        moved / "rendered/store/k/ab/ab.png"
    )
    assert read_records(asset_path("icon_images"), "icon images")[0]["png_paths"] == [
        str(moved / "rendered/store/k/ab/ab.png")
    ]
    (moved / "models" / "base" / "tiny").mkdir(parents=True)
    assert read_checkpoint_pointer("base", "base_checkpoint")["path"] == str(moved / "models/base/tiny")
    assert resolve_checkpoint("google/siglip2-base-patch16-naflex") == "google/siglip2-base-patch16-naflex"


def test_absolute_paths_written_before_the_rule_resolve_under_a_moved_root(
    root: Path, fresh_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old frozen query set holds absolute image paths: as is while they exist, then under the
    new root once the data root moved."""
    image = root / "eval" / "lib" / "benchmark_queries.v1" / "q-00000.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"png")
    frozen = root / "eval" / "lib" / "benchmark_queries.v1.jsonl"
    rows = [{"query_id": "q", "image_path": str(image)}, {"query_id": "t", "image_path": None}]
    assert resolved_rows(rows)[0]["image_path"] == str(image)

    moved = fresh_dir / "elsewhere" / "data"
    shutil.move(root, moved)
    monkeypatch.setenv("ICON_PIPELINE_DATA", str(moved))
    resolved = resolved_rows(rows)
    assert resolved[0]["image_path"] == str(moved / "eval/lib/benchmark_queries.v1/q-00000.png")
    assert resolved[1]["image_path"] is None
    assert resolve_path("/nowhere/at/all.png") == Path("/nowhere/at/all.png")  # reported as given
    # Dagster recorded the frozen file's old absolute path: still the same file.
    assert same_location(str(frozen), moved / "eval" / "lib" / "benchmark_queries.v1.jsonl")
    assert not same_location(str(frozen), moved / "eval" / "other" / "benchmark_queries.v1.jsonl")
