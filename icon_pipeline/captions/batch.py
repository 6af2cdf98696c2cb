"""One batch of icons through the captioner: the requests built from the catalog and the lexicon,
and the quality checks computed on the results. Plain data in and out; the icon_captions asset
only fetches inputs, calls these and turns the outcome into Dagster metadata and check results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from icon_pipeline.captions.base import CaptionRequest, CaptionResult
from icon_pipeline.captions.overrides import AppliedCounts, CaptionOverride, apply_overrides
from icon_pipeline.captions.routing import vision_count
from icon_pipeline.captions.validation import MIN_OFFLINE_PHRASES, MIN_PHRASES, banned_in, validate_phrases
from icon_pipeline.core.config import CaptionsConfig
from icon_pipeline.lexicon.mining import Lexicon
from icon_pipeline.library.records import IconRecord

EXAMPLES = 10  # offending icons listed per check

# The checks every captioned batch gets, and what each one holds to.
CAPTION_CHECKS = {
    "phrase_rules": "5-8 phrases per icon (offline: 1-8, a bare name says little), 1-4 words each, "
    "no duplicates",
    "no_banned_words": "no visual descriptions (icon, shape, colours, 'arrow pointing')",
    "coverage": "every icon of the batch has captions or a recorded failure",
    "vision_route_share": "the share of icons whose names are too weak for the text LLM stays under "
    "captions.max_vision_share",
    "caption_failure_rate": "the share of icons the captioner failed on stays under "
    "captions.max_failure_rate",
}


def build_requests(
    icons: Mapping[str, IconRecord], lexicon: Lexicon, png_paths: Mapping[str, str]
) -> list[CaptionRequest]:
    """One request per icon, by icon id. An icon the lexicon has no entry for is captioned from
    its bare name and tags, and counts as having no useful token (the VLM route)."""
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
                image_path=png_paths.get(icon_id) or None,
                content_hash=icon.content_hash,
            )
        )
    return requests


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check's verdict; `metadata` holds plain values (lists of examples included)."""

    name: str
    passed: bool
    description: str = ""
    severity: Literal["error", "warn"] = "error"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchSummary:
    """What one captioned batch amounts to: counts for the metadata and the checks' outcomes."""

    icons: int
    captioned: int
    failed: int
    few_phrases: int  # fewer than MIN_PHRASES phrases: a VLM (captions.captioner: openai) does better
    routed_to_vision: int
    checks: list[CheckOutcome]


def summarise_batch(
    icon_ids: Sequence[str],
    requests: Sequence[CaptionRequest],
    results: Sequence[CaptionResult],
    settings: CaptionsConfig,
) -> BatchSummary:
    """The phrase rules, banned words, coverage, VLM share and failure rate of one batch."""
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
    uncovered = sorted(set(icon_ids) - {r.icon_id for r in results})
    vision = vision_count((q.useful_token_count for q in requests), settings.min_text_tokens)
    vision_share = vision / len(requests) if requests else 0.0
    failure_rate = len(failed) / len(requests) if requests else 0.0
    checks = [
        CheckOutcome(
            "phrase_rules",
            passed=not rule_breaks,
            metadata={"icons_breaking_rules": len(rule_breaks), "examples": rule_breaks[:EXAMPLES]},
            description=f"{len(rule_breaks)} of {len(ok)} icons break the phrase rules (5-8 phrases, "
            "offline 1-8; 1-4 words; no duplicates)",
        ),
        CheckOutcome(
            "no_banned_words",
            passed=not banned,
            metadata={"phrases_with_banned_words": len(banned), "examples": banned[:EXAMPLES]},
            description=f"{len(banned)} phrase(s) describe looks (icon, shape, colours, 'arrow pointing')",
        ),
        CheckOutcome(
            "coverage",
            passed=not uncovered,
            metadata={"icons": len(icon_ids), "without_captions_or_failure": len(uncovered)},
            description=f"{len(uncovered)} of {len(icon_ids)} icons have neither captions nor a recorded "
            "failure",
        ),
        CheckOutcome(
            "vision_route_share",
            passed=vision_share <= settings.max_vision_share,
            severity="warn",
            metadata={
                "share": round(vision_share, 3),
                "threshold": settings.max_vision_share,
                "min_text_tokens": settings.min_text_tokens,
            },
            description=f"{vision_share:.1%} of icons have names too weak for the text LLM (threshold "
            f"{settings.max_vision_share:.0%}, captions.min_text_tokens {settings.min_text_tokens})",
        ),
        CheckOutcome(
            "caption_failure_rate",
            passed=failure_rate <= settings.max_failure_rate,
            metadata={"failure_rate": round(failure_rate, 3), "threshold": settings.max_failure_rate},
            description=f"the captioner failed on {len(failed)} of {len(requests)} icons (threshold "
            f"{settings.max_failure_rate:.0%})",
        ),
    ]
    return BatchSummary(
        icons=len(requests),
        captioned=len(ok),
        failed=len(failed),
        few_phrases=sum(1 for r in ok if len(r.phrases) < MIN_PHRASES),
        routed_to_vision=vision,
        checks=checks,
    )


# The captions table's columns, in order: generated phrases with the reviewers' decisions applied.
CAPTION_COLUMNS = (
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
)


def caption_rows(
    results: Sequence[CaptionResult],
    icons: Mapping[str, IconRecord],
    overrides: Mapping[str, CaptionOverride],
) -> tuple[list[dict[str, Any]], AppliedCounts]:
    """One row per captioned icon (CAPTION_COLUMNS): its generated phrases, route, model and error,
    with the reviewers' decisions applied over them (they win)."""
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
    return apply_overrides(generated, overrides)
