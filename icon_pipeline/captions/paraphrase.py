"""An LLM paraphraser for the eval set: new captions for a group, through the OpenAI captioner."""

from __future__ import annotations

from icon_pipeline.captions.base import CaptionRequest
from icon_pipeline.captions.openai_compat import OpenAICaptioner
from icon_pipeline.captions.prompts import load_prompt
from icon_pipeline.dataset.grouping import Group


class LLMParaphraser:
    """Implements evalset.Paraphraser with an OpenAI-compatible text model (reasoning effort high
    by default: an eval caption must be accurate yet differ from every training caption)."""

    def __init__(
        self, base_url: str, api_key: str | None, model: str, reasoning_effort: str = "high", **kwargs
    ):
        self.captioner = OpenAICaptioner(
            base_url=base_url,
            api_key=api_key,
            text_model=model,
            reasoning_effort=reasoning_effort,
            min_text_tokens=0,  # always the text route: the group's captions carry the meaning
            text_prompt=load_prompt("paraphrase"),
            **kwargs,
        )

    def paraphrase(self, group: Group, n: int, attempt: int) -> list[str]:
        request = CaptionRequest(
            icon_id=f"{group.group_id}#{attempt}",
            name=group.names[0] if group.names else group.group_id,
            terms=list(group.captions),  # the prompt's "existing phrases"
            tags=[],
            category="",
            useful_token_count=len(group.captions),
        )
        (result,) = self.captioner.caption_many([request])
        if result.error:
            return []
        return list(result.phrases[:n])
