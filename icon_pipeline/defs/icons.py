"""icon_catalog: every configured source scanned into one table, icons assigned to batches."""

import json
from dataclasses import asdict

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    sensor,
)

from icon_pipeline.core.config import FigmaSource, load_config, source_name
from icon_pipeline.core.storage import (
    asset_path,
    batch_table_path,
    catalog_path,
    for_writing,
    read_batch_history,
    render_root,
    restore_batch,
    retire_batch,
    write_batch_history,
    write_table,
)
from icon_pipeline.defs.metadata import FLOAT_PLACES, OWNERS, asset_tags, image_markdown, spread, table
from icon_pipeline.defs.partitions import icon_batches
from icon_pipeline.defs.resources.figma import FigmaResource
from icon_pipeline.library.batching import assign_batches
from icon_pipeline.library.catalog import read_catalog, write_catalog
from icon_pipeline.library.scanning import (
    SourceUnreadable,
    scan_library,
    scan_source,
    source_fingerprint,
    update_catalog,
)
from icon_pipeline.render.rasterize import RenderSettings, RenderStore, preview_grid, render_batch


@asset(
    group_name="icons",
    kinds={"parquet"},
    owners=OWNERS,
    tags=asset_tags("icons", "ingest"),
)
def icon_catalog(context: AssetExecutionContext, figma: FigmaResource) -> MaterializeResult:
    """One row per icon from every source in icon_pipeline.yaml, with its icon_batches key. A source
    that cannot be read fails it with the reason and changes nothing (or, with `on_failure: keep`,
    keeps its last good icons, marked stale); batches of sources no longer configured are retired."""
    config = load_config()
    scans = scan_library(config, figma_client=figma.client)
    previous = read_catalog() if catalog_path().exists() else []
    try:
        update = update_catalog(config, scans, previous, read_batch_history())
    except SourceUnreadable as exc:
        raise Failure(description=str(exc)) from None
    icons = update.icons

    # The registered partitions follow the catalog: new batches are added, batches no icon
    # belongs to any more (a removed source) are retired, their tables kept aside, never re-run.
    registered = set(context.instance.get_dynamic_partitions(icon_batches.name))
    current = {icon.batch_key for icon in icons}
    added, retired = sorted(current - registered), sorted(registered - current)
    for key in added:
        restore_batch(key)  # a source configured again comes back with its old batch keys
    if added:
        context.instance.add_dynamic_partitions(icon_batches.name, added)
        context.log.info(f"registered {len(added)} icon batch(es): {', '.join(added)}")
    for key in retired:
        retire_batch(key)
        context.instance.delete_dynamic_partition(icon_batches.name, key)
    if retired:
        context.log.info(f"retired {len(retired)} batch(es) no configured source has: {', '.join(retired)}")

    write_batch_history(update.history)
    write_catalog(icons)
    failure_frame = pd.DataFrame([f.__dict__ for f in update.failures], columns=["source", "item", "reason"])
    write_table(failure_frame, asset_path("catalog_failures"))
    for failure in update.failures[:20]:
        context.log.warning(f"{failure.source}: {failure.item}: {failure.reason}")
    for source, why in update.stale.items():
        context.log.warning(f"{source} could not be read: {why}")

    frame = pd.DataFrame([i.to_row() for i in icons])
    counts = (
        frame.groupby(["source", "style"]).size().reset_index(name="icons")
        if len(frame)
        else pd.DataFrame(columns=["source", "style", "icons"])
    )
    batches = frame.groupby("batch_key").size().reset_index(name="icons") if len(frame) else counts
    return MaterializeResult(
        metadata={
            "icons": len(icons),
            "icons_before": len(previous),
            "failures": len(update.failures),
            "new_batches": MetadataValue.json(update.new_batches),
            "retired_batches": MetadataValue.json(retired),
            "stale_sources": MetadataValue.json(update.stale),
            "source_versions": MetadataValue.json({s.source: s.version for s in scans}),
            "counts_per_source_and_style": table(counts),
            "icons_per_batch": table(batches),
            "failure_reasons": table(failure_frame),
            "path": MetadataValue.path(str(catalog_path())),
        }
    )


FAILURE_RATE_CHECK = "render_failure_rate"
PREVIEW_ICONS = 60


