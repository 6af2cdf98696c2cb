"""Icon captions: 5-8 short search phrases per icon, from an offline captioner or an
OpenAI-compatible model server, validated, versioned by prompt and cached by content."""

from icon_pipeline.captions.base import Captioner, CaptionRequest, CaptionResult, Route, RouteInfo
from icon_pipeline.captions.cache import CacheStats, CaptionCache, caption_with_cache, make_cache_key
from icon_pipeline.captions.offline import OfflineCaptioner, load_vocabulary
from icon_pipeline.captions.openai_compat import (
    CAPTION_SCHEMA,
    OpenAICaptioner,
    UnusableAnswer,
    phrases_from_answer,
    png_data_url,
)
from icon_pipeline.captions.prompts import Prompt, PromptError, available_prompts, load_prompt
from icon_pipeline.captions.routing import choose_route, route_for_useful_tokens, vision_count
from icon_pipeline.captions.validation import (
    MAX_PHRASES,
    MAX_WORDS,
    MIN_PHRASES,
    banned_in,
    is_valid_phrase,
    normalise_phrase,
    normalise_phrases,
    phrase_problems,
    validate_phrases,
)

__all__ = [
    "CAPTION_SCHEMA",
    "MAX_PHRASES",
    "MAX_WORDS",
    "MIN_PHRASES",
    "CacheStats",
    "CaptionCache",
    "CaptionRequest",
    "CaptionResult",
    "Captioner",
    "OfflineCaptioner",
    "OpenAICaptioner",
    "Prompt",
    "PromptError",
    "Route",
    "UnusableAnswer",
    "RouteInfo",
    "available_prompts",
    "banned_in",
    "caption_with_cache",
    "choose_route",
    "is_valid_phrase",
    "load_prompt",
    "load_vocabulary",
    "make_cache_key",
    "normalise_phrase",
    "normalise_phrases",
    "phrase_problems",
    "phrases_from_answer",
    "png_data_url",
    "route_for_useful_tokens",
    "validate_phrases",
    "vision_count",
]
