"""Text or vision: an icon whose name and tags carry enough words is captioned from text alone
(cheap, fast); one with a weak name needs the model to look at the rendered image."""

from __future__ import annotations

from typing import Literal

from icon_pipeline.captions.base import CaptionRequest

MIN_TEXT_TOKENS = 3


def choose_route(
    request: CaptionRequest, min_text_tokens: int = MIN_TEXT_TOKENS
) -> Literal["text", "vision"]:
    return "text" if request.useful_token_count >= min_text_tokens else "vision"
