"""Other open icon sets, pinned npm packages: the training corpus and the external benchmark.

Other designers drew the same concepts in other styles, and people named and tagged them. Two
uses, never mixed:

- **corpus** sets teach the model concepts across drawing styles (the `icon_corpus` asset);
- **benchmark** sets are queries nobody on the project wrote (the `external_benchmark` asset):
  their tags and drawings are never trained on, fitted on, or used as vocabulary.

Lucide (any lucide-* package) and Feather (feather-icons, Lucide's origin) are kept for an
independent held-out check: `check_allowed` refuses them everywhere a set is named.

Each reader turns an unpacked package into `SetDrawing`s: one per (icon, style) SVG, with the
icon's name (its style suffix removed), the aliases and tags people gave it, and its category.
A licence is recorded as the package declares it and as its licence file is titled (they differ
for remixicon and @mdi/svg).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from icon_pipeline.core.icon_set_names import (
    BANNED_PATTERNS,
    SET_ROLES,
    IconSetError,
    Role,
    check_allowed,
    check_set_name,
)
from icon_pipeline.library.records import IconRecord, sha256_bytes
from icon_pipeline.library.sources.npm import PackageFetchError, fetch_npm_package


@dataclass(frozen=True)
class SetDrawing:
    """One SVG of an open icon set."""

    set_name: str
    name: str  # the icon's name in its set, style suffix removed ("bell")
    style: str  # the set's own style or weight ("regular", "fill", "outline", ...)
    path: Path
    aliases: tuple[str, ...] = ()  # other names the set gives the icon
    tags: tuple[str, ...] = ()  # search terms and tags people wrote for it
    category: str = ""


@dataclass(frozen=True)
class IconSet:
    name: str  # the partition key and the config name
    package: str  # the npm package
    version: str
    licence: str  # as package.json declares it
    credit: str  # what a report or README that shows its icons says
    marker: str  # a path inside the package that makes it this package
    read: Callable[[Path, tuple[str, ...] | None], list[SetDrawing]]
    styles: tuple[str, ...]  # every style the package has
    default_styles: tuple[str, ...]  # the styles read unless the config says otherwise

    @property
    def role(self) -> Role:
        return SET_ROLES[self.name]  # one home: the config checks names against it


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def _strip_suffix(stem: str, suffixes: tuple[str, ...]) -> tuple[str, str | None]:
    for suffix in suffixes:
        if stem.endswith(f"-{suffix}"):
            return stem[: -len(suffix) - 1], suffix
    return stem, None


def _svgs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.svg")) if folder.is_dir() else []


def _chosen(styles: tuple[str, ...] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(styles) if styles else default


# --- readers ------------------------------------------------------------------------------------

PHOSPHOR_WEIGHTS = ("regular", "thin", "light", "bold", "fill", "duotone")
_PHOSPHOR_ENTRY = re.compile(r"\{\s*name:\s*\"(?P<name>[^\"]+)\"(?P<body>.*?)\n\s*\}", re.S)
_JS_LIST = r"{key}:\s*\[(?P<items>[^\]]*)\]"


def _js_strings(body: str, key: str) -> tuple[str, ...]:
    match = re.search(_JS_LIST.format(key=key), body)
    return tuple(re.findall(r"\"([^\"]*)\"", match.group("items"))) if match else ()


def read_phosphor(package: Path, styles: tuple[str, ...] | None = None) -> list[SetDrawing]:
    """@phosphor-icons/core: tags per icon in dist/index.mjs (a generated JS module: each entry is
    `{ name: "...", ..., tags: [...], ... }`), SVGs in assets/<weight>/<name>[-<weight>].svg."""
    source = (package / "dist" / "index.mjs").read_text("utf-8")
    entries = {m.group("name"): m.group("body") for m in _PHOSPHOR_ENTRY.finditer(source)}
    if not entries:
        raise IconSetError(f"{package}/dist/index.mjs: no icon entries found (an unknown format)")
    drawings = []
    for weight in _chosen(styles, PHOSPHOR_WEIGHTS):
        for path in _svgs(package / "assets" / weight):
            name = path.stem if weight == "regular" else path.stem.removesuffix(f"-{weight}")
            body = entries.get(name, "")
            tags = tuple(t for t in _js_strings(body, "tags") if t and not t.startswith("*"))
            drawings.append(SetDrawing("phosphor", name, weight, path, tags=tags))
    return drawings


FONTAWESOME_STYLES = ("solid", "regular", "brands")


def read_fontawesome(package: Path, styles: tuple[str, ...] | None = None) -> list[SetDrawing]:
    """@fortawesome/fontawesome-free: metadata/icons.yml (label, search terms, alias names),
    SVGs in svgs/<style>/<name>.svg."""
    import yaml

    index = yaml.safe_load((package / "metadata" / "icons.yml").read_text("utf-8"))
    if not isinstance(index, dict):
        raise IconSetError(f"{package}/metadata/icons.yml: expected a mapping of icon name to metadata")
    drawings = []
    for style in _chosen(styles, FONTAWESOME_STYLES):
        for path in _svgs(package / "svgs" / style):
            entry = index.get(path.stem)
            if not isinstance(entry, dict):
                continue  # an old name's copy of a renamed icon (its alias): the same drawing
            aliases = tuple((entry.get("aliases") or {}).get("names") or ())
            terms = tuple(str(t) for t in (entry.get("search") or {}).get("terms") or ())
            label = str(entry.get("label") or "")
            tags = tuple(dict.fromkeys(t for t in (label.lower(), *terms) if t))
            drawings.append(SetDrawing("fontawesome", path.stem, style, path, aliases=aliases, tags=tags))
    return drawings


MDI_STYLES = ("filled", "outline")


def read_mdi(package: Path, styles: tuple[str, ...] | None = None) -> list[SetDrawing]:
    """@mdi/svg: meta.json (name, aliases, category tags, deprecated), SVGs in svg/<name>.svg; an
    `-outline` name is the outline style of the icon without it. Deprecated icons are left out."""
    meta = json.loads((package / "meta.json").read_text("utf-8"))
    wanted = _chosen(styles, MDI_STYLES)
    drawings = []
    for entry in meta:
        if entry.get("deprecated"):
            continue
        name, suffix = _strip_suffix(str(entry["name"]), ("outline",))
        style = suffix or "filled"
        path = package / "svg" / f"{entry['name']}.svg"
        if style not in wanted or not path.is_file():
            continue
        aliases = tuple(_strip_suffix(str(a), ("outline",))[0] for a in entry.get("aliases") or ())
        tags = tuple(str(t) for t in entry.get("tags") or ())
        category = tags[0] if tags else ""
        drawings.append(SetDrawing("mdi", name, style, path, aliases=aliases, category=category))
    return drawings


ICONOIR_STYLES = ("regular", "solid")


def read_iconoir(package: Path, styles: tuple[str, ...] | None = None) -> list[SetDrawing]:
    """iconoir: names only, SVGs in icons/<regular|solid>/<name>.svg."""
    return [
        SetDrawing("iconoir", path.stem, style, path)
        for style in _chosen(styles, ICONOIR_STYLES)
        for path in _svgs(package / "icons" / style)
    ]


REMIX_STYLES = ("line", "fill")


def read_remixicon(package: Path, styles: tuple[str, ...] | None = None) -> list[SetDrawing]:
    """remixicon: icons/<Category>/<name>-<line|fill>.svg; the folder is the category."""
    wanted = _chosen(styles, REMIX_STYLES)
    drawings = []
    for path in sorted((package / "icons").glob("*/*.svg")):
        name, suffix = _strip_suffix(path.stem, REMIX_STYLES)
        style = suffix or "line"
        if style in wanted:
            category = path.parent.name
            drawings.append(SetDrawing("remixicon", name, style, path, category=category))
    return drawings


MATERIAL_STYLES = ("outlined", "outlined-fill", "rounded", "rounded-fill", "sharp", "sharp-fill")


def read_material_symbols(package: Path, styles: tuple[str, ...] | None = None) -> list[SetDrawing]:
    """@material-symbols/svg-400: names only; <family>/<name>.svg and <family>/<name>-fill.svg."""
    wanted = _chosen(styles, ("outlined",))
    drawings = []
    for family in ("outlined", "rounded", "sharp"):
        for path in _svgs(package / family):
            name, filled = _strip_suffix(path.stem, ("fill",))
            style = f"{family}-fill" if filled else family
            if style in wanted:
                drawings.append(SetDrawing("material-symbols", name, style, path))
    return drawings


ICON_SETS: dict[str, IconSet] = {
    s.name: s
    for s in (
        IconSet(
            name="mdi",
            package="@mdi/svg",
            version="7.4.47",
            licence="Apache-2.0 (LICENSE: Pictogrammers Free License, icons Apache 2.0)",
            credit="Material Design Icons by Pictogrammers (Apache-2.0)",
            marker="meta.json",
            read=read_mdi,
            styles=MDI_STYLES,
            default_styles=MDI_STYLES,
        ),
        IconSet(
            name="iconoir",
            package="iconoir",
            version="7.12.1",
            licence="MIT",
            credit="Iconoir by Luca Burgio (MIT)",
            marker="icons/regular",
            read=read_iconoir,
            styles=ICONOIR_STYLES,
            default_styles=ICONOIR_STYLES,
        ),
        IconSet(
            name="remixicon",
            package="remixicon",
            version="4.9.1",
            licence="Apache-2.0 (License file: Remix Icon License v1.0, no standalone icon packs)",
            credit="Remix Icon by Remix Design",
            marker="icons",
            read=read_remixicon,
            styles=REMIX_STYLES,
            default_styles=REMIX_STYLES,
        ),
        IconSet(
            name="material-symbols",
            package="@material-symbols/svg-400",
            version="0.48.2",
            licence="Apache-2.0",
            credit="Material Symbols by Google (Apache-2.0)",
            marker="outlined",
            read=read_material_symbols,
            styles=MATERIAL_STYLES,
            default_styles=("outlined",),
        ),
        IconSet(
            name="phosphor",
            package="@phosphor-icons/core",
            version="2.1.1",
            licence="MIT",
            credit="Phosphor Icons (MIT)",
            marker="dist/index.mjs",
            read=read_phosphor,
            styles=PHOSPHOR_WEIGHTS,
            default_styles=PHOSPHOR_WEIGHTS,
        ),
        IconSet(
            name="fontawesome",
            package="@fortawesome/fontawesome-free",
            version="7.3.1",
            licence="CC-BY-4.0 AND OFL-1.1 AND MIT (icons CC BY 4.0)",
            credit="Font Awesome Free 7.3.1 by Fonticons, Inc. (https://fontawesome.com), icons CC BY 4.0",
            marker="metadata/icons.yml",
            read=read_fontawesome,
            styles=FONTAWESOME_STYLES,
            default_styles=FONTAWESOME_STYLES,
        ),
    )
}

CORPUS_SETS = tuple(name for name, s in ICON_SETS.items() if s.role == "corpus")
BENCHMARK_SETS = tuple(name for name, s in ICON_SETS.items() if s.role == "benchmark")


def icon_set(name: str, role: Role | None = None) -> IconSet:
    """The registry entry of `name`; IconSetError naming the choices for an unknown or banned one,
    or one of another role (a benchmark set is never a training set, nor the reverse)."""
    check_set_name(name, role)
    spec = ICON_SETS[name]
    check_allowed(spec.package)
    return spec


def package_dir(spec: IconSet, sources_root: Path) -> Path:
    """Where the set's unpacked package lives under the data root's sources folder."""
    return sources_root / spec.name / spec.version / "package"


def fetch_icon_set(spec: IconSet, sources_root: Path, npm: str = "npm") -> Path:
    """`npm pack` the set once (set-up time); an unpacked package is reused."""
    return fetch_npm_package(spec.package, spec.version, sources_root / spec.name, spec.marker, npm=npm)


def read_icon_set(
    spec: IconSet, sources_root: Path, styles: tuple[str, ...] | None = None
) -> list[SetDrawing]:
    """Every drawing of the set's `styles` (default: its default styles) from the fetched package;
    IconSetError saying what to run when the package is missing or not as expected."""
    folder = package_dir(spec, sources_root)
    if not (folder / spec.marker).exists():
        raise IconSetError(
            f"{spec.name}: {spec.package}@{spec.version} is not fetched ({folder} has no {spec.marker}); "
            "run `icon-pipeline fetch-data` (npm pack, at set-up)"
        )
    unknown = sorted(set(styles or ()) - set(spec.styles))
    if unknown:
        raise IconSetError(f"{spec.name}: unknown style(s) {unknown}; it has {', '.join(spec.styles)}")
    try:
        drawings = spec.read(folder, styles or spec.default_styles)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IconSetError(f"{spec.name}: cannot read {folder}: {exc}") from exc
    if not drawings:
        raise IconSetError(f"{spec.name}: {folder} holds no SVG of styles {styles or spec.default_styles}")
    return drawings


def drawing_record(drawing: SetDrawing) -> IconRecord:
    """The drawing as a catalog-style record, so the renderer (and its content-addressed store)
    treats it as any icon; its id is `<set>:<style>:<name>`."""
    data = drawing.path.read_bytes()
    return IconRecord(
        icon_id=f"{drawing.set_name}:{drawing.style}:{drawing.name}",
        source=drawing.set_name,
        name=drawing.name,
        raw_name=drawing.path.stem,
        file_path=str(drawing.path),
        format="svg",
        content_hash=sha256_bytes(data),
        tags=drawing.tags,
        category=drawing.category,
        style=drawing.style,
    )


__all__ = [
    "BANNED_PATTERNS",
    "BENCHMARK_SETS",
    "CORPUS_SETS",
    "ICON_SETS",
    "IconSet",
    "IconSetError",
    "PackageFetchError",
    "SetDrawing",
    "check_allowed",
    "drawing_record",
    "fetch_icon_set",
    "icon_set",
    "read_icon_set",
]
