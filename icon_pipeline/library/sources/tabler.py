"""The default real icon set: Tabler icons (MIT), from the npm package `@tabler/icons`.

`fetch_tabler` is the only code here that touches the network, and only at set-up time (through
`npm pack`, so the registry configured for npm is used); `scan_tabler` reads the unpacked package.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from icon_pipeline.library.records import IconRecord, SourceFailure, SourceScan, sha256_bytes

DEFAULT_VERSION = "3.51.0"
PACKAGE_NAME = "@tabler/icons"
STYLES = ("outline", "filled")
NPM_TIMEOUT_S = 600


class TablerFetchError(RuntimeError):
    """The Tabler package could not be fetched or unpacked; the message says what to do."""


def _tail(text: str, limit: int = 1500) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def extract_package(tarball: Path, dest_dir: Path) -> Path:
    """Unpack an npm tarball into `dest_dir/package` safely; returns that folder.

    Uses tarfile's "data" filter: absolute paths, `..` components, links pointing outside,
    device files and the like are refused rather than written. The result appears atomically.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
    try:
        try:
            with tarfile.open(tarball, "r:*") as archive:
                archive.extractall(staging, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise TablerFetchError(f"cannot unpack {tarball.name}: {exc}") from None
        unpacked = staging / "package"
        if not (unpacked / "icons.json").is_file():
            raise TablerFetchError(f"{tarball.name} has no package/icons.json: not an @tabler/icons package")
        target = dest_dir / "package"
        if target.exists():  # a partial earlier attempt (no icons.json): replace it
            shutil.rmtree(target)
        unpacked.rename(target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_tabler(dest_root: Path, version: str = DEFAULT_VERSION, npm: str = "npm") -> Path:
    """Make sure `dest_root/<version>/package` holds @tabler/icons@version; returns that folder.

    Idempotent: an existing unpacked package is reused without running npm.
    """
    version_dir = Path(dest_root) / version
    package_dir = version_dir / "package"
    if (package_dir / "icons.json").is_file():
        return package_dir
    npm_path = shutil.which(npm)
    if npm_path is None:
        raise TablerFetchError(
            f"npm not found (looked for {npm!r} on PATH): install Node.js/npm, or unpack "
            f"`npm pack {PACKAGE_NAME}@{version}` into {version_dir}"
        )
    version_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=dest_root) as work:
        spec = f"{PACKAGE_NAME}@{version}"
        try:
            completed = subprocess.run(
                [npm_path, "pack", spec],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TablerFetchError(f"`npm pack {spec}` did not finish within {NPM_TIMEOUT_S}s") from None
        except OSError as exc:
            raise TablerFetchError(f"cannot run npm ({npm_path}): {exc}") from None
        if completed.returncode != 0:
            raise TablerFetchError(
                f"`npm pack {spec}` failed with exit code {completed.returncode}: "
                f"{_tail(completed.stderr or completed.stdout)}"
            )
        tarballs = sorted(Path(work).glob("*.tgz"))
        if len(tarballs) != 1:
            raise TablerFetchError(
                f"`npm pack {spec}` produced {len(tarballs)} tarballs, expected 1; "
                f"output: {_tail(completed.stdout)}"
            )
        return extract_package(tarballs[0], version_dir)


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
