"""icon_lexicon: search terms mined from every icon's name and tags, with library statistics."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSelection,
    AutomationCondition,
    DefaultScheduleStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    asset,
    schedule,
)

from icon_pipeline.captions import CaptionCache, vision_count
from icon_pipeline.captions.batch import (
    CAPTION_CHECKS,
    CAPTION_COLUMNS,
    CheckOutcome,
    build_requests,
    caption_rows,
    summarise_batch,
)
from icon_pipeline.captions.overrides import OverrideStore
from icon_pipeline.core.config import load_config
from icon_pipeline.core.storage import (
    asset_path,
    batch_table_path,
    caption_cache_path,
    lexicon_path,
    read_batch_table,
    read_records,
    write_table,
)
from icon_pipeline.defs.metadata import FLOAT_PLACES, OWNERS, asset_tags, spread, table
from icon_pipeline.defs.partitions import icon_batches
from icon_pipeline.defs.resources.llm import CaptionerResource
from icon_pipeline.defs.resources.postgres import PostgresResource
from icon_pipeline.lexicon.mining import Lexicon, NameItem, mine_lexicon
from icon_pipeline.library.catalog import read_catalog


@asset(
    owners=OWNERS,
    tags=asset_tags("captions", "ingest"),
    group_name="captions",
    kinds={"parquet"},
    deps=["icon_catalog"],
    automation_condition=AutomationCondition.eager(),
)
def icon_lexicon(context: AssetExecutionContext) -> MaterializeResult:
    """Phrases and tokens per icon; boilerplate affixes found by statistics over the library."""
    icons = read_catalog()
    lexicon = mine_lexicon([NameItem.from_icon(icon) for icon in icons])
    records = lexicon.to_records()
    write_table(pd.DataFrame(records), lexicon_path())
    boilerplate = pd.DataFrame(
        sorted(lexicon.boilerplate.items(), key=lambda kv: -kv[1]), columns=["word", "share_of_names"]
    )
    write_table(boilerplate, asset_path("lexicon_boilerplate"))
    for key, reason in list(lexicon.failures.items())[:20]:
        context.log.warning(f"lexicon: {key}: {reason}")

    entries = list(lexicon.entries.values())
    useful = pd.Series([e.useful_token_count for e in entries], dtype="int64")
    min_text_tokens = load_config().captions.min_text_tokens
    to_vision = vision_count(useful.tolist(), min_text_tokens)
    dropped = pd.Series([reason for e in entries for _, reason in e.dropped], dtype="string")
    sample = pd.DataFrame(
        [
            {
                "name": e.name,
                "terms": ", ".join(e.terms),
                "tag_terms": ", ".join(e.tag_terms[:8]),
                "useful": e.useful_token_count,
                "dropped": ", ".join(f"{t} ({r})" for t, r in e.dropped[:4]),
            }
            for e in entries[:: max(1, len(entries) // 40)]
        ]
    )
    reasons = (
        dropped.str.replace(r" \(.*\)$", "", regex=True).value_counts().rename_axis("reason").reset_index()
    )
    return MaterializeResult(
        metadata={
            "icons": len(entries),
            "lexicon_version": lexicon.version(),
            "vocabulary_size": len(lexicon.vocabulary),
            "routed_to_vision_share": round(to_vision / len(entries), FLOAT_PLACES) if entries else 0.0,
            "min_text_tokens": min_text_tokens,
            "useful_tokens_histogram": table(
                useful.value_counts().sort_index().rename_axis("useful_tokens").reset_index(name="icons")
            ),
            "boilerplate": table(boilerplate, max_rows=30),
            "dropped_reasons": table(reasons),
            "sample": table(sample),
            "failures": len(lexicon.failures),
            "path": MetadataValue.path(str(lexicon_path())),
        }
    )


@asset(
    owners=OWNERS,
    tags=asset_tags("captions", "ingest"),
    group_name="captions",
    kinds={"parquet"},
    partitions_def=icon_batches,
    deps=["rendered_icons", icon_lexicon],
    check_specs=[
        AssetCheckSpec(name, asset="icon_captions", description=f"{about} (the batch is named in the result)")
        for name, about in CAPTION_CHECKS.items()
    ],
    automation_condition=AutomationCondition.eager(),
)
def icon_captions(
    context: AssetExecutionContext, captioner: CaptionerResource, postgres: PostgresResource
) -> MaterializeResult:
    """Search phrases (intent, not looks) per icon; only icons whose cache key changed cost a call.
    Human decisions from the caption review app win over generated phrases; rejected icons are
    flagged (`rejected`) so training leaves them out."""
    settings = load_config().captions
    batch = context.partition_key
    icons = {i.icon_id: i for i in read_catalog() if i.batch_key == batch}
    if not icons:
        raise Failure(
            description=f"batch {batch} has no icon in icon_catalog (its source is no longer configured, "
            "and icon_catalog retires it); nothing was written"
        )
    lexicon = Lexicon.from_records(read_records(lexicon_path(), "icon_lexicon"))
    renders = read_batch_table("rendered", batch)
    png_of = dict(zip(renders["icon_id"], renders["png_path"], strict=True))

    requests = build_requests(icons, lexicon, png_of)

    def progress(done: int, total: int) -> None:
        context.log.info(f"captioned {done}/{total} icons of batch {batch}")

    with CaptionCache(caption_cache_path()) as cache:
        results, stats = captioner.caption(settings, requests, cache, on_progress=progress)

    # An unreadable override table fails the run: silently ignoring reviewers' decisions is worse.
    overrides = OverrideStore(postgres.info().libpq_url).load_for(icons)
    merged, applied = caption_rows(results, icons, overrides)
    frame = pd.DataFrame(merged, columns=list(CAPTION_COLUMNS))
    write_table(frame, batch_table_path("captions", batch))
    for r in [r for r in results if r.error][:20]:
        context.log.warning(f"captions: {r.icon_id}: {r.error}")

    summary = summarise_batch(list(icons), requests, results, settings)
    captioned = frame[frame["error"] == ""]
    sample = captioned.iloc[spread(len(captioned), 25)].assign(phrases=lambda f: f["phrases"].map(", ".join))
    return MaterializeResult(
        metadata={
            "icons": summary.icons,
            "captioned": summary.captioned,
            # Names and tags that give fewer than 5 phrases: a VLM (captions.captioner: openai) does better.
            "few_phrases": summary.few_phrases,
            "failed": summary.failed,
            "captioner": settings.captioner,
            "cache_hits": stats.hits,
            "cache_misses": stats.misses,
            "model_calls": stats.calls,
            "routed_to_vision": summary.routed_to_vision,
            "min_text_tokens": settings.min_text_tokens,
            "overrides_applied": applied.total,
            "overrides_approved": applied.approved,
            "overrides_edited": applied.edited,
            "overrides_rejected": applied.rejected,
            "sample": table(sample[["name", "phrases", "route"]]),
            "failures": table(
                pd.DataFrame([(r.icon_id, r.error) for r in results if r.error], columns=["icon_id", "error"])
            ),
        },
        check_results=[_check_result(outcome, batch) for outcome in summary.checks],
    )


def _check_result(outcome: CheckOutcome, batch: str) -> AssetCheckResult:
    """The outcome as Dagster's check result, naming the batch it is about."""
    return AssetCheckResult(
        check_name=outcome.name,
        passed=outcome.passed,
        severity=AssetCheckSeverity.WARN if outcome.severity == "warn" else AssetCheckSeverity.ERROR,
        metadata={
            "batch": batch,
            **{
                key: MetadataValue.json(value) if isinstance(value, list) else value
                for key, value in outcome.metadata.items()
            },
        },
        description=f"batch {batch}: {outcome.description}",
    )


@schedule(
    name="nightly_recaption",
    cron_schedule="0 2 * * *",
    target=AssetSelection.assets("icon_captions"),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Re-caption every icon batch at 02:00; the caption cache makes it cheap (only icons whose "
    "content, lexicon entry, prompt version or model changed cost a model call).",
)
def nightly_recaption(context: ScheduleEvaluationContext):
    """Re-caption every batch at 02:00. The caption cache makes this cheap: only icons whose
    content, lexicon entry, prompt version or model changed cost a model call."""
    batches = context.instance.get_dynamic_partitions(icon_batches.name)
    if not batches:
        return SkipReason("no icon batches registered yet")
    night = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [RunRequest(partition_key=batch, run_key=f"recaption-{night}-{batch}") for batch in batches]
