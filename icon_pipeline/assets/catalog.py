"""icon_catalog: every configured source scanned into one table, icons assigned to batches."""

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from icon_pipeline.assets.metadata import table
from icon_pipeline.automation.partitions import icon_batches
from icon_pipeline.batching import assign_batches
from icon_pipeline.config import load_config
from icon_pipeline.library import batch_group, scan_library
from icon_pipeline.resources.figma import FigmaResource
from icon_pipeline.tables import catalog_path, data_path, read_catalog, write_catalog, write_table


@asset(group_name="icons", kinds={"parquet"})
def icon_catalog(context: AssetExecutionContext, figma: FigmaResource) -> MaterializeResult:
    """One row per icon from every source in icon_pipeline.yaml, with its icon_batches key."""
    config = load_config()
    scans = scan_library(config, figma_client=figma.client)
    icons = [icon for scan in scans for icon in scan.icons]
    failures = [f for scan in scans for f in scan.failures]

    existing = {i.icon_id: i.batch_key for i in read_catalog()} if catalog_path().exists() else {}
    icons, new_batches = assign_batches(
        icons, existing, config.batching.icons_per_batch, group_key=batch_group
    )
    registered = set(context.instance.get_dynamic_partitions(icon_batches.name))
    to_register = sorted({i.batch_key for i in icons} - registered)
    if to_register:
        context.instance.add_dynamic_partitions(icon_batches.name, to_register)
        context.log.info(f"registered {len(to_register)} new icon batch(es): {', '.join(to_register)}")

    write_catalog(icons)
    failure_frame = pd.DataFrame([f.__dict__ for f in failures], columns=["source", "item", "reason"])
    write_table(failure_frame, data_path("catalog", "failures.parquet"))
    for failure in failures[:20]:
        context.log.warning(f"{failure.source}: {failure.item}: {failure.reason}")

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
            "failures": len(failures),
            "new_batches": MetadataValue.json(new_batches),
            "source_versions": MetadataValue.json({s.source: s.version for s in scans}),
            "counts_per_source_and_style": table(counts),
            "icons_per_batch": table(batches),
            "failure_reasons": table(failure_frame),
            "path": MetadataValue.path(str(catalog_path())),
        }
    )
