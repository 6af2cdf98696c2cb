"""icon_catalog: every configured source scanned into one table, icons assigned to batches."""

import pandas as pd
from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from icon_pipeline.assets.metadata import table
from icon_pipeline.automation.partitions import icon_batches
from icon_pipeline.config import load_config
from icon_pipeline.library import SourceUnreadable, scan_library, update_catalog
from icon_pipeline.resources.figma import FigmaResource
from icon_pipeline.tables import (
    catalog_path,
    data_path,
    read_batch_history,
    read_catalog,
    restore_batch,
    retire_batch,
    write_batch_history,
    write_catalog,
    write_table,
)


@asset(group_name="icons", kinds={"parquet"})
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
    write_table(failure_frame, data_path("catalog", "failures.parquet"))
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
