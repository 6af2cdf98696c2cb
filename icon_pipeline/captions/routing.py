"""Text or vision: an icon whose name and tags carry enough words is captioned from text alone
(cheap, fast); one with a weak name needs the model to look at the rendered image.

The threshold is `captions.min_text_tokens` in icon_pipeline.yaml and nothing else: every place
that routes or counts routes (the captioner, the lexicon's and the captions' metadata and checks)
takes it as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from icon_pipeline.captions.base import CaptionRequest

ModelRoute = Literal["text", "vision"]


def route_for_useful_tokens(useful_token_count: int, min_text_tokens: int) -> ModelRoute:
    """The one routing rule: at least `min_text_tokens` useful lexicon tokens go to the text LLM."""
    return "text" if useful_token_count >= min_text_tokens else "vision"


def choose_route(request: CaptionRequest, min_text_tokens: int) -> ModelRoute:
    return route_for_useful_tokens(request.useful_token_count, min_text_tokens)


def vision_count(useful_token_counts: Iterable[int], min_text_tokens: int) -> int:
    """How many icons with these useful-token counts the VLM captions."""
    return sum(route_for_useful_tokens(count, min_text_tokens) == "vision" for count in useful_token_counts)
