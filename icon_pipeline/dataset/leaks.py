"""The leak guard: nothing of the external benchmark's sets, nor of Lucide or Feather, is trained on.

Texts are guarded by where they come from: a training text is a library icon's own name, tag or
caption, or a corpus set's name, alias or tag, and every corpus set is checked to be one (not a
benchmark set, not Lucide or Feather). Drawings are guarded by content: no trained SVG (library or
corpus) may be byte-identical to a drawing of a benchmark set, so a copy under another name or in a
designer's own folder is caught too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from icon_pipeline.library.records import sha256_bytes
from icon_pipeline.library.sources.icon_sets import (
    BENCHMARK_SETS,
    IconSetError,
    check_allowed,
    icon_set,
    read_icon_set,
)


def benchmark_drawing_hashes(sources_root: Path) -> dict[str, str]:
    """sha256 of every SVG of every fetched benchmark set (all styles) -> `<set>:<style>:<name>`."""
    hashes: dict[str, str] = {}
    for name in BENCHMARK_SETS:
        spec = icon_set(name)
        try:
            drawings = read_icon_set(spec, sources_root, spec.styles)
        except IconSetError:
            continue  # not fetched here: nothing of it can have been trained on from this machine
        for drawing in drawings:
            hashes[sha256_bytes(drawing.path.read_bytes())] = f"{name}:{drawing.style}:{drawing.name}"
    return hashes


def training_leaks(
    trained_drawings: Mapping[str, str], trained_sets: Iterable[str], sources_root: Path
) -> list[str]:
    """Problems found, in words (empty: no leak). `trained_drawings`: content sha256 of every trained
    SVG -> what it is; `trained_sets`: the corpus sets trained on."""
    problems = []
    for name in sorted(set(trained_sets)):
        try:
            check_allowed(name)
            icon_set(name, role="corpus")
        except IconSetError as exc:
            problems.append(f"trained set {name}: {exc}")
    benchmark = benchmark_drawing_hashes(sources_root)
    for digest, what in sorted(trained_drawings.items(), key=lambda item: item[1]):
        if digest in benchmark:
            problems.append(f"{what} is a copy of the benchmark drawing {benchmark[digest]}")
    return problems
