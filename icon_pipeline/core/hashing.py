"""Content hashes and seeds every stage shares. Standard library only: the training job uses it."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks (model weights and frozen sets can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_key(*parts: object) -> str:
    """A seed for random.Random from parts, the same in every process (str hashes are salted)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
