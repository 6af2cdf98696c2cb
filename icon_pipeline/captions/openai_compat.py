"""Captions from an OpenAI-compatible chat server (vLLM in production): gpt-oss for text, a VLM
for icons whose names say too little.

Each icon is one conversation: the prompt (text) or the prompt plus the rendered PNG (vision),
structured JSON output, then normalisation and validation. Transport problems (429, 5xx,
timeouts, refused connections) are retried with backoff; unusable answers (not JSON, banned
words, too few phrases) are regenerated with the problems fed back. An icon that still fails is
returned with the reason and the batch carries on. The API key is sent in the Authorization
header and nowhere else: never in results, errors, logs or repr.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from icon_pipeline.captions.base import CaptionRequest, CaptionResult, Route, RouteInfo
from icon_pipeline.captions.prompts import Prompt, load_prompt
from icon_pipeline.captions.routing import choose_route
from icon_pipeline.captions.validation import (
    MAX_PHRASES,
    MIN_PHRASES,
    is_valid_phrase,
    normalise_phrases,
    validate_phrases,
)
from icon_pipeline.core.config import CaptionsConfig
from icon_pipeline.core.http import parse_retry_after

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
CAPTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "phrases": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": MIN_PHRASES,
            "maxItems": MAX_PHRASES,
        }
    },
    "required": ["phrases"],
    "additionalProperties": False,
}
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "icon_caption", "schema": CAPTION_SCHEMA, "strict": True},
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_CODE_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _TransportFailure(Exception):
    """The server could not be reached or kept refusing; no answer to regenerate from."""


class UnusableAnswer(ValueError):
    """The server answered, but not with valid phrases; worth asking again."""


class OpenAICaptioner:
    """Captioner backed by `{base_url}/v1/chat/completions` (vLLM, or any OpenAI-compatible server)."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        text_model: str = "openai/gpt-oss-120b",
        vision_model: str = "Qwen/Qwen3-VL-32B-Thinking",
        reasoning_effort: str | None = "medium",
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        max_regenerations: int = 2,
        backoff_base_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_retry_after_s: float = 300.0,
        min_text_tokens: int = CaptionsConfig().min_text_tokens,
        vision_base_url: str | None = None,
        max_tokens: int | None = None,
        salvage_partial: bool = True,
        text_prompt: Prompt | None = None,
        vision_prompt: Prompt | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = re.sub(r"/+(v1/*)?$", "", base_url.strip())
        # The VLM may have a server of its own; this captioner is the one place that routes.
        self.vision_base_url = re.sub(r"/+(v1/*)?$", "", (vision_base_url or base_url).strip())
        self._api_key = api_key or None
        self.text_model = text_model
        self.vision_model = vision_model
        self.reasoning_effort = reasoning_effort
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_regenerations = max_regenerations
        self.backoff_base_s = backoff_base_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.min_text_tokens = min_text_tokens
        self.max_tokens = max_tokens
        # A model answering 9 phrases, or 7 good and 1 with "icon", keeps the good ones rather
        # than paying for a whole new answer; fewer than 5 good ones is still a regeneration.
        self.salvage_partial = salvage_partial
        self.text_prompt = text_prompt or load_prompt("caption_text")
        self.vision_prompt = vision_prompt or load_prompt("caption_vision")
        self._jitter = random.Random()
        self._jitter_lock = threading.Lock()

    # -- identity -----------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return f"{self.text_model}|{self.vision_model}"

    def settings_key(self) -> str:
        return (
            f"openai:schema={SCHEMA_VERSION};reasoning_effort={self.reasoning_effort};"
            f"min_text_tokens={self.min_text_tokens};max_tokens={self.max_tokens};"
            f"salvage={self.salvage_partial}"
        )

    def route_for(self, request: CaptionRequest) -> RouteInfo:
        if choose_route(request, self.min_text_tokens) == "text":
            return RouteInfo(route="text", model=self.text_model, prompt_version=self.text_prompt.key)
        return RouteInfo(route="vision", model=self.vision_model, prompt_version=self.vision_prompt.key)

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return (
            f"OpenAICaptioner(base_url={self.base_url!r}, vision_base_url={self.vision_base_url!r}, "
            f"text_model={self.text_model!r}, "
            f"vision_model={self.vision_model!r}, api_key={key})"
        )

    # -- batch --------------------------------------------------------------------------------

    def caption_many(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """One result per request, in order; at most `max_concurrency` requests in flight."""
        if not requests:
            return []
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        with (
            httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout_s), limits=limits) as client,
            ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests))) as pool,
        ):
            return list(pool.map(lambda request: self._caption_safely(client, request), requests))

    def _caption_safely(self, client: httpx.Client, request: CaptionRequest) -> CaptionResult:
        try:
            return self._caption_one(client, request)
        except Exception as exc:  # one broken icon must not sink the batch
            info = self.route_for(request)
            reason = self._redact(f"unexpected {type(exc).__name__}: {exc}")
            logger.exception("icon %s: %s", request.icon_id, reason)
            return CaptionResult(request.icon_id, [], info.route, info.model, 0, reason)

    # -- one icon -----------------------------------------------------------------------------

    def _caption_one(self, client: httpx.Client, request: CaptionRequest) -> CaptionResult:
        info = self.route_for(request)
        route: Route = info.route
        try:
            messages = self._messages(request, route)
        except (OSError, ValueError) as exc:
            return CaptionResult(request.icon_id, [], route, info.model, 0, f"icon {request.name!r}: {exc}")

        sent = 0
        answers = 0
        problem = ""
        for _generation in range(1 + self.max_regenerations):
            body = self._body(info.model, route, messages)
            try:
                server = self.vision_base_url if route == "vision" else self.base_url
                content, tries = self._post_with_retries(client, body, request, server)
            except _TransportFailure as exc:
                sent += exc.args[1]
                return CaptionResult(request.icon_id, [], route, info.model, sent, self._redact(exc.args[0]))
            sent += tries
            answers += 1
            try:
                phrases = self._phrases_from(content)
            except UnusableAnswer as exc:
                problem = str(exc)
                logger.info("icon %s: unusable answer (%s); asking again", request.icon_id, problem)
                messages = self._with_feedback(messages, content, problem)
                continue
            return CaptionResult(request.icon_id, phrases, route, info.model, sent, None)
        reason = self._redact(f"invalid after {answers} attempts: {problem}")
        return CaptionResult(request.icon_id, [], route, info.model, sent, reason)

    def _messages(self, request: CaptionRequest, route: Route) -> list[dict[str, Any]]:
        prompt = self.text_prompt if route == "text" else self.vision_prompt
        system, user = prompt.render(
            name=request.name,
            terms=", ".join(request.terms) or "(none)",
            tags=", ".join(str(t) for t in request.tags) or "(none)",
            category=request.category or "(none)",
        )
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        if route == "text":
            messages.append({"role": "user", "content": user})
            return messages
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": user},
                    {"type": "image_url", "image_url": {"url": png_data_url(request.image_path)}},
                ],
            }
        )
        return messages

    def _body(self, model: str, route: Route, messages: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": messages, "response_format": RESPONSE_FORMAT}
        if route == "text" and self.reasoning_effort:
            body["reasoning_effort"] = self.reasoning_effort
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        return body

    @staticmethod
    def _with_feedback(
        messages: list[dict[str, Any]], content: str | None, problem: str
    ) -> list[dict[str, Any]]:
        """The conversation so far plus what was wrong, so the next answer can fix it."""
        extra: list[dict[str, Any]] = []
        if content:
            extra.append({"role": "assistant", "content": content[:2000]})
        extra.append(
            {
                "role": "user",
                "content": (
                    f"That answer could not be used: {problem}. Answer again with JSON only, "
                    f'{{"phrases": [...]}}, {MIN_PHRASES}-{MAX_PHRASES} lowercase phrases of 1-4 words '
                    "about what the icon does, never how it looks."
                ),
            }
        )
        # Keep the original prompt and only the latest feedback: the context stays small.
        base = [m for m in messages if m.get("_feedback") is not True]
        return base + [{**m, "_feedback": True} for m in extra]

    def _post_with_retries(
        self, client: httpx.Client, body: dict[str, Any], request: CaptionRequest, server: str
    ) -> tuple[str | None, int]:
        """(message content, requests sent) from `server`; raises _TransportFailure(reason, requests sent)."""
        url = f"{server}/v1/chat/completions"
        payload = {
            **body,
            "messages": [{k: v for k, v in m.items() if k != "_feedback"} for m in body["messages"]],
        }
        reason = ""
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            try:
                response = client.post(url, json=payload)
            except httpx.TimeoutException:
                reason = f"timed out after {self.timeout_s:g}s"
            except httpx.TransportError as exc:
                reason = f"connection error ({type(exc).__name__}) to {server}"
            else:
                if response.status_code == 200:
                    return self._content_of(response), attempt + 1
                snippet = self._redact(response.text[:300])
                reason = f"HTTP {response.status_code} from {server}: {snippet}"
                if response.status_code not in _RETRYABLE_STATUS:
                    raise _TransportFailure(reason, attempt + 1)
                wait = self._retry_after(response)
                if wait is not None and wait > self.max_retry_after_s:
                    raise _TransportFailure(
                        f"rate limited: server asks to wait {wait:g}s (more than max_retry_after_s="
                        f"{self.max_retry_after_s:g}s)",
                        attempt + 1,
                    )
            if attempt == self.max_retries:
                break
            delay = wait if wait is not None else self._backoff(attempt)
            logger.warning("icon %s: %s; retry %d in %.2fs", request.icon_id, reason, attempt + 1, delay)
            time.sleep(delay)
        raise _TransportFailure(
            f"{reason} (gave up after {self.max_retries + 1} tries)", self.max_retries + 1
        )

    def _backoff(self, attempt: int) -> float:
        with self._jitter_lock:
            jitter = self._jitter.uniform(0.75, 1.25)
        return min(self.max_backoff_s, self.backoff_base_s * (2**attempt) * jitter)

    @staticmethod
    def _retry_after(response: httpx.Response) -> float | None:
        return parse_retry_after(response.headers.get("retry-after"))

    @staticmethod
    def _content_of(response: httpx.Response) -> str | None:
        try:
            data = response.json()
            message = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else None

    def _phrases_from(self, content: str | None) -> list[str]:
        return phrases_from_answer(content, salvage_partial=self.salvage_partial)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def phrases_from_answer(content: str | None, salvage_partial: bool = True) -> list[str]:
    """Valid phrases from a model's message content, or UnusableAnswer saying what is wrong.

    Cosmetics are normalised; with salvage_partial, invalid phrases are dropped (and extras
    beyond 8 cut) as long as 5 valid ones remain.
    """
    if not content or not content.strip():
        raise UnusableAnswer("empty answer (no message content)")
    parsed = parse_json_answer(content)
    raw = parsed.get("phrases") if isinstance(parsed, dict) else parsed
    if not isinstance(raw, list):
        raise UnusableAnswer('answer is not JSON of the form {"phrases": [...]}')
    phrases = normalise_phrases(raw)
    if salvage_partial:
        good = [p for p in phrases if is_valid_phrase(p)][:MAX_PHRASES]
        if len(good) >= MIN_PHRASES:
            return good
    problems = validate_phrases(phrases)
    if problems:
        raise UnusableAnswer("; ".join(problems[:3]))
    return phrases


def parse_json_answer(content: str) -> Any:
    """The JSON in a model answer, tolerating <think> blocks, code fences and chatter around it."""
    text = _THINK_BLOCK.sub("", content).strip()
    text = _CODE_FENCE.sub("", text).strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            return json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            pass
    raise UnusableAnswer(f"answer is not valid JSON: {content[:80]!r}")


def png_data_url(image_path: str | None) -> str:
    """`data:image/png;base64,...` for a rendered icon; a clear error if there is none."""
    if not image_path:
        raise ValueError("the vision route needs a rendered PNG but image_path is empty")
    data = Path(image_path).read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError(f"{image_path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
