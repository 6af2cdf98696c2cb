"""A real, local OpenAI-compatible chat server for tests (127.0.0.1, a free port, in a thread).

It answers `POST /v1/chat/completions` like vLLM does, with phrases derived from the prompt's
`<icon>` block so answers are plausible, and can be scripted to misbehave call by call:

    with OpenAITestServer() as server:
        server.script("error", "rate_limit", "malformed")   # the next three calls, in order
        ...                                               # then "ok" (or `default=`) forever
        assert server.call_count == 4

Behaviours: "ok", "malformed" (not JSON), "invalid" (banned looks words), "empty" (null
content), "rate_limit" (429 + Retry-After), "error" (HTTP `error_status`), "hang" (sleeps
`hang_s` before answering, to outlast a client timeout). Vision requests must carry an
image_url data URL with a decodable PNG, or get a 400; decoded sizes are kept in `.images`.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from PIL import Image

BEHAVIOURS = {"ok", "malformed", "invalid", "empty", "rate_limit", "error", "hang"}
INVALID_PHRASES = ["red circle icon", "arrow pointing left", "blue shape", "paper airplane icon", "glyph"]
_ICON_BLOCK = re.compile(r"<icon>(.*?)</icon>", re.DOTALL)
_LOOKS_WORDS = {"icon", "shape", "symbol", "glyph", "outline", "filled", "circle", "arrow", "square"}


def phrases_from_prompt(text: str) -> list[str]:
    """5-8 plausible search phrases from the `<icon>` block: the name, verb+noun, the tags."""
    block = _ICON_BLOCK.search(text)
    fields: dict[str, str] = {}
    for line in (block.group(1) if block else text).splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
    name_words = [w for w in re.split(r"[\s\-_]+", fields.get("name", "").lower()) if w.isalpha()]
    name_words = [w for w in name_words if w not in _LOOKS_WORDS][:3] or ["item"]
    noun = name_words[0]
    tags = [t.strip().lower().replace("-", " ") for t in fields.get("tags", "").split(",")]
    candidates = [" ".join(name_words), f"open {noun}", f"add {noun}", f"{noun} settings"]
    candidates += [t for t in tags if t and t != "(none)" and len(t.split()) <= 4]
    candidates += [f"find {noun}", f"edit {noun}", f"share {noun}"]
    phrases: list[str] = []
    for phrase in candidates:
        words = phrase.split()
        if (
            phrase not in phrases
            and not _LOOKS_WORDS.intersection(words)
            and any(c.isalpha() for c in phrase)
        ):
            phrases.append(phrase)
    return phrases[:8]


def _user_text(messages: list[dict[str, Any]]) -> str:
    texts: list[str] = []
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(texts)


def _image_urls(messages: list[dict[str, Any]]) -> list[str]:
    urls: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    urls.append(str((part.get("image_url") or {}).get("url", "")))
    return urls


def decode_png_data_url(url: str) -> tuple[int, int]:
    """(width, height) of the PNG in a `data:image/png;base64,` URL; ValueError otherwise."""
    prefix = "data:image/png;base64,"
    if not url.startswith(prefix):
        raise ValueError(f"image_url is not a PNG data URL: {url[:40]!r}")
    try:
        data = base64.b64decode(url[len(prefix) :], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.format != "PNG":
                raise ValueError(f"image is {image.format}, not PNG")
            return image.size
    except (OSError, ValueError) as exc:
        raise ValueError(f"image_url does not decode to a PNG: {exc}") from None


class OpenAITestServer:
    """Context manager around a ThreadingHTTPServer speaking the chat-completions API."""

    def __init__(
        self,
        *,
        default: str = "ok",
        retry_after: str = "1",
        error_status: int = 500,
        hang_s: float = 3.0,
        delay_s: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        if default not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {default!r}; known: {sorted(BEHAVIOURS)}")
        self.default = default
        self.retry_after = retry_after
        self.error_status = error_status
        self.hang_s = hang_s
        self.delay_s = delay_s  # every answer takes this long (to see concurrency)
        self.api_key = api_key  # when set, requests without `Bearer <key>` get a 401
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.images: list[tuple[int, int]] = []
        self.image_errors: list[str] = []
        self.behaviours_used: list[str] = []
        self.max_in_flight = 0  # the most chat requests being handled at once
        self._in_flight = 0
        self._script: deque[str] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="openai-test-server", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def models(self) -> list[str]:
        with self._lock:
            return [str(body.get("model")) for body in self.requests]

    def script(self, *behaviours: str) -> None:
        """Queue behaviours for the next calls, one each, before falling back to `default`."""
        unknown = [b for b in behaviours if b not in BEHAVIOURS]
        if unknown:
            raise ValueError(f"unknown behaviours {unknown}; known: {sorted(BEHAVIOURS)}")
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0
            self.headers.clear()
            self.images.clear()
            self.image_errors.clear()
            self.behaviours_used.clear()
            self._script.clear()

    def __enter__(self) -> OpenAITestServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()  # wakes hanging handlers so shutdown is quick
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- request handling (runs in the server's threads) ---------------------------------------

    def _next_behaviour(self, body: dict[str, Any], headers: dict[str, str]) -> str:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            behaviour = self._script.popleft() if self._script else self.default
            self.behaviours_used.append(behaviour)
            return behaviour

    def _completion(self, body: dict[str, Any], content: str | None) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-test-{self.call_count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "reasoning_content": None},
                    "finish_reason": "stop" if content is not None else "length",
                }
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                return

            def _send(self, status: int, payload: Any, extra_headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (extra_headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test): nothing to answer

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "request body is not JSON"}})
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                behaviour = server._next_behaviour(body, headers)
                with server._lock:
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    self._handle_chat(behaviour, body, headers)
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _handle_chat(self, behaviour: str, body: dict[str, Any], headers: dict[str, str]) -> None:
                if server.api_key and headers.get("authorization") != f"Bearer {server.api_key}":
                    self._send(401, {"error": {"message": "invalid api key"}})
                    return
                messages = body.get("messages") or []
                for url in _image_urls(messages):
                    try:
                        size = decode_png_data_url(url)
                    except ValueError as exc:
                        with server._lock:
                            server.image_errors.append(str(exc))
                        self._send(400, {"error": {"message": str(exc)}})
                        return
                    with server._lock:
                        server.images.append(size)
                self._respond(behaviour, body, messages)

            def _respond(self, behaviour: str, body: dict[str, Any], messages: list[dict[str, Any]]) -> None:
                if behaviour == "hang":
                    server._stop.wait(server.hang_s)
                    behaviour = "ok"
                elif server.delay_s:
                    server._stop.wait(server.delay_s)
                if behaviour == "rate_limit":
                    self._send(
                        429, {"error": {"message": "rate limited"}}, {"Retry-After": server.retry_after}
                    )
                elif behaviour == "error":
                    self._send(server.error_status, {"error": {"message": "internal server error"}})
                elif behaviour == "malformed":
                    answer = "Sure! Here are some phrases: hide layer, show layer, toggle layer"
                    self._send(200, server._completion(body, answer))
                elif behaviour == "empty":
                    self._send(200, server._completion(body, None))
                elif behaviour == "invalid":
                    self._send(200, server._completion(body, json.dumps({"phrases": INVALID_PHRASES})))
                else:
                    phrases = phrases_from_prompt(_user_text(messages))
                    self._send(200, server._completion(body, json.dumps({"phrases": phrases})))

        return Handler
