"""Sensors: notice that an icon source changed and register the new icon batches."""

import json

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from icon_pipeline.automation.partitions import icon_batches
from icon_pipeline.batching import assign_batches
from icon_pipeline.config import FigmaSource, load_config, source_name
from icon_pipeline.library import batch_group, scan_source, source_fingerprint
from icon_pipeline.resources.figma import FigmaResource
from icon_pipeline.tables import catalog_path, read_batch_history, read_catalog


@sensor(
    name="icon_source_sensor",
    asset_selection=AssetSelection.assets("icon_catalog"),
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
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
        assigned, _ = assign_batches(
            scan.icons, existing, config.batching.icons_per_batch, group_key=batch_group
        )
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
)
