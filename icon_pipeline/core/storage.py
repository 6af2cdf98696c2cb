"""The one owner of where things live under the data root, and of how paths are persisted.

Layout: `LAYOUT` maps every asset file or folder (with its keys: batch, stage, library, ...) to a
path relative to the data root; `relative_path` gives that, `asset_path` the absolute path under the
current root (ICON_PIPELINE_DATA, read at call time). Asking for a path never creates anything:
only the write helpers (`write_table`, `write_checkpoint_pointer`, `for_writing`) create folders.
No other module joins file names onto the data dir.

The rule for persisted paths: a path that points inside the data root is stored relative to the
data root, in POSIX form (`rendered/store/<settings>/ab/ab12....png`). That holds for the path
columns (`PATH_COLUMNS`) of every table written with `write_table` (catalog, render, pairs, icon
images), the `models/*.json` pointers, the checkpoint the index registry records in PostgreSQL,
the values the fine-tune run key hashes, and new frozen versions of benchmark_queries. A path
outside the data root (a configured local folder, a pretrained checkpoint, a Hub id) is stored as
given. Readers resolve against the current data root (`resolve_path`): a relative path joins the
root; an absolute one (written before this rule, or outside the root) is used as is when it exists,
else, when the data root has moved, the same file under the current root (found by the longest
tail of the path that exists there). So a data root can be copied or moved as a whole.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from icon_pipeline.core.paths import get_paths

if TYPE_CHECKING:
    import pandas as pd

    from icon_pipeline.core.config import PipelineConfig

T = TypeVar("T")

# item -> its path relative to the data root; {keys} are filled by relative_path.
LAYOUT: dict[str, str] = {
    "icon_catalog": "catalog/icon_catalog.parquet",
    "catalog_failures": "catalog/failures.parquet",
    "batch_history": "catalog/batch_history.parquet",
    "batch_dir": "{stage}/batches",
    "batch_table": "{stage}/batches/{batch}.parquet",
    "retired_batch": "{stage}/retired/{batch}.parquet",
    "render_store": "rendered/store",
    "render_preview": "rendered/previews/{batch}.png",
    "icon_lexicon": "lexicon/icon_lexicon.parquet",
    "lexicon_boilerplate": "lexicon/boilerplate.parquet",
    "caption_cache": "captions/cache.sqlite",
    "pending_overrides": "overrides/pending.jsonl",
    "training_pairs": "pairs/training_pairs.parquet",
    "icon_images": "pairs/icon_images.parquet",
    "eval_root": "eval",
    "eval_dir": "eval/{library}",
    "frozen_images": "eval/{library}/{name}.v{version}",  # a frozen set's own images (img2img)
    "models": "models",
    "checkpoint_pointer": "models/{name}.json",
    "base_checkpoint": "models/base/{size}",
    "pretrained_reference": "models/base/pretrained",  # a pretrained base and its patch budget
    "finetune_run": "models/finetuned/{run_key}",
    "training_cache": "models/cache",  # decoded images, trunk features: shared by fine-tuning runs
    "caption_vectors": "index/caption_vectors.npz",
    "reports": "reports",
    "benchmark_json": "reports/benchmark.json",
    "benchmark_markdown": "reports/benchmark.md",
    "sources": "sources",
    "tabler_versions": "sources/tabler",
    "tabler_package": "sources/tabler/{version}/package",
    "figma_downloads": "sources/figma/{name}",
    "icon_set_versions": "sources/{set}",  # npm packages of the open icon sets, one folder per version
    "corpus_set": "corpus/sets/{set}.parquet",  # one corpus set's drawings, names and renders
    "corpus_preview": "corpus/previews/{set}.png",
    "corpus_pairs": "corpus/corpus_pairs.parquet",  # concepts across sets and the library, trained on
    "corpus_fitting": "corpus/fitting_queries.parquet",  # held-out corpus queries that fit hybrid search
    "corpus_exemplars": "corpus/exemplars.parquet",  # other sets' drawings of library concepts, searched
    "external_queries": "external/{set}.parquet",  # the external benchmark's queries from one set
    "external_json": "reports/external_benchmark.json",
    "external_markdown": "reports/external_benchmark.md",
    "dagster_artifacts": "dagster",
    "data_root_id": ".data_root_id",  # names this root's database; a copy of the root carries it
}

# Table columns that hold file paths (a list of paths for png_paths): stored relative.
PATH_COLUMNS = frozenset({"file_path", "png_path", "png_paths", "image_path"})
# Keys of a models/*.json pointer that hold paths.
POINTER_PATH_KEYS = ("path", "run_dir")

BATCH_STAGES = ("rendered", "captions")  # the partitioned stages that write a table per batch

# The frozen sets' names (core/frozen.py versions them): eval_set's and benchmark_queries'.
EVAL_NAME = "eval_t2i_i2t"
QUERIES_NAME = "benchmark_queries"


# --- the layout ---------------------------------------------------------------------------------


def data_root() -> Path:
    """The current data root (absolute, resolved); it need not exist yet."""
    return get_paths().data_dir


def relative_path(item: str, **keys: object) -> PurePosixPath:
    """Where `item` lives, relative to the data root; ValueError naming the item for an unknown
    item, a missing key or a key value that would leave its folder."""
    template = LAYOUT.get(item)
    if template is None:
        raise ValueError(f"unknown storage item {item!r}; known: {', '.join(sorted(LAYOUT))}")
    for key, value in keys.items():
        text = str(value)
        if not text or text in (".", "..") or "/" in text or "\\" in text or "\x00" in text:
            raise ValueError(f"storage item {item!r}: {key}={text!r} is not a usable file name")
    try:
        return PurePosixPath(template.format(**keys))
    except KeyError as exc:
        raise ValueError(f"storage item {item!r} needs the key {exc.args[0]!r}") from None


def asset_path(item: str, **keys: object) -> Path:
    """The absolute path of `item` under the current data root; creates nothing."""
    return data_root() / relative_path(item, **keys)


def for_writing(path: Path) -> Path:
    """`path` with its folder created: what a writer calls right before writing a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- relative <-> absolute ----------------------------------------------------------------------


