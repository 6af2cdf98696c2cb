"""Write-once, versioned JSONL files (the eval set, the benchmark queries).

`<name>.v<version>.jsonl` holds canonical JSON lines (sorted keys, no extra whitespace, UTF-8)
and `<name>.v<version>.sha256` records its hash in `sha256sum` format. Once written a version is
never overwritten: writing it again returns the recorded hash (`reused=True`), and a file that
was edited by hand fails `verify_frozen` with the version and both hashes named. A new eval set
is a new version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from icon_pipeline.core.hashing import sha256_file

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FILE = re.compile(r"^(?P<name>.+)\.v(?P<version>[^/]+)\.jsonl$")


class FrozenFileError(ValueError):
    """A frozen file that is missing its hash or no longer matches it."""


@dataclass(frozen=True)
class FrozenFile:
    path: Path
    sha256: str
    rows: int
    created: str  # ISO 8601 UTC, from the file's modification time
    reused: bool = False  # the version existed already and was left untouched
    differs_from_rows: bool = False  # reused, but the rows passed in would have hashed differently


def canonical_jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """The one byte form of a row list: sorted keys, compact separators, one row per line."""
    lines = []
    for index, row in enumerate(rows):
        try:
            lines.append(
                json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"row {index}: not JSON-serialisable: {exc}") from None
    return "".join(line + "\n" for line in lines).encode("utf-8")


def frozen_paths(path_dir: str | Path, name: str, version: int | str) -> tuple[Path, Path]:
    if not _NAME.match(name):
        raise ValueError(f"frozen file name {name!r}: use letters, digits, '_' and '-' only")
    if not _VERSION.match(str(version)):
        raise ValueError(f"frozen file version {version!r}: use letters, digits, '.', '_' and '-' only")
    base = Path(path_dir) / f"{name}.v{version}"
    return base.with_name(base.name + ".jsonl"), base.with_name(base.name + ".sha256")


def _created(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).isoformat(timespec="seconds")


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def _write_new(path: Path, data: bytes) -> bool:
    """Create `path` with `data` atomically; False if it already exists (never overwrites)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if the target exists, unlike rename: a concurrent writer loses
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create is still write-once
            try:
                with path.open("xb") as handle:
                    handle.write(data)
            except FileExistsError:
                return False
        return True
    finally:
        os.unlink(tmp)


def write_frozen_jsonl(
    path_dir: str | Path, name: str, version: int | str, rows: Iterable[Mapping[str, Any]]
) -> FrozenFile:
    """Write `<name>.v<version>.jsonl` and its `.sha256` once; later calls reuse what is there."""
    path, sidecar = frozen_paths(path_dir, name, version)
    data = canonical_jsonl(rows)
    new_hash = hashlib.sha256(data).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)

    if not path.exists() and _write_new(path, data):
        sidecar.write_text(f"{new_hash}  {path.name}\n", encoding="utf-8")
        return FrozenFile(path, new_hash, data.count(b"\n"), _created(path))

    if not sidecar.exists():
        # The data file exists without its hash (a crash between the two writes): record what is
        # there only if it is exactly what we were asked to write, otherwise refuse to guess.
        if sha256_file(path) != new_hash:
            raise FrozenFileError(
                f"{path}: version {version} exists without {sidecar.name} and differs from the rows given; "
                "restore the hash file or write a new version"
            )
        sidecar.write_text(f"{new_hash}  {path.name}\n", encoding="utf-8")
    ok, message = verify_frozen(path)
    if not ok:
        raise FrozenFileError(message + "; restore the file or write a new version")
    recorded = _read_sidecar(sidecar)
    return FrozenFile(
        path,
        recorded,
        _count_lines(path),
        _created(path),
        reused=True,
        differs_from_rows=recorded != new_hash,
    )


def _read_sidecar(sidecar: Path) -> str:
    text = sidecar.read_text(encoding="utf-8").split()
    if not text or not re.fullmatch(r"[0-9a-f]{64}", text[0]):
        raise FrozenFileError(f"{sidecar}: not a sha256 record (expected '<64 hex digits>  <file name>')")
    return text[0]


def verify_frozen(path: str | Path) -> tuple[bool, str]:
    """Recompute the file's hash and compare it with its sidecar; the message names the version."""
    path = Path(path)
    match = _FILE.match(path.name)
    version = match.group("version") if match else "?"
    label = f"{path.name} (version {version})"
    sidecar = path.with_name(path.name.removesuffix(".jsonl") + ".sha256")
    if not path.exists():
        return False, f"{label}: file is missing"
    if not sidecar.exists():
        return False, f"{label}: hash file {sidecar.name} is missing"
    try:
        recorded = _read_sidecar(sidecar)
    except FrozenFileError as exc:
        return False, f"{label}: {exc}"
    actual = sha256_file(path)
    if actual != recorded:
        return False, (
            f"{label}: content changed after it was frozen: recorded sha256 {recorded}, now {actual}"
        )
    return True, f"{label}: ok, sha256 {actual}"


def read_frozen_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a frozen file, after checking its hash."""
    ok, message = verify_frozen(path)
    if not ok:
        raise FrozenFileError(message)
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
