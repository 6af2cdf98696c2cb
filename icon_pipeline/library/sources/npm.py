"""Fetching a pinned npm package once, at set-up time, with `npm pack` (the registry npm is
configured with), and unpacking it safely. The only network use of the project besides package
installs: the default library (Tabler) and the open icon sets (corpus and external benchmark)."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

NPM_TIMEOUT_S = 600


class PackageFetchError(RuntimeError):
    """A package could not be fetched or unpacked; the message says which and what to do."""


def _tail(text: str, limit: int = 1500) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def extract_npm_package(tarball: Path, dest_dir: Path, marker: str) -> Path:
    """Unpack an npm tarball into `dest_dir/package` safely; returns that folder.

    `marker`: a path inside the package that must exist (what makes it the package expected).
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
            raise PackageFetchError(f"cannot unpack {tarball.name}: {exc}") from None
        unpacked = staging / "package"
        if not (unpacked / marker).exists():
            raise PackageFetchError(f"{tarball.name} has no package/{marker}: not the package expected")
        target = dest_dir / "package"
        if target.exists():  # a partial earlier attempt (no marker): replace it
            shutil.rmtree(target)
        unpacked.rename(target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_npm_package(package: str, version: str, dest_root: Path, marker: str, npm: str = "npm") -> Path:
    """Make sure `dest_root/<version>/package` holds `package@version`; returns that folder.

    Idempotent: an unpacked package (its `marker` present) is reused without running npm.
    """
    version_dir = Path(dest_root) / version
    package_dir = version_dir / "package"
    if (package_dir / marker).exists():
        return package_dir
    npm_path = shutil.which(npm)
    if npm_path is None:
        raise PackageFetchError(
            f"npm not found (looked for {npm!r} on PATH): install Node.js/npm, or unpack "
            f"`npm pack {package}@{version}` into {version_dir}"
        )
    version_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=dest_root) as work:
        spec = f"{package}@{version}"
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
            raise PackageFetchError(f"`npm pack {spec}` did not finish within {NPM_TIMEOUT_S}s") from None
        except OSError as exc:
            raise PackageFetchError(f"cannot run npm ({npm_path}): {exc}") from None
        if completed.returncode != 0:
            raise PackageFetchError(
                f"`npm pack {spec}` failed with exit code {completed.returncode}: "
                f"{_tail(completed.stderr or completed.stdout)}"
            )
        tarballs = sorted(Path(work).glob("*.tgz"))
        if len(tarballs) != 1:
            raise PackageFetchError(
                f"`npm pack {spec}` produced {len(tarballs)} tarballs, expected 1; "
                f"output: {_tail(completed.stdout)}"
            )
        return extract_npm_package(tarballs[0], version_dir, marker)