def to_relative(path: str | os.PathLike[str], root: Path | None = None) -> str:
    """The persisted form of `path`: relative to the data root (POSIX) when inside it, else as given.
    `root`: the data root when the caller already has it (tables convert many paths)."""
    candidate = Path(path)
    if not candidate.is_absolute():
        return candidate.as_posix() if str(path) else ""
    root = root or data_root()
    # Lexically first (a symlink inside the root stays inside), then through symlinks.
    for form in (Path(os.path.abspath(candidate)), candidate.resolve()):
        try:
            return form.relative_to(root).as_posix()
        except ValueError:
            continue
    return str(candidate)


# Old roots found by relocation: (current root, old prefix) -> True, so later paths skip the search.
_moved_prefixes: dict[tuple[str, tuple[str, ...]], bool] = {}


def resolve_path(stored: str | os.PathLike[str], root: Path | None = None) -> Path:
    """A persisted path as an absolute path under the current data root (see the module docstring)."""
    path = Path(stored)
    root = root or data_root()
    if not path.is_absolute():
        return root / path
    if path.is_relative_to(root) or path.exists():
        return path
    # Written under another data root: the same file under this one, found by its longest tail.
    parts = path.parts
    for cut in range(1, len(parts) - 1):
        if _moved_prefixes.get((str(root), parts[:cut])):
            return root.joinpath(*parts[cut:])
    for cut in range(1, len(parts) - 1):
        candidate = root.joinpath(*parts[cut:])
        if candidate.exists():
            _moved_prefixes[(str(root), parts[:cut])] = True
            return candidate
    return path  # not found anywhere: the reader reports the path it was given


def resolve_checkpoint(stored: str) -> str:
    """A persisted checkpoint: a path (relative to the data root, or absolute) or a Hub id
    ("owner/name") or a path relative to the working directory, both kept as given."""
    if not stored:
        return stored
    if Path(stored).is_absolute():
        return str(resolve_path(stored))
    under_root = data_root() / stored
    return str(under_root) if under_root.exists() else stored


