from __future__ import annotations

import os
from collections.abc import Sequence

from dagster import ConfigurableResource

from icon_pipeline.captions import (
    CacheStats,
    CaptionCache,
    Captioner,
    CaptionRequest,
    CaptionResult,
    OfflineCaptioner,
    OpenAICaptioner,
    caption_with_cache,
    choose_route,
)
from icon_pipeline.core.config import CaptionsConfig

ENV_LLM_BASE_URL = "ICON_PIPELINE_LLM_BASE_URL"
ENV_VLM_BASE_URL = "ICON_PIPELINE_VLM_BASE_URL"


def text_server_url(settings: CaptionsConfig, needed_by: str) -> str:
    """The text LLM server: ICON_PIPELINE_LLM_BASE_URL, else captions.base_url; an error if neither."""
    url = os.environ.get(ENV_LLM_BASE_URL) or settings.base_url
    if not url:
        raise ValueError(
            f"{needed_by} is 'openai' but no server is set: add captions.base_url to the config "
            f"or set {ENV_LLM_BASE_URL}"
        )
    return url


class CaptionerResource(ConfigurableResource):
    """The captioning models: the offline captioner, or an OpenAI-compatible server (vLLM) for
    the text LLM and another (or the same) for the VLM. The API key is read from the environment
    variable the config names and is never logged."""

    def _openai(self, settings: CaptionsConfig, base_url: str) -> OpenAICaptioner:
        return OpenAICaptioner(
            base_url=base_url,
            api_key=os.environ.get(settings.api_key_env),
            text_model=settings.text_model,
            vision_model=settings.vision_model,
            reasoning_effort=settings.reasoning_effort,
            max_concurrency=settings.max_concurrency,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            max_regenerations=settings.max_regenerations,
            min_text_tokens=settings.min_text_tokens,
        )

    def captioners(self, settings: CaptionsConfig) -> dict[str, Captioner]:
        """One captioner per route ("text", "vision"); the offline one serves both."""
        if settings.captioner == "offline":
            offline = OfflineCaptioner()
            return {"text": offline, "vision": offline}
        text_url = text_server_url(settings, "captions.captioner")
        vision_url = os.environ.get(ENV_VLM_BASE_URL) or settings.vision_base_url or text_url
        return {"text": self._openai(settings, text_url), "vision": self._openai(settings, vision_url)}

    def caption(
        self,
        settings: CaptionsConfig,
        requests: Sequence[CaptionRequest],
        cache: CaptionCache,
        on_progress=None,
    ) -> tuple[list[CaptionResult], CacheStats]:
        """Caption through the cache, sending each request to its route's server."""
        captioners = self.captioners(settings)
        by_route: dict[str, list[CaptionRequest]] = {"text": [], "vision": []}
        for request in requests:
            by_route[choose_route(request, settings.min_text_tokens)].append(request)
        results: dict[str, CaptionResult] = {}
        counts = {"hits": 0, "misses": 0, "calls": 0, "failures": 0}
        for route, routed in by_route.items():
            if not routed:
                continue
            answered, stats = caption_with_cache(captioners[route], routed, cache, on_progress=on_progress)
            results.update({r.icon_id: r for r in answered})
            counts = {name: value + getattr(stats, name) for name, value in counts.items()}
        return [results[r.icon_id] for r in requests], CacheStats(**counts)
