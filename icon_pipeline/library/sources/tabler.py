"""The default real icon set: Tabler icons (MIT), from the npm package `@tabler/icons`.

`fetch_tabler` is the only code here that touches the network, and only at set-up time (through
`npm pack`, so the registry configured for npm is used); `scan_tabler` reads the unpacked package.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from icon_pipeline.library.records import IconRecord, SourceFailure, SourceScan, sha256_bytes
from icon_pipeline.library.sources.npm import PackageFetchError, extract_npm_package, fetch_npm_package

DEFAULT_VERSION = "3.51.0"
PACKAGE_NAME = "@tabler/icons"
STYLES = ("outline", "filled")


TablerFetchError = PackageFetchError  # the name callers and tests know


def extract_package(tarball: Path, dest_dir: Path) -> Path:
    """Unpack an @tabler/icons tarball into `dest_dir/package` (see npm.extract_npm_package)."""
    return extract_npm_package(tarball, dest_dir, marker="icons.json")


def fetch_tabler(dest_root: Path, version: str = DEFAULT_VERSION, npm: str = "npm") -> Path:
    """Make sure `dest_root/<version>/package` holds @tabler/icons@version; returns that folder.

    Idempotent: an existing unpacked package is reused without running npm.
    """
    return fetch_npm_package(PACKAGE_NAME, version, dest_root, marker="icons.json", npm=npm)


def _package_version(package_dir: Path) -> str:
    try:
        return str(json.loads((package_dir / "package.json").read_text("utf-8")).get("version", ""))
    except (OSError, ValueError, AttributeError):
        return package_dir.parent.name  # the version folder fetch_tabler made


def _entry_metadata(name: str, entry: Any) -> tuple[tuple[str, ...], str, set[str] | None]:
    """(tags, category, listed styles or None when unknown) of one icons.json entry; ValueError if bad."""
    if not isinstance(entry, dict):
        raise ValueError(f"entry is a {type(entry).__name__}, expected an object")
    tags = entry.get("tags", [])
    # The real icons.json has a few null and numeric tags: drop nulls, keep numbers as text.
    if not isinstance(tags, list) or not all(t is None or isinstance(t, str | int | float) for t in tags):
        raise ValueError("`tags` must be a list of strings")
    tags = [t for t in tags if t is not None]
    category = entry.get("category") or ""
    if not isinstance(category, str):
        raise ValueError("`category` must be a string")
    styles = entry.get("styles")
    listed = set(styles) if isinstance(styles, dict) else None
    return tuple(str(t) for t in tags), category, listed


def scan_tabler(
    package_dir: Path,
    source_name: str = "tabler",
    styles: Iterable[str] = STYLES,
    limit: int | None = None,
) -> SourceScan:
    """One IconRecord per (icon, style) SVG on disk; bad entries and missing files become failures.

    `limit` keeps the first N icon names (sorted), every requested style of each.
    """
    package_dir = Path(package_dir)
    styles = tuple(styles)
    unknown = sorted(set(styles) - set(STYLES))
    if unknown:
        raise ValueError(f"unknown Tabler style(s) {unknown}; allowed: {', '.join(STYLES)}")
    version = _package_version(package_dir)
    scan = SourceScan(source=source_name, version=version)
    try:
        index = json.loads((package_dir / "icons.json").read_text("utf-8"))
        if not isinstance(index, dict):
            raise ValueError("expected an object mapping icon name to its metadata")
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        scan.failures.append(
            SourceFailure(source_name, str(package_dir / "icons.json"), f"unusable: {reason}")
        )
        index = {}

    on_disk = {style: {p.stem for p in (package_dir / "icons" / style).glob("*.svg")} for style in styles}
    names = sorted(set(index) | set().union(*on_disk.values()))
    if limit is not None:
        names = names[:limit]

    for name in names:
        try:
            tags, category, listed = _entry_metadata(name, index[name]) if name in index else ((), "", None)
        except ValueError as exc:
            scan.failures.append(SourceFailure(source_name, f"icons.json:{name}", f"bad entry: {exc}"))
            continue
        for style in styles:
            path = package_dir / "icons" / style / f"{name}.svg"
            if name not in on_disk[style]:
                if listed is not None and style in listed:
                    scan.failures.append(
                        SourceFailure(
                            source_name, f"{style}/{name}", f"listed in icons.json but {path} is missing"
                        )
                    )
                continue  # many icons exist in one style only
            try:
                data = path.read_bytes()
            except OSError as exc:
                scan.failures.append(
                    SourceFailure(
                        source_name, f"{style}/{name}", f"cannot read {path}: {exc.strerror or exc}"
                    )
                )
                continue
            scan.icons.append(
                IconRecord(
                    icon_id=f"{source_name}:{style}:{name}",
                    source=source_name,
                    name=name,
                    raw_name=name,
                    file_path=str(path.resolve()),
                    format="svg",
                    content_hash=sha256_bytes(data),
                    tags=tags,
                    category=category,
                    style=style,
                    context=category,
                    source_version=version,
                )
            )
    return scan
