"""Schedules: the nightly re-captioning of every icon batch."""

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from icon_pipeline.automation.partitions import icon_batches


@schedule(
    name="nightly_recaption",
    cron_schedule="0 2 * * *",
    target=AssetSelection.assets("icon_captions"),
    default_status=DefaultScheduleStatus.STOPPED,
)
def nightly_recaption(context: ScheduleEvaluationContext):
    """Re-caption every batch at 02:00. The caption cache makes this cheap: only icons whose
    content, lexicon entry, prompt version or model changed cost a model call."""
    batches = context.instance.get_dynamic_partitions(icon_batches.name)
    if not batches:
        return SkipReason("no icon batches registered yet")
    night = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [RunRequest(partition_key=batch, run_key=f"recaption-{night}-{batch}") for batch in batches]
