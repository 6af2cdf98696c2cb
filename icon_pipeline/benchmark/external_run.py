"""The external benchmark's run: for each configured open icon set (external.sets), its drawings
matched to the library's icons by name and alias, rendered, turned into queries (its human tags,
the novel ones, its drawings) and searched on every channel. Never trained on, fitted on or used as
vocabulary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from icon_pipeline.benchmark.external import EXTERNAL_TASKS, build_external_queries, matched_only
from icon_pipeline.benchmark.external_report import ExternalReport
from icon_pipeline.benchmark.report import run_benchmark
from icon_pipeline.core.config import PipelineConfig
from icon_pipeline.core.storage import (
    asset_path,
    for_writing,
    icon_images_path,
    pairs_path,
    read_records,
    render_root,
    write_table,
)
from icon_pipeline.dataset.grouping import library_groups
from icon_pipeline.library.catalog import read_catalog
from icon_pipeline.library.sources.icon_sets import IconSetError, drawing_record, icon_set, read_icon_set
from icon_pipeline.render.rasterize import RenderSettings, RenderStore, render_batch
from icon_pipeline.search.hybrid import HybridSearch
from icon_pipeline.search.texts import icon_texts


def run_external_benchmark(
    config: PipelineConfig,
    search: HybridSearch,
    connections: Any,
    info: Callable[[str], None],
    warn: Callable[[str], None],
) -> ExternalReport:
    """Every configured set measured (HNSW), or skipped with the reason (not fetched, too few
    matches); the report pools them."""
    settings = config.external
    groups = library_groups()
    catalog = read_catalog()
    names = {icon.icon_id: icon.name for icon in catalog if icon.icon_id in groups}
    ids, text_groups, texts = icon_texts()
    group_texts: dict[str, list[str]] = {}
    for group, text in zip(text_groups, texts, strict=True):
        group_texts.setdefault(group, []).append(text)
    heldout = {
        row["group_id"] for row in read_records(pairs_path(), "training_pairs") if row["split"] == "heldout"
    }
    images = {row["icon_id"]: row["png_path"] for row in read_records(icon_images_path(), "icon images")}
    render = RenderSettings.from_config(config.render)
    report = ExternalReport(tasks=dict(EXTERNAL_TASKS))
    for name in settings.sets:
        try:
            spec = icon_set(name, role="benchmark")
            drawings = read_icon_set(spec, asset_path("icon_set_versions", set=name).parent, spec.styles)
        except IconSetError as exc:
            report.skip(name, str(exc))
            warn(f"external benchmark: {name} skipped: {exc}")
            continue
        matched = matched_only(drawings, names, groups)  # only these become drawing queries
        records = [drawing_record(d) for d in matched]
        rendered = render_batch(records, render, RenderStore(render_root())).by_icon()
        png = {i: o.png_path for i, o in rendered.items() if o.status != "failed"}
        rows = [
            {
                "name": d.name,
                "style": d.style,
                "aliases": list(d.aliases),
                "tags": list(d.tags),
                "png_path": png.get(f"{d.set_name}:{d.style}:{d.name}", ""),
            }
            for d in drawings
        ]
        queries = build_external_queries(
            name,
            rows,
            names,
            groups,
            group_texts,
            heldout,
            min_matches=settings.min_matches,
            max_queries=settings.max_queries,
            seed=settings.seed,
        )
        write_table(pd.DataFrame(queries.rows), for_writing(asset_path("external_queries", set=name)))
        if queries.skipped:
            report.skip(name, queries.skipped, queries.summary())
            warn(f"external benchmark: {name} skipped: {queries.skipped}")
            continue
        info(
            f"external benchmark: {name}: {queries.matched_icons} of {queries.set_icons} icons match the "
            f"library; {len(queries.rows)} queries"
        )
        result = run_benchmark(
            queries.rows,
            search,
            groups,
            icon_images=images,
            modes=("hnsw",),
            connections=connections,
            tasks=EXTERNAL_TASKS,
        )
        report.add(name, spec, queries.summary(), result)
    return report
