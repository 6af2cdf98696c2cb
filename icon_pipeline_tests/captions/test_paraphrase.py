"""The LLM paraphraser for the eval set, against a local OpenAI-compatible server."""

from __future__ import annotations

import pytest

from icon_pipeline.captions.paraphrase import LLMParaphraser
from icon_pipeline.dataset.evalset import build_eval_set
from icon_pipeline.dataset.grouping import Group
from icon_pipeline_tests.openai_server import OpenAITestServer


def _group(group_id: str, name: str, captions: list[str]) -> Group:
    return Group(group_id, (f"{group_id}-icon",), (name,), tuple(captions), f"{group_id}-icon")


def test_llm_paraphraser_asks_with_high_reasoning_and_the_existing_captions() -> None:
    group = _group("g1", "bell-ringing", ["notification", "alarm", "ring bell"])
    with OpenAITestServer() as llm:
        paraphraser = LLMParaphraser(llm.url, api_key="sk-secret", model="openai/gpt-oss-120b", timeout_s=5)
        phrases = paraphraser.paraphrase(group, n=3, attempt=0)
        (body,) = llm.requests
    assert 1 <= len(phrases) <= 3 and all(p == p.lower() for p in phrases)
    assert body["model"] == "openai/gpt-oss-120b" and body["reasoning_effort"] == "high"
    prompt = body["messages"][-1]["content"]
    assert "notification, alarm, ring bell" in prompt  # the captions it must differ from
    assert "sk-secret" not in repr(paraphraser.captioner)


def test_an_unreachable_server_gives_no_captions_and_the_eval_set_says_so() -> None:
    groups = [_group(f"g{i}", f"icon-{i}", ["open file", "load document"]) for i in range(3)]
    paraphraser = LLMParaphraser("http://127.0.0.1:9", api_key=None, model="m", timeout_s=0.5, max_retries=0)
    with pytest.raises(ValueError, match="rejected every candidate caption"):  # never an empty file
        build_eval_set(groups, {g.group_id: "train" for g in groups}, paraphraser, n_groups=3)
