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

from icon_pipeline.captions import (
    MIN_PHRASES,
    CaptionCache,
    CaptionRequest,
    banned_in,
    choose_route,
    validate_phrases,
)
from icon_pipeline.captions.overrides import OverrideStore, apply_overrides
from icon_pipeline.captions.validation import MIN_OFFLINE_PHRASES
from icon_pipeline.core.config import load_config
from icon_pipeline.core.storage import (
    batch_table_path,
    caption_cache_path,
    data_path,
    lexicon_path,
    read_batch_table,
    read_catalog,
    read_records,
    write_table,
)
from icon_pipeline.defs.icons import icon_catalog, rendered_icons
from icon_pipeline.defs.metadata import FLOAT_PLACES, OWNERS, asset_tags, spread, table
from icon_pipeline.defs.partitions import icon_batches
from icon_pipeline.defs.resources.llm import CaptionerResource
from icon_pipeline.defs.resources.postgres import PostgresResource
from icon_pipeline.lexicon.mining import TEXT_LLM_MIN_USEFUL_TOKENS, Lexicon, NameItem, mine_lexicon


@asset(
    owners=OWNERS,
    tags=asset_tags("captions", "ingest"),
    group_name="captions",
    kinds={"parquet"},
    deps=[icon_catalog],
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
    write_table(boilerplate, data_path("lexicon", "boilerplate.parquet"))
    for key, reason in list(lexicon.failures.items())[:20]:
        context.log.warning(f"lexicon: {key}: {reason}")

    entries = list(lexicon.entries.values())
    useful = pd.Series([e.useful_token_count for e in entries], dtype="int64")
    to_vision = int((useful < TEXT_LLM_MIN_USEFUL_TOKENS).sum())
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


CHECKS = {
    "phrase_rules": "5-8 phrases per icon (offline: 1-8), 1-4 words each, no duplicates",
    "no_banned_words": "no visual descriptions (icon, shape, colours, 'arrow pointing')",
    "coverage": "every icon of the batch has captions or a recorded failure",
    "vision_route_share": "the share of icons whose names are too weak for the text LLM stays under "
    "captions.max_vision_share",
    "caption_failure_rate": "the share of icons the captioner failed on stays under "
    "captions.max_failure_rate",
}


@asset(
    owners=OWNERS,
    tags=asset_tags("captions", "ingest"),
    group_name="captions",
    kinds={"parquet"},
    partitions_def=icon_batches,
    deps=[rendered_icons, icon_lexicon],
    check_specs=[
        AssetCheckSpec(name, asset="icon_captions", description=f"{about} (the batch is named in the result)")
        for name, about in CHECKS.items()
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

    requests = []
    for icon_id, icon in sorted(icons.items()):
        entry = lexicon.entries.get(icon_id)
        requests.append(
            CaptionRequest(
                icon_id=icon_id,
                name=icon.name,
                terms=list(entry.terms) if entry else [icon.name],
                tags=list(entry.tag_terms) if entry else list(icon.tags),
                category=icon.category,
                useful_token_count=entry.useful_token_count if entry else 0,
                image_path=png_of.get(icon_id) or None,
                content_hash=icon.content_hash,
            )
        )

    def progress(done: int, total: int) -> None:
        context.log.info(f"captioned {done}/{total} icons of batch {batch}")

    with CaptionCache(caption_cache_path()) as cache:
        results, stats = captioner.caption(settings, requests, cache, on_progress=progress)

    generated = [
        {
            "icon_id": r.icon_id,
            "name": icons[r.icon_id].name,
            "phrases": list(r.phrases),
            "route": r.route,
            "model": r.model,
            "error": r.error or "",
        }
        for r in results
    ]
    # An unreadable override table fails the run: silently ignoring reviewers' decisions is worse.
    overrides = OverrideStore(postgres.info().libpq_url).load_for(icons)
    merged, applied = apply_overrides(generated, overrides)
    frame = pd.DataFrame(
        merged,
        columns=[
            "icon_id",
            "name",
            "phrases",
            "route",
            "model",
            "error",
            "generated_phrases",
            "override",
            "override_author",
            "override_revision",
            "rejected",
        ],
    )
    write_table(frame, batch_table_path("captions", batch))
    for r in [r for r in results if r.error][:20]:
        context.log.warning(f"captions: {r.icon_id}: {r.error}")

    ok = [r for r in results if not r.error]
    failed = [r for r in results if r.error]
    rule_breaks = [
        (r.icon_id, "; ".join(problems))
        for r in ok
        if (
            problems := validate_phrases(
                r.phrases, MIN_OFFLINE_PHRASES if r.route == "offline" else MIN_PHRASES
            )
        )
    ]
    banned = [(r.icon_id, p) for r in ok for p in r.phrases if banned_in(p)]
    uncovered = sorted(set(icons) - {r.icon_id for r in results})
    vision = sum(choose_route(q, settings.min_text_tokens) == "vision" for q in requests)
    vision_share = vision / len(requests) if requests else 0.0
    failure_rate = len(failed) / len(requests) if requests else 0.0
    checks = [
        AssetCheckResult(
            check_name="phrase_rules",
            passed=not rule_breaks,
            metadata={
                "batch": batch,
                "icons_breaking_rules": len(rule_breaks),
                "examples": MetadataValue.json(rule_breaks[:10]),
            },
            description=f"batch {batch}: {len(rule_breaks)} of {len(ok)} icons break the phrase rules "
            "(5-8 phrases, offline 1-8; 1-4 words; no duplicates)",
        ),
        AssetCheckResult(
            check_name="no_banned_words",
            passed=not banned,
            metadata={
                "batch": batch,
                "phrases_with_banned_words": len(banned),
                "examples": MetadataValue.json(banned[:10]),
            },
            description=f"batch {batch}: {len(banned)} phrase(s) describe looks "
            "(icon, shape, colours, 'arrow pointing')",
        ),
        AssetCheckResult(
            check_name="coverage",
            passed=not uncovered,
            metadata={"batch": batch, "icons": len(icons), "without_captions_or_failure": len(uncovered)},
            description=f"batch {batch}: {len(uncovered)} of {len(icons)} icons have neither captions nor a "
            "recorded failure",
        ),
        AssetCheckResult(
            check_name="vision_route_share",
            passed=vision_share <= settings.max_vision_share,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "batch": batch,
                "share": round(vision_share, FLOAT_PLACES),
                "threshold": settings.max_vision_share,
            },
            description=f"batch {batch}: {vision_share:.1%} of icons have names too weak for the text LLM "
            f"(threshold {settings.max_vision_share:.0%})",
        ),
        AssetCheckResult(
            check_name="caption_failure_rate",
            passed=failure_rate <= settings.max_failure_rate,
            metadata={
                "batch": batch,
                "failure_rate": round(failure_rate, FLOAT_PLACES),
                "threshold": settings.max_failure_rate,
            },
            description=f"batch {batch}: the captioner failed on {len(failed)} of {len(requests)} icons "
            f"(threshold {settings.max_failure_rate:.0%})",
        ),
    ]
    captioned = frame[frame["error"] == ""]
    sample = captioned.iloc[spread(len(captioned), 25)].assign(phrases=lambda f: f["phrases"].map(", ".join))
    return MaterializeResult(
        metadata={
            "icons": len(requests),
            "captioned": len(ok),
            # Names and tags that give fewer than 5 phrases: a VLM (captions.captioner: openai) does better.
            "few_phrases": sum(1 for r in ok if len(r.phrases) < MIN_PHRASES),
            "failed": len(failed),
            "captioner": settings.captioner,
            "cache_hits": stats.hits,
            "cache_misses": stats.misses,
            "model_calls": stats.calls,
            "routed_to_vision": vision,
            "overrides_applied": applied.total,
            "overrides_approved": applied.approved,
            "overrides_edited": applied.edited,
            "overrides_rejected": applied.rejected,
            "sample": table(sample[["name", "phrases", "route"]]),
            "failures": table(
                pd.DataFrame([(r.icon_id, r.error) for r in failed], columns=["icon_id", "error"])
            ),
        },
        check_results=checks,
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
