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

from icon_pipeline.benchmark.checks import (
    FUSION_TOLERANCE,
    REGRESSION_TOLERANCE,
    fine_tuning_shortfalls,
    fusion_shortfalls,
    headline_figures,
    regression_drops,
)
from icon_pipeline.benchmark.external_report import EXTERNAL_COLUMNS, ExternalReport, combined_markdown
from icon_pipeline.benchmark.external_report import READING_NOTES as EXTERNAL_NOTES
from icon_pipeline.benchmark.external_run import run_external_benchmark
from icon_pipeline.benchmark.names import merge_into, run_name_queries
from icon_pipeline.benchmark.report import (
    COMPARISON_COLUMNS,
    PIXEL_BASELINE,
    READING_NOTES,
    RESULT_COLUMNS,
    SEEN_HELDOUT_COLUMNS,
    run_benchmark,
)
from icon_pipeline.core.config import library_id, load_config
from icon_pipeline.core.frozen import read_frozen_jsonl
from icon_pipeline.core.storage import (
    QUERIES_NAME,
    asset_path,
    for_writing,
    frozen_file,
    icon_images_path,
    read_records,
    resolved_rows,
)
from icon_pipeline.dataset.grouping import library_groups
from icon_pipeline.defs.metadata import FLOAT_PLACES, OWNERS, asset_tags, image_markdown, table
from icon_pipeline.defs.resources.postgres import PostgresResource
from icon_pipeline.search.channels import FINETUNED_MODEL, HYBRID
from icon_pipeline.search.service import ChannelSet

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
    with postgres.connect(autocommit=True) as conn, postgres.connections() as connections:
        channel_set = ChannelSet(conn, config.index.ef_search)
        search = channel_set.hybrid(names=[n for n in channel_set.available() if n != HYBRID])
        report = run_external_benchmark(config, search, connections, context.log.info, context.log.warning)
    json_path = for_writing(asset_path("external_json"))
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    markdown = report.to_markdown()
    asset_path("external_markdown").write_text(markdown)
    metadata: dict = {
        "report": MetadataValue.md(markdown),
        "sets": table(pd.DataFrame(report.set_rows())),
        "how_to_read": MetadataValue.md("\n".join(f"- {note}" for note in EXTERNAL_NOTES)),
        **{
            f"results/{task}": table(pd.DataFrame(report.task_table(task)), descriptions=EXTERNAL_COLUMNS)
            for task in report.tasks
            if report.task_table(task)
        },
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
        report.figure("pooled", "drawings", FINETUNED_MODEL, "R@10"),
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
        f"({tuned / pixels if pixels else float('inf'):.2f}x; wanted 2x)"
        + (
            ""
            if tuned >= 2 * pixels
            else ". The model matches pixels more than concepts: train it on more open icon sets "
            "(corpus.sets) or for longer (training.max_steps), re-materialize finetuned_checkpoint, "
            "then icon_embeddings and this benchmark"
        ),
        metadata={"finetuned_R@10": tuned, "raw_pixels_R@10": pixels},
    )


FUSION_CHECK = "hybrid_search_keeps_up_with_its_best_channel"
FINE_TUNING_CHECK = "fine_tuning_improves_on_the_base_model"
REGRESSION_CHECK = "no_regression_since_previous"


