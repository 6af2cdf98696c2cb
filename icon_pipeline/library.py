"""Scan every configured source into catalog records, and fingerprint sources cheaply.

Plain Python: the icon_catalog asset and the change sensor both call this.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from icon_pipeline.catalog import DEFAULT_MAX_SVG_BYTES, IconRecord, SourceFailure, SourceScan
from icon_pipeline.config import FigmaSource, LocalSource, PipelineConfig, TablerSource, source_name
from icon_pipeline.settings import get_paths

# Builds a Figma client for (api_url, file_keys); injected so this module needs no Dagster.
FigmaClientFactory = Callable[[str, list[str]], object]


def tabler_package_dir(source: TablerSource) -> Path:
    return get_paths().sources_dir / "tabler" / source.version / "package"


def scan_source(
    source: TablerSource | LocalSource | FigmaSource,
    figma_client: FigmaClientFactory | None = None,
    max_svg_bytes: int = DEFAULT_MAX_SVG_BYTES,
) -> SourceScan:
    """One source's icons and failures. `max_svg_bytes` (the config's render.max_svg_bytes) is what a
    local folder's scan refuses unread; Figma downloads have their own limit, Tabler is a known package."""
    name = source_name(source)
    if isinstance(source, TablerSource):
        from icon_pipeline.sources.tabler import scan_tabler

        package = tabler_package_dir(source)
        if not (package / "icons.json").exists():
            scan = SourceScan(source=name, version=source.version)
            scan.failures.append(
                SourceFailure(name, str(package), "Tabler package missing: run `icon-pipeline fetch-data`")
            )
            return scan
        return scan_tabler(package, source_name=name, styles=tuple(source.styles), limit=source.limit)
    if isinstance(source, LocalSource):
        from icon_pipeline.sources.local import scan_local

        if not source.path.is_dir():
            scan = SourceScan(source=name, version="missing")
            scan.failures.append(SourceFailure(name, str(source.path), "folder does not exist"))
            return scan
        return scan_local(source.path, source_name=name, max_svg_bytes=max_svg_bytes)
    from icon_pipeline.sources.figma import FigmaError, iter_pages, scan_figma

    if figma_client is None:
        raise ValueError(f"source {name!r} is a Figma source but no Figma client was given")
    download_dir = get_paths().sources_dir / "figma" / name
    try:
        with figma_client(source.api_url, list(source.file_keys)) as client:
            scan, files_info = scan_figma(client, list(source.file_keys), download_dir, source_name=name)
    except (FigmaError, ValueError) as exc:
        scan = SourceScan(source=name, version="unavailable")
        scan.failures.append(SourceFailure(name, ",".join(source.file_keys), str(exc)))
        return scan
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
        from icon_pipeline.sources.local import folder_fingerprint

        return f"local:{folder_fingerprint(source.path)}" if source.path.is_dir() else "local:missing"
    from icon_pipeline.sources.figma import figma_versions

    if figma_client is None:
        raise ValueError(f"source {source.name!r} is a Figma source but no Figma client was given")
    with figma_client(source.api_url, list(source.file_keys)) as client:
        versions = figma_versions(client, list(source.file_keys))
    return "figma:" + ";".join(f"{k}={versions[k]}" for k in sorted(versions))


def batch_group(icon: IconRecord) -> str:
    """Batches are per source and style, or per collection (a Figma page) where a source has one."""
    return f"{icon.source}-{_slug(icon.collection or icon.style or 'all')}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"
