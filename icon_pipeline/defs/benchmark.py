"""benchmark_report and external_benchmark: what search is worth, on the project's own queries and
on queries nobody on the project wrote."""

import json
import math

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from icon_pipeline.benchmark.external import EXTERNAL_TASKS, build_external_queries, matched_only
from icon_pipeline.benchmark.external_report import ExternalReport, combined_markdown
from icon_pipeline.benchmark.names import merge_into, run_name_queries
from icon_pipeline.benchmark.report import BM25_BASELINE, PIXEL_BASELINE, TASKS, run_benchmark
from icon_pipeline.core.config import library_id, load_config
from icon_pipeline.core.frozen import read_frozen_jsonl
from icon_pipeline.core.storage import (
    QUERIES_NAME,
    asset_path,
    for_writing,
    frozen_file,
    icon_images_path,
    pairs_path,
    read_catalog,
    read_records,
    render_root,
    resolved_rows,
    write_table,
)
from icon_pipeline.dataset.grouping import library_groups
from icon_pipeline.defs.metadata import FLOAT_PLACES, OWNERS, asset_tags, image_markdown, table
from icon_pipeline.defs.resources.postgres import PostgresResource
from icon_pipeline.library.sources.icon_sets import IconSetError, drawing_record, icon_set, read_icon_set
from icon_pipeline.render.rasterize import RenderSettings, RenderStore, render_batch
from icon_pipeline.search.hybrid import HYBRID
from icon_pipeline.search.service import ChannelSet
from icon_pipeline.search.texts import icon_texts

EXTERNAL_CHECK = "finetuned_beats_raw_pixels_on_drawings"


