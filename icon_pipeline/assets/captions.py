"""icon_captions: 5-8 search phrases per icon and batch, through a content-keyed cache."""

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

from icon_pipeline.assets.lexicon import icon_lexicon
from icon_pipeline.assets.metadata import table
from icon_pipeline.assets.rendering import rendered_icons
from icon_pipeline.automation.partitions import icon_batches
from icon_pipeline.captions import (
    MIN_PHRASES,
    CaptionCache,
    CaptionRequest,
    banned_in,
    choose_route,
    validate_phrases,
)
from icon_pipeline.captions.validation import MIN_OFFLINE_PHRASES
from icon_pipeline.config import load_config
from icon_pipeline.lexicon import Lexicon
from icon_pipeline.overrides import OverrideStore, apply_overrides
from icon_pipeline.resources.llm import CaptionerResource
from icon_pipeline.resources.postgres import PostgresResource
from icon_pipeline.tables import (
    batch_table_path,
    caption_cache_path,
    lexicon_path,
    read_batch_table,
    read_catalog,
    read_records,
    write_table,
)

CHECKS = ("phrase_rules", "no_banned_words", "coverage", "vision_route_share", "caption_failure_rate")


@asset(
    group_name="captions",
    kinds={"parquet"},
    partitions_def=icon_batches,
    deps=[rendered_icons, icon_lexicon],
    check_specs=[AssetCheckSpec(name, asset="icon_captions") for name in CHECKS],
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
                "icons_breaking_rules": len(rule_breaks),
                "examples": MetadataValue.json(rule_breaks[:10]),
            },
            description="5-8 phrases (offline: 1-8, a bare name says little), 1-4 words, no duplicates",
        ),
        AssetCheckResult(
            check_name="no_banned_words",
            passed=not banned,
            metadata={"phrases_with_banned_words": len(banned), "examples": MetadataValue.json(banned[:10])},
            description="no visual descriptions (icon, shape, colours, 'arrow pointing')",
        ),
        AssetCheckResult(
            check_name="coverage",
            passed=not uncovered,
            metadata={"icons": len(icons), "without_captions_or_failure": len(uncovered)},
            description="every icon has captions or a recorded failure",
        ),
        AssetCheckResult(
            check_name="vision_route_share",
            passed=vision_share <= settings.max_vision_share,
            severity=AssetCheckSeverity.WARN,
            metadata={"share": round(vision_share, 4), "threshold": settings.max_vision_share},
            description="share of icons whose names are too weak for the text LLM",
        ),
        AssetCheckResult(
            check_name="caption_failure_rate",
            passed=failure_rate <= settings.max_failure_rate,
            metadata={"failure_rate": round(failure_rate, 4), "threshold": settings.max_failure_rate},
        ),
    ]
    sample = frame[frame["error"] == ""].head(25).assign(phrases=lambda f: f["phrases"].map(", ".join))
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
