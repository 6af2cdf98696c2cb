"""A local folder of SVG/PNG icons, with optional `metadata.json` files beside them.

Layout: any tree of folders. A `metadata.json` in a folder maps a file stem of that folder to
`{"tags": [...], "category": "..."}`. The sub-folder path is kept as the icon's `context`
(designers group icons by folder). Ids come from the relative path, never the content, so an
edited icon keeps its id and batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from icon_pipeline.catalog import IconRecord, SourceFailure, SourceScan, sha256_bytes

ICON_SUFFIXES = {".svg": "svg", ".png": "png"}
METADATA_FILE = "metadata.json"


def _readable(text: str) -> str:
    """`text` with undecodable file-name bytes shown as U+FFFD, safe to log and store."""
    return os.fsencode(text).decode("utf-8", "replace")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 file name
        return False
    return True


def _walk(folder: Path) -> list[tuple[str, list[str]]]:
    """(relative dir in POSIX form, sorted file names) for every non-hidden folder, sorted."""
    found = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        relative = Path(current).relative_to(folder).as_posix()
        found.append(("" if relative == "." else relative, sorted(f for f in files if not f.startswith("."))))
    return sorted(found)


def folder_fingerprint(folder: Path) -> str:
    """A cheap change detector: hash of (relative path, size, mtime) of icons and metadata files.

    Reads no file contents, so a sensor can call it often on a large folder.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    if not folder.is_dir():
        return "missing"
    for relative_dir, files in _walk(folder):
        for file_name in files:
            if file_name != METADATA_FILE and Path(file_name).suffix.lower() not in ICON_SUFFIXES:
                continue
            relative = f"{relative_dir}/{file_name}" if relative_dir else file_name
            try:
                stat = (folder / relative).stat()
                facts = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                facts = "unreadable"
            # fsencode: non-UTF-8 names hash as their raw bytes instead of failing.
            digest.update(os.fsencode(relative) + b"\0" + facts.encode() + b"\n")
    return digest.hexdigest()[:16]


def _load_metadata(
    path: Path, relative: str, source_name: str, failures: list[SourceFailure]
) -> dict[str, dict[str, Any]]:
    """Stem -> {tags, category} from one metadata.json; every problem becomes a failure, never fatal."""
    try:
        raw = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        failures.append(
            SourceFailure(
                source_name, relative, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            )
        )
        return {}
    except UnicodeDecodeError:
        failures.append(SourceFailure(source_name, relative, "not UTF-8 text"))
        return {}
    except OSError as exc:
        failures.append(SourceFailure(source_name, relative, f"cannot read: {exc.strerror or exc}"))
        return {}
    if not isinstance(raw, dict):
        failures.append(
            SourceFailure(
                source_name,
                relative,
                f"expected an object mapping file stem to {{tags, category}}, got {type(raw).__name__}",
            )
        )
        return {}
    entries: dict[str, dict[str, Any]] = {}
    for stem, entry in raw.items():
        tags = entry.get("tags", []) if isinstance(entry, dict) else None
        category = entry.get("category", "") if isinstance(entry, dict) else None
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            failures.append(
                SourceFailure(source_name, f"{relative}:{stem}", "`tags` must be a list of strings")
            )
            continue
        if not isinstance(category, str):
            failures.append(SourceFailure(source_name, f"{relative}:{stem}", "`category` must be a string"))
            continue
        entries[stem] = {"tags": tuple(tags), "category": category}
    return entries


def scan_local(folder: Path, source_name: str) -> SourceScan:
    """Every .svg/.png under `folder` (any depth, any letter case) as an IconRecord; problems as failures."""
    folder = Path(folder).resolve()
    scan = SourceScan(source=source_name, version=folder_fingerprint(folder))
    if not folder.is_dir():
        scan.failures.append(
            SourceFailure(source_name, str(folder), "folder does not exist or is not a folder")
        )
        return scan
    for relative_dir, files in _walk(folder):
        directory = folder / relative_dir if relative_dir else folder
        metadata: dict[str, dict[str, Any]] = {}
        if METADATA_FILE in files:
            meta_relative = f"{relative_dir}/{METADATA_FILE}" if relative_dir else METADATA_FILE
            metadata = _load_metadata(
                directory / METADATA_FILE, _readable(meta_relative), source_name, scan.failures
            )
        for file_name in files:
            icon_format = ICON_SUFFIXES.get(Path(file_name).suffix.lower())
            if icon_format is None:
                continue
            relative = f"{relative_dir}/{file_name}" if relative_dir else file_name
            path = directory / file_name
            if not _is_utf8(relative):
                # The path cannot be stored in the catalog table (UTF-8) and so could not be read back.
                scan.failures.append(
                    SourceFailure(
                        source_name,
                        _readable(relative),
                        "file name is not valid UTF-8 (shown with U+FFFD); rename it to include the icon",
                    )
                )
                continue
            if not path.is_file():
                scan.failures.append(
                    SourceFailure(source_name, relative, "not a regular file (broken link or special file)")
                )
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                scan.failures.append(
                    SourceFailure(source_name, relative, f"cannot read: {exc.strerror or exc}")
                )
                continue
            stem = Path(file_name).stem
            meta = metadata.get(stem, {})
            scan.icons.append(
                IconRecord(
                    icon_id=f"{source_name}:{relative}",
                    source=source_name,
                    name=stem,
                    raw_name=stem,
                    file_path=str(path),
                    format=icon_format,
                    content_hash=sha256_bytes(data),
                    tags=meta.get("tags", ()),
                    category=meta.get("category", ""),
                    context=relative_dir,
                    source_version=scan.version,
                )
            )
    return scan