@asset(
    owners=OWNERS,
    tags=asset_tags("benchmark", "index"),
    group_name="benchmark",
    kinds={"json", "markdown"},
    deps=["search_fusion"],
    check_specs=[
        AssetCheckSpec(
            EXTERNAL_CHECK,
            asset="external_benchmark",
            description="on other sets' drawings of the library's concepts, the fine-tuned model alone finds "
            "the concept in its top 10 at least twice as often as raw pixels do",
        )
    ],
)
def external_benchmark(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """Queries nobody on the project wrote: other open icon sets (external.sets: Phosphor, Font
    Awesome) matched to the library's icons by name and alias; their human tags (all, and the novel
    ones sharing no word with the icon's own texts) and their drawings in every style, answered by
    the matched icon's group. Every channel, hybrid search, BM25 and raw pixels, per set and pooled
    (HNSW). These sets are never trained on, fitted on or used as vocabulary."""
    config = load_config()
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
    with postgres.connect(autocommit=True) as conn, postgres.connections() as connections:
        channel_set = ChannelSet(conn, config.index.ef_search)
        search = channel_set.hybrid(names=[n for n in channel_set.available() if n != HYBRID])
        for name in settings.sets:
            try:
                spec = icon_set(name, role="benchmark")
                drawings = read_icon_set(spec, asset_path("icon_set_versions", set=name).parent, spec.styles)
            except IconSetError as exc:
                report.skip(name, str(exc))
                context.log.warning(f"external benchmark: {name} skipped: {exc}")
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
                context.log.warning(f"external benchmark: {name} skipped: {queries.skipped}")
                continue
            context.log.info(
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
    json_path = for_writing(asset_path("external_json"))
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    markdown = report.to_markdown()
    asset_path("external_markdown").write_text(markdown)
    metadata: dict = {
        "report": MetadataValue.md(markdown),
        "sets": table(pd.DataFrame(report.set_rows())),
        "results": table(pd.DataFrame(report.headline()), max_rows=120),
        "json": MetadataValue.path(str(json_path)),
        "markdown": MetadataValue.path(str(asset_path("external_markdown"))),
    }
    for row in report.headline():
        for metric in ("R@1", "R@10"):
            value = row.get(metric)
            if value is not None and math.isfinite(value):
                metadata[f"{row['set']}/{row['task']}/{row['model']}/{metric}"] = round(
                    float(value), FLOAT_PLACES
                )
    plot = report.plot(asset_path("reports"))
    if plot is not None:
        metadata["plot"] = image_markdown(plot, "external benchmark")
    return MaterializeResult(metadata=metadata, check_results=[_external_check(report)])


def _external_check(report: ExternalReport) -> AssetCheckResult:
    tuned, pixels = (
        report.figure("pooled", "drawings", "finetuned", "R@10"),
        report.figure("pooled", "drawings", PIXEL_BASELINE, "R@10"),
    )
    if tuned is None or pixels is None:
        return AssetCheckResult(
            check_name=EXTERNAL_CHECK,
            passed=True,
            description="no drawing query was measured (no set matched the library): nothing to compare",
        )
    return AssetCheckResult(
        check_name=EXTERNAL_CHECK,
        passed=tuned >= 2 * pixels,
        severity=AssetCheckSeverity.WARN,
        description=f"drawings by other sets, R@10: fine-tuned model {tuned:.3f}, raw pixels {pixels:.3f} "
        f"({tuned / pixels if pixels else float('inf'):.2f}x; wanted 2x)",
        metadata={"finetuned_R@10": tuned, "raw_pixels_R@10": pixels},
    )


BENCHMARK_CHECK = "finetuned_beats_base_and_baselines"
REGRESSION_CHECK = "no_regression_since_previous"
# An absolute drop in a recall figure that counts as a regression (below it: query noise).
REGRESSION_TOLERANCE = 0.02


@asset(
    owners=OWNERS,
    tags=asset_tags("benchmark", "index"),
    group_name="benchmark",
    kinds={"json", "markdown"},
    deps=["search_fusion", "benchmark_queries", "external_benchmark"],
    check_specs=[
        AssetCheckSpec(
            BENCHMARK_CHECK,
            asset="benchmark_report",
            description="the fine-tuned model beats its base on every task, and the trivial baselines",
        ),
        AssetCheckSpec(
            REGRESSION_CHECK,
            asset="benchmark_report",
            description=f"no headline figure (R@1, R@10 per task and search) dropped by more than "
            f"{REGRESSION_TOLERANCE} since the previous materialization; the first one passes with a note",
        ),
    ],
)
def benchmark_report(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """The internal benchmark, generated from the project's own vocabulary (eval captions and
    paraphrases from its synonyms file, degraded copies of indexed icons): R@1/5/10/30 and mAP per
    task for hybrid search and each of its channels (exact beside HNSW), seen and held-out icons, BM25
    and raw-pixel baselines, paired significance tests. benchmark.md leads with the external
    benchmark's figures (queries nobody on the project wrote)."""
    config = load_config()
    queries_path = frozen_file(QUERIES_NAME, config)
    queries = resolved_rows(read_frozen_jsonl(queries_path))
    images = {row["icon_id"]: row["png_path"] for row in read_records(icon_images_path(), "icon images")}
    # Read before this materialization is stored: the latest one is the previous.
    previous = context.instance.get_latest_materialization_event(context.asset_key)
    with postgres.connect(autocommit=True) as conn, postgres.connections() as connections:
        channel_set = ChannelSet(conn, config.index.ef_search)
        search = channel_set.hybrid(names=[n for n in channel_set.available() if n != HYBRID])
        report = run_benchmark(queries, search, library_groups(), icon_images=images, connections=connections)
        names_report = run_name_queries(search, config.external.sets, connections)
        merge_into(report, names_report)
    out_dir = asset_path("reports")
    json_path = for_writing(asset_path("benchmark_json"))
    markdown_path = asset_path("benchmark_markdown")
    report.write_json(json_path)
    markdown = report.to_markdown()
    markdown_path.write_text(combined_markdown(markdown, asset_path("external_markdown")))
    plots = report.plots(out_dir)
    flat = pd.DataFrame(report.to_json()["rows"])
    headline = flat[flat["subset"] == "all"] if "subset" in flat else flat
    metadata: dict = {
        "queries": len(queries),
        "queries_file": queries_path.name,
        "library": library_id(config),
        "query_counts": MetadataValue.json(report.query_counts),
        "report": MetadataValue.md(markdown),
        "results": table(headline, max_rows=80),
        "comparisons": table(pd.DataFrame([c.as_dict() for c in report.comparisons])),
        "json": MetadataValue.path(str(json_path)),
        "markdown": MetadataValue.path(str(markdown_path)),
        "failures": len(report.failures),
        "warnings": MetadataValue.json(report.warnings),
    }
    # Numeric headline figures: the UI plots each across materializations.
    for row in report.headline():
        if row["model"] in (HYBRID, BM25_BASELINE, PIXEL_BASELINE, "finetuned", "base"):
            for metric in ("R@1", "R@10"):
                if row[metric] is not None and math.isfinite(row[metric]):
                    metadata[f"{row['model']}/{row['task']}/{metric}"] = round(
                        float(row[metric]), FLOAT_PLACES
                    )
    for plot in plots:
        metadata[f"plot_{plot.stem}"] = image_markdown(plot, plot.stem)
    context.log.info(f"benchmark written to {out_dir}: {json.dumps([p.name for p in plots])}")
    regression = _regression_check(previous, metadata)
    return MaterializeResult(metadata=metadata, check_results=[_finetuned_check(report), regression])


def _headline_figures(metadata: dict) -> dict[str, float]:
    """{"hybrid/text2img/R@10": 0.8, ...}: the numeric headline entries of a report's metadata."""
    figures = {}
    for key, value in metadata.items():
        value = getattr(value, "value", value)
        if key.count("/") == 2 and key.rsplit("/", 1)[1].startswith("R@") and isinstance(value, int | float):
            figures[key] = float(value)
    return figures


def _regression_check(previous, metadata: dict) -> AssetCheckResult:
    """WARN naming every headline figure that dropped beyond REGRESSION_TOLERANCE since the previous
    materialization (same frozen queries); the first materialization passes with a note."""
    current = _headline_figures(metadata)
    materialization = previous.asset_materialization if previous else None
    if materialization is None:
        return AssetCheckResult(
            check_name=REGRESSION_CHECK,
            passed=True,
            description="first materialization: nothing to compare with yet",
            metadata={"previous_run": "none"},
        )
    before = _headline_figures(dict(materialization.metadata))
    # Another library, or other frozen queries: the figures measure something else.
    for key, what in (("library", "was of another library"), ("queries_file", "used other queries")):
        old = materialization.metadata.get(key)
        if old is not None and str(old.value) != metadata[key]:
            return AssetCheckResult(
                check_name=REGRESSION_CHECK,
                passed=True,
                description=f"the previous report {what} ({old.value}, now {metadata[key]}): "
                "figures are not comparable",
                metadata={"previous_run": previous.run_id},
            )
    drops, compared = [], []
    for key in sorted(set(current) & set(before)):
        model, task, metric = key.split("/")
        change = current[key] - before[key]
        compared.append(
            {"task": task, "search": model, "metric": metric, "previous": before[key], "now": current[key]}
        )
        if change < -REGRESSION_TOLERANCE:
            drops.append(f"{task} {model} {metric} {before[key]:.3f} -> {current[key]:.3f}")
    return AssetCheckResult(
        check_name=REGRESSION_CHECK,
        passed=not drops,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"dropped since the previous materialization (tolerance {REGRESSION_TOLERANCE}): "
            + "; ".join(drops)
            if drops
            else f"no figure dropped by more than {REGRESSION_TOLERANCE} ({len(compared)} compared)"
        ),
        metadata={
            "previous_run": previous.run_id,
            "dropped": MetadataValue.json(drops),
            "compared": table(pd.DataFrame(compared)),
        },
    )


def _finetuned_check(report) -> AssetCheckResult:
    """WARN, in plain words, wherever the fine-tuned model does not beat its base or a baseline."""
    shortfalls, figures = [], {}
    for task in TASKS:
        try:
            tuned = report.row(task, "finetuned", "hnsw").recall[10]
        except KeyError:
            continue
        rivals = {"base": ("base", "hnsw")}
        rivals.update(
            {PIXEL_BASELINE: (PIXEL_BASELINE, "numpy")}
            if task == "img2img"
            else {BM25_BASELINE: (BM25_BASELINE, "lexical")}
        )
        for label, (model, mode) in rivals.items():
            try:
                other = report.row(task, model, mode).recall[10]
            except KeyError:
                continue
            figures[f"{task}: finetuned vs {label}"] = f"{tuned:.3f} vs {other:.3f}"
            if not tuned > other:
                shortfalls.append(
                    f"{task}: the fine-tuned model's R@10 {tuned:.3f} does not beat {label}'s {other:.3f}"
                )
    return AssetCheckResult(
        check_name=BENCHMARK_CHECK,
        passed=not shortfalls,
        severity=AssetCheckSeverity.WARN,
        description="; ".join(shortfalls)
        or "the fine-tuned model beats its base and the baselines on every task",
        metadata={"R@10 (HNSW)": MetadataValue.json(figures)},
    )
