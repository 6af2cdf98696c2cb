"""A local folder of SVG/PNG icons, with optional `metadata.json` files beside them.

Layout: any tree of folders. A `metadata.json` in a folder maps a file stem of that folder to
`{"tags": [...], "category": "..."}`. The sub-folder path is kept as the icon's `context`
(designers group icons by folder). Ids come from the relative path, never the content, so an
edited icon keeps its id and batch.

Only what lies inside the folder is indexed: a link whose target leaves it is refused (a
failure), as is a file over its byte limit, checked with stat before a byte is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from icon_pipeline.core.limits import DEFAULT_MAX_SVG_BYTES, MAX_RASTER_BYTES
from icon_pipeline.library.records import (
    IconRecord,
    SourceFailure,
    SourceScan,
)

ICON_SUFFIXES = {".svg": "svg", ".png": "png"}
METADATA_FILE = "metadata.json"
MAX_METADATA_BYTES = 20_000_000  # tags for ~100k icons; a larger file is not a metadata file
HASH_CHUNK_BYTES = 1 << 20


class _Refused(Exception):
    """A file the scanner will not read; the message is the failure's reason."""


def _readable(text: str) -> str:
    """`text` with undecodable file-name bytes shown as U+FFFD, safe to log and store."""
    return os.fsencode(text).decode("utf-8", "replace")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 file name
        return False
    return True


def _walk(folder: Path) -> list[tuple[str, list[str], list[str]]]:
    """(relative dir in POSIX form, sorted file names, sorted names of links to folders) for every
    non-hidden folder, sorted. Links to folders are never descended into (os.walk's default):
    one inside the folder would index its icons twice, one leaving it is refused by the scan."""
    found = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        linked = [d for d in dirs if os.path.islink(os.path.join(current, d))]
        relative = Path(current).relative_to(folder).as_posix()
        visible_files = sorted(f for f in files if not f.startswith("."))
        found.append(("" if relative == "." else relative, visible_files, linked))
    return sorted(found)


def _link_leaving(path: Path, folder: Path) -> str | None:
    """The failure reason if `path` is a link whose target lies outside `folder` (resolved), else None."""
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))  # never raises, not even on a link loop
    if target.is_relative_to(folder):
        return None
    return f"a link leaving the folder (to {_readable(str(target))}): only files inside it are indexed"


def _chunks(path: Path, limit: int, limit_name: str) -> Iterator[bytes]:
    """The file's bytes in chunks; refused before the first read if stat says it is over `limit`."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise _Refused(
                f"file is {size} bytes ({size / 2**20:.1f} MiB), over the {limit}-byte limit {limit_name}"
            )
        read = 0
        while chunk := handle.read(HASH_CHUNK_BYTES):
            read += len(chunk)
            if read > limit:  # it grew since the stat
                raise _Refused(f"file grew past the {limit}-byte limit {limit_name} while being read")
            yield chunk


def _hash_limited(path: Path, limit: int, limit_name: str) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks(path, limit, limit_name):
        digest.update(chunk)
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """A cheap change detector: hash of (relative path, size, mtime) of icons and metadata files.

    Reads no file contents, so a sensor can call it often on a large folder.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    if not folder.is_dir():
        return "missing"
    for relative_dir, files, _ in _walk(folder):
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
        raw = json.loads(b"".join(_chunks(path, MAX_METADATA_BYTES, "for metadata.json")).decode("utf-8"))
    except _Refused as exc:
        failures.append(SourceFailure(source_name, relative, str(exc)))
        return {}
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


def scan_local(folder: Path, source_name: str, max_svg_bytes: int = DEFAULT_MAX_SVG_BYTES) -> SourceScan:
    """Every .svg/.png under `folder` (any depth, any letter case) as an IconRecord; problems as failures.

    `max_svg_bytes` is the pipeline's `render.max_svg_bytes`; PNGs have the renderer's MAX_RASTER_BYTES.
    """
    folder = Path(folder).resolve()
    scan = SourceScan(source=source_name, version=folder_fingerprint(folder))
    if not folder.is_dir():
        scan.failures.append(
            SourceFailure(source_name, str(folder), "folder does not exist or is not a folder")
        )
        return scan
    limits = {
        "svg": (max_svg_bytes, "(render.max_svg_bytes in the config)"),
        "png": (MAX_RASTER_BYTES, "for PNG icons"),
    }
    for relative_dir, files, linked_dirs in _walk(folder):
        directory = folder / relative_dir if relative_dir else folder
        for linked in linked_dirs:
            leaving = _link_leaving(directory / linked, folder)
            if leaving:
                relative = f"{relative_dir}/{linked}" if relative_dir else linked
                scan.failures.append(SourceFailure(source_name, _readable(relative), leaving))
        metadata: dict[str, dict[str, Any]] = {}
        if METADATA_FILE in files:
            meta_relative = _readable(f"{relative_dir}/{METADATA_FILE}" if relative_dir else METADATA_FILE)
            leaving = _link_leaving(directory / METADATA_FILE, folder)
            if leaving:
                scan.failures.append(SourceFailure(source_name, meta_relative, leaving))
            else:
                metadata = _load_metadata(
                    directory / METADATA_FILE, meta_relative, source_name, scan.failures
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
            leaving = _link_leaving(path, folder)
            if leaving:
                scan.failures.append(SourceFailure(source_name, relative, leaving))
                continue
            if not path.is_file():
                scan.failures.append(
                    SourceFailure(source_name, relative, "not a regular file (broken link or special file)")
                )
                continue
            try:
                content_hash = _hash_limited(path, *limits[icon_format])
            except _Refused as exc:
                scan.failures.append(SourceFailure(source_name, relative, str(exc)))
                continue
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
                    content_hash=content_hash,
                    tags=meta.get("tags", ()),
                    category=meta.get("category", ""),
                    context=relative_dir,
                    source_version=scan.version,
                )
            )
    _drop_links_to_indexed_icons(scan, folder)
    return scan


def _drop_links_to_indexed_icons(scan: SourceScan, folder: Path) -> None:
    """A link to an icon of the folder would index that drawing twice under two names: the file
    itself is kept (or the first link, when the target is not indexed), the other links become
    failures that name the file they repeat."""
    first_of: dict[str, str] = {}
    for icon in sorted(scan.icons, key=lambda i: (Path(i.file_path).is_symlink(), i.icon_id)):
        first_of.setdefault(os.path.realpath(icon.file_path), icon.icon_id)
    kept = []
    for icon in scan.icons:
        first = first_of[os.path.realpath(icon.file_path)]
        if first == icon.icon_id:
            kept.append(icon)
            continue
        relative = icon.icon_id.removeprefix(f"{scan.source}:")
        scan.failures.append(
            SourceFailure(
                scan.source,
                relative,
                f"a link to {first.removeprefix(f'{scan.source}:')}, which is indexed already: "
                "the same drawing is kept once",
            )
        )
    scan.icons = kept