def same_location(recorded: str, path: Path) -> bool:
    """Whether a path recorded earlier (maybe under another data root) names the file at `path`."""
    if resolve_path(recorded).resolve() == path.resolve():
        return True
    relative = PurePosixPath(to_relative(path))
    if relative.is_absolute():
        return False
    tail, recorded_parts = relative.parts, Path(recorded).parts
    return len(recorded_parts) > len(tail) and recorded_parts[-len(tail) :] == tail


def _map_path_value(value: Any, convert: Any) -> Any:
    """`convert` applied to a path cell: a string, or a list of them (png_paths); empty kept."""
    if isinstance(value, str):
        return convert(value) if value else value
    if isinstance(value, list | tuple) or (hasattr(value, "tolist") and hasattr(value, "__len__")):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        return [convert(v) if isinstance(v, str) and v else v for v in items]
    return value  # None, NaN


def _relative_str() -> Any:
    root = data_root()  # once per table, not once per cell
    return lambda value: to_relative(value, root)


def _resolved_str() -> Any:
    root = data_root()
    return lambda value: str(resolve_path(value, root))


def relative_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with their path columns in persisted (relative) form."""
    convert = _relative_str()
    return [
        {k: _map_path_value(v, convert) if k in PATH_COLUMNS else v for k, v in row.items()} for row in rows
    ]


def resolved_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with their path columns resolved against the current data root."""
    convert = _resolved_str()
    return [
        {k: _map_path_value(v, convert) if k in PATH_COLUMNS else v for k, v in row.items()} for row in rows
    ]


def _frame_paths(frame: pd.DataFrame, convert: Any) -> pd.DataFrame:
    columns = [c for c in frame.columns if c in PATH_COLUMNS]
    if not columns or frame.empty:
        return frame
    frame = frame.copy()
    for column in columns:
        frame[column] = [_map_path_value(v, convert) for v in frame[column]]
    return frame


# --- tables -------------------------------------------------------------------------------------


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write Parquet atomically (a temp file in the same dir, then a rename), path columns relative."""
    frame = _frame_paths(frame, _relative_str())
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
    """A table written by write_table, its path columns resolved against the current data root."""
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}: materialize it first")
    return _frame_paths(pd.read_parquet(path), _resolved_str())


def read_records(path: Path, what: str) -> list[dict]:
    """Rows as plain Python (lists, not numpy arrays), path columns resolved, for domain code."""
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}: materialize it first")
    return resolved_rows(pq.read_table(path).to_pylist())


def catalog_path() -> Path:
    return asset_path("icon_catalog")


def render_root() -> Path:
    return asset_path("render_store")


def batch_table_path(stage: str, batch_key: str) -> Path:
    return asset_path("batch_table", stage=stage, batch=batch_key)


def retired_batch_path(stage: str, batch_key: str) -> Path:
    """Where a retired batch's table is kept aside (its source was removed from the config)."""
    return asset_path("retired_batch", stage=stage, batch=batch_key)


def retire_batch(batch_key: str) -> list[str]:
    """Move a batch's tables aside (retired/); returns the stages that had one."""
    moved = []
    for stage in BATCH_STAGES:
        live = batch_table_path(stage, batch_key)
        if live.exists():
            os.replace(live, for_writing(retired_batch_path(stage, batch_key)))
            moved.append(stage)
    return moved


def restore_batch(batch_key: str) -> list[str]:
    """Bring a retired batch's tables back (its source is configured again, with the same icons)."""
    moved = []
    for stage in BATCH_STAGES:
        aside = retired_batch_path(stage, batch_key)
        if aside.exists() and not batch_table_path(stage, batch_key).exists():
            os.replace(aside, for_writing(batch_table_path(stage, batch_key)))
            moved.append(stage)
    return moved


def batch_history_path() -> Path:
    """icon_id -> batch key for every icon ever assigned one: keys stay stable across config switches."""
    return asset_path("batch_history")


def read_batch_history() -> dict[str, str]:
    import pandas as pd

    path = batch_history_path()
    if not path.exists():
        return {}
    frame = pd.read_parquet(path)
    return dict(zip(frame["icon_id"], frame["batch_key"], strict=True))


