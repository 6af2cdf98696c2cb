"""Small unpacked npm packages in each open icon set's real layout, for the readers and the pipeline.

Each icon is drawn from a Tabler SVG (another style, or a simple shape), so tests run offline and
fast while the readers parse the very files and metadata formats the real packages ship.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from icon_pipeline.library.sources.icon_sets import ICON_SETS

SHAPES = [
    '<circle cx="12" cy="12" r="8"/>',
    '<rect x="4" y="4" width="16" height="16"/>',
    '<path d="M4 20 L12 4 L20 20 Z"/>',
    '<path d="M4 12 H20 M12 4 V20"/>',
]


def shape_svg(index: int, fill: bool = False) -> str:
    paint = 'fill="currentColor"' if fill else 'fill="none" stroke="currentColor" stroke-width="2"'
    shape = SHAPES[index % len(SHAPES)]
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" {paint}>{shape}</svg>'


def _svg(drawings: Mapping[str, str] | None, name: str, index: int, fill: bool = False) -> str:
    return (drawings or {}).get(name) or shape_svg(index, fill)


def package_root(sources: Path, set_name: str) -> Path:
    spec = ICON_SETS[set_name]
    root = sources / set_name / spec.version / "package"
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_phosphor(
    sources: Path, icons: Mapping[str, Sequence[str]], drawings: Mapping[str, str] | None = None
) -> Path:
    """`icons`: name -> tags; every weight of each icon."""
    root = package_root(sources, "phosphor")
    entries = []
    for index, (name, tags) in enumerate(icons.items()):
        tag_lines = ",\n".join(f'      "{t}"' for t in ["*new*", *tags])
        entries.append(
            f'  {{\n    name: "{name}",\n    pascal_name: "X",\n    categories: [e.SYSTEM],\n'
            f"    tags: [\n{tag_lines}\n    ],\n    codepoint: {index},\n  }}"
        )
        for weight in ("regular", "thin", "light", "bold", "fill", "duotone"):
            folder = root / "assets" / weight
            folder.mkdir(parents=True, exist_ok=True)
            stem = name if weight == "regular" else f"{name}-{weight}"
            (folder / f"{stem}.svg").write_text(_svg(drawings, name, index, fill=weight == "fill"))
    (root / "dist").mkdir(parents=True, exist_ok=True)
    (root / "dist" / "index.mjs").write_text(
        'var e = ((i) => (i.SYSTEM = "system", i))(e || {});\nconst n = [\n'
        + ",\n".join(entries)
        + "\n];\nexport { n as icons };\n"
    )
    return root


def write_fontawesome(
    sources: Path,
    icons: Mapping[str, Mapping[str, Sequence[str]]],
    drawings: Mapping[str, str] | None = None,
) -> Path:
    """`icons`: name -> {"terms": [...], "aliases": [...]}; solid and regular, plus each alias's copy."""
    root = package_root(sources, "fontawesome")
    metadata = {}
    for index, (name, info) in enumerate(icons.items()):
        aliases = list(info.get("aliases", ()))
        metadata[name] = {
            "label": name.replace("-", " ").title(),
            "search": {"terms": list(info.get("terms", ()))},
            "styles": ["solid", "regular"],
            **({"aliases": {"names": aliases}} if aliases else {}),
        }
        for style in ("solid", "regular"):
            folder = root / "svgs" / style
            folder.mkdir(parents=True, exist_ok=True)
            for stem in (name, *aliases):  # the real package ships a copy under each old name
                (folder / f"{stem}.svg").write_text(_svg(drawings, name, index, fill=style == "solid"))
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / "icons.yml").write_text(yaml.safe_dump(metadata))
    return root


def write_mdi(
    sources: Path, icons: Mapping[str, Sequence[str]], drawings: Mapping[str, str] | None = None
) -> Path:
    """`icons`: name -> aliases; each also as `<name>-outline`; one deprecated icon besides."""
    root = package_root(sources, "mdi")
    meta = []
    (root / "svg").mkdir(parents=True, exist_ok=True)
    for index, (name, aliases) in enumerate(icons.items()):
        for stem, fill in ((name, True), (f"{name}-outline", False)):
            meta.append({"name": stem, "aliases": list(aliases), "tags": ["Test"], "deprecated": False})
            (root / "svg" / f"{stem}.svg").write_text(_svg(drawings, name, index, fill=fill))
    meta.append({"name": "old-thing", "aliases": [], "tags": [], "deprecated": True})
    (root / "svg" / "old-thing.svg").write_text(shape_svg(0))
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def write_iconoir(sources: Path, names: Sequence[str], drawings: Mapping[str, str] | None = None) -> Path:
    root = package_root(sources, "iconoir")
    for style in ("regular", "solid"):
        (root / "icons" / style).mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(names):
            (root / "icons" / style / f"{name}.svg").write_text(
                _svg(drawings, name, index, fill=style == "solid")
            )
    return root


def write_remixicon(sources: Path, names: Sequence[str], drawings: Mapping[str, str] | None = None) -> Path:
    root = package_root(sources, "remixicon")
    (root / "icons" / "System").mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        for style in ("line", "fill"):
            (root / "icons" / "System" / f"{name}-{style}.svg").write_text(
                _svg(drawings, name, index, fill=style == "fill")
            )
    return root


def write_material_symbols(sources: Path, names: Sequence[str]) -> Path:
    root = package_root(sources, "material-symbols")
    for family in ("outlined", "rounded", "sharp"):
        (root / family).mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(names):
            (root / family / f"{name}.svg").write_text(shape_svg(index))
            (root / family / f"{name}-fill.svg").write_text(shape_svg(index, fill=True))
    return root
