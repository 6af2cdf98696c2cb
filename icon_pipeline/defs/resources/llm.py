from __future__ import annotations

import os
from collections.abc import Callable, Sequence

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

    def captioner(self, settings: CaptionsConfig) -> Captioner:
        """The offline captioner, or one OpenAI-compatible captioner that routes each request to the
        text LLM or the VLM (and its server) by captions.min_text_tokens."""
        if settings.captioner == "offline":
            return OfflineCaptioner()
        text_url = text_server_url(settings, "captions.captioner")
        return OpenAICaptioner(
            base_url=text_url,
            vision_base_url=os.environ.get(ENV_VLM_BASE_URL) or settings.vision_base_url or text_url,
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

    def caption(
        self,
        settings: CaptionsConfig,
        requests: Sequence[CaptionRequest],
        cache: CaptionCache,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[CaptionResult], CacheStats]:
        """Caption through the cache: only the icons whose cache key changed cost a model call."""
        return caption_with_cache(self.captioner(settings), requests, cache, on_progress=on_progress)