def write_batch_history(history: dict[str, str]) -> Path:
    import pandas as pd

    ordered = sorted(history.items())
    frame = pd.DataFrame({"icon_id": [i for i, _ in ordered], "batch_key": [k for _, k in ordered]})
    return write_table(frame, batch_history_path())


def lexicon_path() -> Path:
    return asset_path("icon_lexicon")


def caption_cache_path() -> Path:
    return asset_path("caption_cache")


def read_batch_table(stage: str, batch_key: str) -> pd.DataFrame:
    return read_table(batch_table_path(stage, batch_key), f"{stage} for batch {batch_key}")


def pairs_path() -> Path:
    return asset_path("training_pairs")


def icon_images_path() -> Path:
    """icon_id -> rendered PNG for every icon that rendered: what training and eval read."""
    return asset_path("icon_images")


def eval_dir(library: str) -> Path:
    """The frozen eval and query sets of one library (config.library_id): another library's are
    never read. Not created here: the frozen-set writer creates it."""
    return asset_path("eval_dir", library=library)


def frozen_set_path(name: str, library: str, version: int | str) -> Path:
    """Version `version` of frozen set `name` (EVAL_NAME, QUERIES_NAME) of one library."""
    from icon_pipeline.core.frozen import frozen_paths

    path, _ = frozen_paths(eval_dir(library), name, version)
    return path


def frozen_file(name: str, config: PipelineConfig) -> Path:
    """The configured version of a frozen set (EVAL_NAME or QUERIES_NAME) of the configured library."""
    from icon_pipeline.core.config import library_id

    version = config.eval.version if name == EVAL_NAME else config.queries.version
    return frozen_set_path(name, library_id(config), version)


def read_all_batches(stage: str, batch_keys: list[str]) -> pd.DataFrame:
    """Every batch's table of a partitioned stage; a batch not yet materialized is an error."""
    import pandas as pd

    missing = [b for b in batch_keys if not batch_table_path(stage, b).exists()]
    if missing:
        raise FileNotFoundError(
            f"{stage} is missing for {len(missing)} batch(es) ({', '.join(missing[:5])}): "
            "materialize them first"
        )
    frames = [read_table(batch_table_path(stage, b), f"{stage} for batch {b}") for b in batch_keys]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --- model pointers -----------------------------------------------------------------------------


def models_dir() -> Path:
    return asset_path("models")


def checkpoint_pointer(name: str) -> Path:
    """A small JSON naming the current checkpoint of `name` (base, finetuned)."""
    return asset_path("checkpoint_pointer", name=name)


def write_checkpoint_pointer(name: str, **fields: str) -> Path:
    """Write models/<name>.json atomically; its path fields (POINTER_PATH_KEYS) stored relative."""
    stored = {k: to_relative(v) if k in POINTER_PATH_KEYS and v else v for k, v in fields.items()}
    path = for_writing(checkpoint_pointer(name))
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(stored))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint_pointer(name: str, asset: str) -> dict:
    """models/<name>.json with its path fields resolved against the current data root."""
    path = checkpoint_pointer(name)
    if not path.exists():
        raise FileNotFoundError(f"no {name} checkpoint yet ({path}): materialize {asset} first")
    raw = json.loads(path.read_text())
    return {k: resolve_checkpoint(v) if k in POINTER_PATH_KEYS and v else v for k, v in raw.items()}


# --- reads cached while their files do not change ---------------------------------------------

_cache: dict[str, tuple[tuple, Any]] = {}
_cache_lock = threading.Lock()


def _stamp(paths: Sequence[Path]) -> tuple:
    stamp = []
    for path in paths:
        try:
            stat = path.stat()
            stamp.append((str(path), stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            stamp.append((str(path), None, None))
    return tuple(stamp)


def cached(name: str, paths: Sequence[Path], load: Callable[[], T]) -> T:
    """`load()`, reused in this process until one of `paths` changes (by mtime and size): what a
    long-running app or API reads from the data root once rather than per request."""
    stamp = _stamp(paths)
    with _cache_lock:
        hit = _cache.get(name)
        if hit and hit[0] == stamp:
            return hit[1]
    value = load()
    with _cache_lock:
        _cache[name] = (stamp, value)
    return value
