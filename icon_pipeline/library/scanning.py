"""Scan every configured source into catalog records, and fingerprint sources cheaply.

Plain Python: the icon_catalog asset and the change sensor both call this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from icon_pipeline.core.config import FigmaSource, LocalSource, PipelineConfig, TablerSource, source_name
from icon_pipeline.core.limits import DEFAULT_MAX_SVG_BYTES
from icon_pipeline.core.storage import asset_path
from icon_pipeline.library.batching import assign_batches
from icon_pipeline.library.records import IconRecord, SourceFailure, SourceScan

# Builds a Figma client for (api_url, file_keys); injected so this module needs no Dagster.
FigmaClientFactory = Callable[[str, list[str]], object]


def tabler_package_dir(source: TablerSource) -> Path:
    return asset_path("tabler_package", version=source.version)


def scan_source(
    source: TablerSource | LocalSource | FigmaSource,
    figma_client: FigmaClientFactory | None = None,
    max_svg_bytes: int = DEFAULT_MAX_SVG_BYTES,
) -> SourceScan:
    """One source's icons and failures. `max_svg_bytes` (the config's render.max_svg_bytes) is what a
    local folder's scan refuses unread; Figma downloads have their own limit, Tabler is a known package."""
    name = source_name(source)
    if isinstance(source, TablerSource):
        from icon_pipeline.library.sources.tabler import scan_tabler

        package = tabler_package_dir(source)
        if not (package / "icons.json").exists():
            return SourceScan(
                source=name,
                version=source.version,
                error=f"the Tabler package is missing at {package}: run `icon-pipeline fetch-data`",
            )
        return scan_tabler(package, source_name=name, styles=tuple(source.styles), limit=source.limit)
    if isinstance(source, LocalSource):
        from icon_pipeline.library.sources.local import scan_local

        if not source.path.is_dir():
            return SourceScan(
                source=name, version="missing", error=f"the folder {source.path} does not exist"
            )
        return scan_local(source.path, source_name=name, max_svg_bytes=max_svg_bytes)
    from icon_pipeline.library.sources.figma import FigmaError, iter_pages, scan_figma

    if figma_client is None:
        raise ValueError(f"source {name!r} is a Figma source but no Figma client was given")
    download_dir = asset_path("figma_downloads", name=name)
    try:
        with figma_client(source.api_url, list(source.file_keys)) as client:
            scan, files_info = scan_figma(client, list(source.file_keys), download_dir, source_name=name)
    except (FigmaError, ValueError) as exc:
        return SourceScan(source=name, version="unavailable", error=str(exc))
    # Figma icons are batched per page; page names may contain "/", so take them from the scan.
    page_of = {icon_id: page for _, page, ids in iter_pages(files_info) for icon_id in ids}
    scan.icons = [replace(icon, collection=page_of.get(icon.icon_id, "")) for icon in scan.icons]
    return scan


def scan_library(config: PipelineConfig, figma_client: FigmaClientFactory | None = None) -> list[SourceScan]:
    return [scan_source(source, figma_client, config.render.max_svg_bytes) for source in config.sources]


def source_fingerprint(
    source: TablerSource | LocalSource | FigmaSource, figma_client: FigmaClientFactory | None = None
) -> str:
    """A cheap string that changes when the source's icons change (no downloads, no rendering)."""
    if isinstance(source, TablerSource):
        styles = ",".join(source.styles)
        return f"tabler:{source.version}:{styles}:{source.limit}"
    if isinstance(source, LocalSource):
        from icon_pipeline.library.sources.local import folder_fingerprint

        return f"local:{folder_fingerprint(source.path)}" if source.path.is_dir() else "local:missing"
    from icon_pipeline.library.sources.figma import figma_versions

    if figma_client is None:
        raise ValueError(f"source {source.name!r} is a Figma source but no Figma client was given")
    with figma_client(source.api_url, list(source.file_keys)) as client:
        versions = figma_versions(client, list(source.file_keys))
    return "figma:" + ";".join(f"{k}={versions[k]}" for k in sorted(versions))


class SourceUnreadable(RuntimeError):
    """A configured source could not be read in full; the message names it, the reason and the fix."""


@dataclass
class CatalogUpdate:
    """The catalog a scan gives, with every icon's batch key."""

    icons: list[IconRecord]
    failures: list[SourceFailure]
    stale: dict[str, str]  # source -> why its icons come from the last good scan
    new_batches: list[str]
    history: dict[str, str]  # icon_id -> batch key of every icon ever assigned one


def update_catalog(
    config: PipelineConfig,
    scans: list[SourceScan],
    previous: list[IconRecord],
    history: Mapping[str, str],
) -> CatalogUpdate:
    """Merge the scans into the catalog: never shrunk by a source that could not be read.

    A source whose scan has an `error` stops the update (SourceUnreadable) unless its
    `on_failure` is "keep": its icons then come from `previous`, marked stale. Batch keys come from
    `history` first (a source removed and added back gets its old keys), then new batches.
    """
    icons: list[IconRecord] = []
    stale: dict[str, str] = {}
    unreadable = []
    for source, scan in zip(config.sources, scans, strict=True):
        name = source_name(source)
        if scan.error is None and not scan.icons:
            # An existing but empty folder (an unmounted share), an emptied Figma file: a source
            # never silently takes the library down to nothing.
            had = sum(icon.source == name for icon in previous)
            refused = f" ({len(scan.failures)} files refused, listed as failures)" if scan.failures else ""
            was = f" where the last good scan had {had}" if had else ""
            scan = replace(
                scan, error=f"yielded no icons{refused}{was}; an unmounted share or an emptied folder?"
            )
        if scan.error is None:
            icons += scan.icons
            continue
        kept = [replace(icon, stale=True) for icon in previous if icon.source == name]
        if source.on_failure == "keep":
            icons += kept
            stale[name] = f"{scan.error} (kept its {len(kept)} icons from the last good scan)"
        else:
            unreadable.append(f"source {name!r}: {scan.error}")
    if unreadable:
        raise SourceUnreadable(
            f"{'; '.join(unreadable)}. Nothing was changed: the catalog keeps its {len(previous)} icons. "
            "Fix the source, or set `on_failure: keep` on it in icon_pipeline.yaml to go on with its "
            "last good icons."
        )
    known = {**history, **{icon.icon_id: icon.batch_key for icon in previous if icon.batch_key}}
    icons, new_batches = assign_batches(icons, known, config.batching.icons_per_batch)
    history = {**known, **{icon.icon_id: icon.batch_key for icon in icons}}
    failures = [failure for scan in scans for failure in scan.failures]
    return CatalogUpdate(icons, failures, stale, new_batches, history)