@asset(
    owners=OWNERS,
    tags=asset_tags("icons", "ingest"),
    group_name="icons",
    kinds={"png", "parquet"},
    partitions_def=icon_batches,
    deps=[icon_catalog],
    check_specs=[
        AssetCheckSpec(
            FAILURE_RATE_CHECK,
            asset="rendered_icons",
            description="the share of a batch's icons that failed to render is at most "
            "render.max_failure_rate (the batch is named in the result)",
        )
    ],
    automation_condition=AutomationCondition.eager(),
)
def rendered_icons(context: AssetExecutionContext) -> MaterializeResult:
    """224x224 RGB PNGs on the theme background; unchanged icons are never rendered twice."""
    config = load_config().render
    batch = context.partition_key
    icons = [i for i in read_catalog() if i.batch_key == batch]
    if not icons:
        # Never overwrite a batch's table with an empty one: the batch belongs to no configured source.
        raise Failure(
            description=f"batch {batch} has no icon in icon_catalog (its source is no longer configured, "
            "and icon_catalog retires it); nothing was written"
        )
    settings = RenderSettings.from_config(config)
    last_logged = [0]

    def progress(done: int, total: int) -> None:
        # Dagster logs every ~10%: the event log is not a terminal progress bar.
        if total and (done == total or done - last_logged[0] >= max(1, total // 10)):
            last_logged[0] = done
            context.log.info(f"rendered {done}/{total} icons of batch {batch}")

    result = render_batch(
        icons, settings, RenderStore(render_root()), workers=config.workers, progress=progress
    )
    frame = pd.DataFrame(
        [asdict(o) for o in result.outcomes], columns=["icon_id", "status", "png_path", "reason"]
    )
    write_table(frame, batch_table_path("rendered", batch))

    ok = frame[frame["status"] != "failed"] if len(frame) else frame
    failed = frame[frame["status"] == "failed"] if len(frame) else frame
    # Readable names under the thumbnails (a batch is one source and style, so the name alone),
    # for a sample spread over the whole batch rather than its first rows.
    names = {i.icon_id: i.name for i in icons}
    sample = ok.iloc[spread(len(ok), PREVIEW_ICONS)] if len(ok) else ok
    metadata: dict = {
        "icons": len(icons),
        "rendered": int((frame["status"] == "rendered").sum()) if len(frame) else 0,
        "cached": int((frame["status"] == "cached").sum()) if len(frame) else 0,
        "failed": len(failed),
        "settings_key": settings.key(),
        "theme": settings.theme,
        "failures": table(
            failed[["icon_id", "reason"]] if len(failed) else pd.DataFrame(columns=["icon_id"])
        ),
    }
    if len(sample):
        metadata.update(_preview(sample, names, batch, len(ok)))
    check = _failure_rate_check(batch, len(failed), len(icons), config.max_failure_rate)
    return MaterializeResult(metadata=metadata, check_results=[check])


def _preview(sample: pd.DataFrame, names: dict[str, str], batch: str, rendered: int) -> dict:
    """A contact sheet of the sample, named under each thumbnail, saved beside the batch's table."""
    grid = preview_grid(
        [p for p in sample["png_path"]],
        columns=10,
        cell=96,
        labels=[names.get(i, i) for i in sample["icon_id"]],
    )
    preview_path = asset_path("render_preview", batch=batch)
    grid.save(for_writing(preview_path))
    return {
        "preview": image_markdown(grid, f"batch {batch}: {len(sample)} of {rendered} icons"),
        "preview_icons": len(sample),
        "preview_path": MetadataValue.path(str(preview_path)),
    }


def _failure_rate_check(batch: str, failed: int, icons: int, threshold: float) -> AssetCheckResult:
    rate = failed / icons if icons else 0.0
    return AssetCheckResult(
        check_name=FAILURE_RATE_CHECK,
        passed=rate <= threshold,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "batch": batch,
            "failure_rate": round(rate, FLOAT_PLACES),
            "threshold": threshold,
            "failed": failed,
        },
        description=f"batch {batch}: {failed} of {icons} icons failed to render (threshold {threshold:.0%})",
    )


@sensor(
    name="icon_source_sensor",
    asset_selection=AssetSelection.assets("icon_catalog"),
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
    description="Every 5 minutes: when an icon source changed (new Figma file version, new files in a "
    "folder, new Tabler version), registers its new icon batches and runs icon_catalog.",
)
def icon_source_sensor(context: SensorEvaluationContext, figma: FigmaResource) -> SensorResult | SkipReason:
    """New Figma file version, new files in a folder, new Tabler version: register new batches.

    Cheap fingerprints decide whether anything changed; only changed local/Tabler sources are
    scanned here (Figma is scanned by icon_catalog, which registers its batches itself).
    """
    config = load_config()
    previous: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = {source_name(s): source_fingerprint(s, figma.client) for s in config.sources}
    changed = [s for s in config.sources if previous.get(source_name(s)) != current[source_name(s)]]
    if not changed:
        return SkipReason("no icon source changed")

    existing = read_batch_history()  # every key ever given: a source added back keeps its old keys
    if catalog_path().exists():
        existing.update({i.icon_id: i.batch_key for i in read_catalog()})
    registered = set(context.instance.get_dynamic_partitions(icon_batches.name))
    new_keys: set[str] = set()
    for source in changed:
        if isinstance(source, FigmaSource):
            continue
        scan = scan_source(source, max_svg_bytes=config.render.max_svg_bytes)
        assigned, _ = assign_batches(scan.icons, existing, config.batching.icons_per_batch)
        new_keys |= {i.batch_key for i in assigned} - registered
    names = ", ".join(source_name(s) for s in changed)
    context.log.info(f"changed source(s): {names}; new batches: {sorted(new_keys) or 'none'}")
    return SensorResult(
        run_requests=[RunRequest(run_key=json.dumps(current, sort_keys=True))],
        dynamic_partitions_requests=[icon_batches.build_add_request(sorted(new_keys))] if new_keys else [],
        cursor=json.dumps(current, sort_keys=True),
    )


# Per-batch assets carry AutomationCondition.eager(): this sensor evaluates those conditions, so
# batches registered above (or by icon_catalog) get rendered and captioned without a click.
icon_automation_sensor = AutomationConditionSensorDefinition(
    "icon_automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.STOPPED,
    description="Evaluates the eager automation conditions of the per-batch assets (and the lexicon "
    "and caption embeddings): batches registered by icon_source_sensor or icon_catalog are rendered "
    "and captioned without a click.",
)
