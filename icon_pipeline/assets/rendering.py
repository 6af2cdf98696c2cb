"""rendered_icons: theme-correct 224 px PNGs per icon batch, content-addressed."""

from dataclasses import asdict

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AutomationCondition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from icon_pipeline.assets.catalog import icon_catalog
from icon_pipeline.assets.metadata import image_markdown, table
from icon_pipeline.automation.partitions import icon_batches
from icon_pipeline.config import load_config
from icon_pipeline.rendering import RenderSettings, RenderStore, preview_grid, render_batch
from icon_pipeline.tables import batch_table_path, data_path, read_catalog, render_root, write_table

FAILURE_RATE_CHECK = "render_failure_rate"


@asset(
    group_name="icons",
    kinds={"png", "parquet"},
    partitions_def=icon_batches,
    deps=[icon_catalog],
    check_specs=[AssetCheckSpec(FAILURE_RATE_CHECK, asset="rendered_icons")],
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
    settings = RenderSettings(
        size=config.size, theme=config.theme, max_svg_bytes=config.max_svg_bytes, timeout_s=config.timeout_s
    )
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
    names = {i.icon_id: f"{i.name} ({i.style})" if i.style else i.name for i in icons}
    sample = ok.head(60)
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
        grid = preview_grid(
            [p for p in sample["png_path"]], columns=10, labels=[names.get(i, i) for i in sample["icon_id"]]
        )
        preview_path = data_path("rendered", "previews", f"{batch}.png")
        grid.save(preview_path)
        metadata["preview"] = image_markdown(grid, f"batch {batch}")
        metadata["preview_path"] = MetadataValue.path(str(preview_path))

    rate = len(failed) / len(icons) if icons else 0.0
    check = AssetCheckResult(
        check_name=FAILURE_RATE_CHECK,
        passed=rate <= config.max_failure_rate,
        severity=AssetCheckSeverity.ERROR,
        metadata={"failure_rate": rate, "threshold": config.max_failure_rate, "failed": len(failed)},
        description=f"{len(failed)} of {len(icons)} icons failed to render",
    )
    return MaterializeResult(metadata=metadata, check_results=[check])