@asset(
    owners=OWNERS,
    tags=asset_tags("benchmark", "index"),
    group_name="benchmark",
    kinds={"json", "markdown"},
    deps=["search_fusion", "benchmark_queries", "external_benchmark"],
    check_specs=[
        AssetCheckSpec(
            FUSION_CHECK,
            asset="benchmark_report",
            description=f"on every task, hybrid search (what designers get) is within {FUSION_TOLERANCE} "
            "R@10 of its best single channel; when it is not, the fusion weights no longer fit the index: "
            "re-materialize search_fusion (and then this report)",
        ),
        AssetCheckSpec(
            FINE_TUNING_CHECK,
            asset="benchmark_report",
            description="on every task, the fine-tuned model finds more than the model it started from "
            "(R@10, HNSW); when it does not, training did not help: look at finetuned_checkpoint's loss "
            "plot, then train longer (training.max_steps) or on more pairs (corpus.sets) and re-materialize "
            "finetuned_checkpoint",
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
    metadata: dict = {
        "queries": len(queries),
        "queries_file": queries_path.name,
        "library": library_id(config),
        "query_counts": MetadataValue.json(report.query_counts),
        "report": MetadataValue.md(markdown),
        **benchmark_tables(report),
        "json": MetadataValue.path(str(json_path)),
        "markdown": MetadataValue.path(str(markdown_path)),
        "failures": len(report.failures),
        "warnings": MetadataValue.json(report.warnings),
    }
    metadata.update(headline_figures(report, FLOAT_PLACES))
    for plot in plots:
        metadata[f"plot_{plot.stem}"] = image_markdown(plot, plot.stem)
    context.log.info(f"benchmark written to {out_dir}: {json.dumps([p.name for p in plots])}")
    regression = _regression_check(previous, metadata)
    return MaterializeResult(
        metadata=metadata, check_results=[_fusion_check(report), _fine_tuning_check(report), regression]
    )


def benchmark_tables(report) -> dict[str, MetadataValue]:
    """What the analyst reads in Dagster: how to read the figures, then per task a narrow results
    table and seen vs held-out, and the paired comparisons (each table fits the metadata column)."""
    tables: dict[str, MetadataValue] = {
        "how_to_read": MetadataValue.md("\n".join(f"- {note}" for note in READING_NOTES))
    }
    for task in report.tasks:
        if report.task_table(task):
            tables[f"results/{task}"] = table(
                pd.DataFrame(report.task_table(task)), descriptions=RESULT_COLUMNS
            )
            tables[f"seen_vs_heldout/{task}"] = table(
                pd.DataFrame(report.seen_heldout_table(task)), descriptions=SEEN_HELDOUT_COLUMNS
            )
    tables["subset_queries"] = MetadataValue.json(
        {task: report.subset_counts(task) for task in report.tasks if report.subset_counts(task)}
    )
    for task in report.tasks:
        comparisons = [
            {
                "search": c.model,
                "vs": c.baseline,
                "gain": f"{c.recall_at_10 - c.baseline_recall_at_10:+.3f}",
                "p": f"{c.p_value:.4f}",
            }
            for c in report.comparisons
            if c.task == task
        ]
        if comparisons:
            tables[f"comparisons/{task}"] = table(pd.DataFrame(comparisons), descriptions=COMPARISON_COLUMNS)
    return tables


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
    drops, compared = regression_drops(before, current)
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


def _fusion_check(report) -> AssetCheckResult:
    """WARN naming each task where hybrid search trails one of its own channels, and what to do."""
    shortfalls, figures = fusion_shortfalls(report)
    description = (
        "; ".join(shortfalls) + ". The fusion weights no longer fit the index: re-materialize search_fusion, "
        "then benchmark_report"
        if shortfalls
        else f"hybrid search is within {FUSION_TOLERANCE} R@10 of its best channel on every task"
    )
    return AssetCheckResult(
        check_name=FUSION_CHECK,
        passed=not shortfalls,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={"R@10 (HNSW)": MetadataValue.json(figures)},
    )


def _fine_tuning_check(report) -> AssetCheckResult:
    """WARN naming each task where the fine-tuned model does not beat its base, and what to do."""
    shortfalls, figures = fine_tuning_shortfalls(report)
    description = (
        "; ".join(shortfalls) + ". Training did not help: look at finetuned_checkpoint's loss plot, then "
        "train longer (training.max_steps) or on more pairs (corpus.sets) and re-materialize "
        "finetuned_checkpoint"
        if shortfalls
        else "the fine-tuned model beats its base on every task"
        if figures
        else "no task measured both models: nothing to compare"
    )
    return AssetCheckResult(
        check_name=FINE_TUNING_CHECK,
        passed=not shortfalls,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={"R@10 (HNSW)": MetadataValue.json(figures)},
    )
