"""The captioner contract: what goes in (one request per icon), what comes out, and the protocol.

Requests are built by the caller from the catalog and the lexicon (this package never imports
the lexicon module), so every captioner, offline or model-backed, sees the same input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Route = Literal["text", "vision", "offline"]


@dataclass(frozen=True)
class CaptionRequest:
    """One icon to caption.

    terms: lexicon phrases mined from the name (first one is usually the whole cleaned name).
    useful_token_count: how many informative lexicon tokens the icon has; drives text vs vision.
    image_path: the rendered PNG (needed for the vision route only).
    content_hash: sha256 of the icon's source bytes; part of the cache key.
    """

    icon_id: str
    name: str
    terms: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    category: str = ""
    useful_token_count: int = 0
    image_path: str | None = None
    content_hash: str = ""

    def lexicon_hash(self) -> str:
        """Hash of everything the lexicon contributes, so a lexicon change invalidates the cache."""
        payload = json.dumps(
            [self.name, list(self.terms), list(self.tags), self.category, self.useful_token_count],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CaptionResult:
    """The captioner's answer for one icon; `error` is set (and phrases empty) when it failed.

    attempts: HTTP requests sent for this icon (retries and regenerations included); 1 offline.
    """

    icon_id: str
    phrases: list[str]
    route: Route
    model: str
    attempts: int = 1
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class RouteInfo:
    """Which route, model and prompt version a request would use: the per-request part of a cache key."""

    route: Route
    model: str
    prompt_version: str


@runtime_checkable
class Captioner(Protocol):
    """Anything that turns caption requests into results, one result per request, same order."""

    name: str

    @property
    def model_id(self) -> str: ...

    def settings_key(self) -> str:
        """A stable string of the settings that change the output (never secrets or URLs)."""
        ...

    def route_for(self, request: CaptionRequest) -> RouteInfo: ...

    def caption_many(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]: ...
