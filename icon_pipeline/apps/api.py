"""A plain HTTP JSON search endpoint over the same SearchService as the search app and the CLI.

    icon-pipeline api [--host 127.0.0.1] [--port 7865]

- `GET  /api/models`                      -> {"models": ["hybrid", "bm25", ...]}
- `GET  /api/search?q=hide+layer&k=10`    -> a page of hits (options below as query parameters)
- `POST /api/search` JSON `{"text": "..."}` or `{"image": "<base64 PNG/JPEG/SVG...>"}`, options:
  `model` (default hybrid, any case), `k` (1-100), `offset`, `fold` (variants folded into one
  result, default true), `styles`, `categories` (lists).
- `POST /api/search/image?k=...` with the raw image bytes as the body (`curl --data-binary @x.svg`).

Answers: `{"query": {...}, "model", "offset", "has_more", "results": [{"rank", "icon_id", "name",
"group_id", "score", "style", "category", "file_path", "channels": {channel: score}, "variants":
[...]}]}`. Errors: 400 (bad query, with the message), 401 (auth on, no or wrong credentials),
503 (index not ready or unreachable). Binds 127.0.0.1 unless told otherwise; HTTP basic auth
when ICON_PIPELINE_APP_AUTH holds `user:password` (as the Gradio apps).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import sys
import threading
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from icon_pipeline.apps import AUTH_ENV, LOOPBACK, AppError, parse_auth
from icon_pipeline.search.query import MAX_QUERY_BYTES, QueryError, SearchHit
from icon_pipeline.search.service import ResultGroup, SearchPage

DEFAULT_PORT = 7865
MAX_K = 100
# Module level: FastAPI reads the dependency from the (string) annotation in this module's globals.
basic = HTTPBasic(auto_error=False)


class SearchRequest(BaseModel):
    text: str | None = None
    image: str | None = Field(default=None, description="base64 of an image file (PNG, JPEG, SVG, ...)")
    model: str | None = None
    k: int = Field(default=10, ge=1, le=MAX_K)
    offset: int = Field(default=0, ge=0)
    fold: bool = True
    styles: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)


def _hit(hit: SearchHit) -> dict[str, Any]:
    return {
        "icon_id": hit.icon_id,
        "name": hit.name,
        "group_id": hit.group_id,
        "score": round(hit.score, 6),
        "style": hit.style,
        "category": hit.category,
        "file_path": hit.file_path,
        "channels": {c: round(v, 6) for c, v in hit.channel_scores.items()},
    }


def _result(rank: int, group: ResultGroup) -> dict[str, Any]:
    return {"rank": rank, **_hit(group.hit), "variants": [_hit(v) for v in group.variants]}


def page_json(page: SearchPage, query: dict[str, Any]) -> dict[str, Any]:
    return {
        "query": query,
        "model": page.model,
        "offset": page.offset,
        "has_more": page.has_more,
        "results": [_result(page.offset + i, g) for i, g in enumerate(page.results, start=1)],
    }


def _search(query: Any, described: dict[str, Any], request: SearchRequest) -> dict[str, Any]:
    from icon_pipeline.apps.search import SEARCH_ERRORS, SearchUnavailable, locked_search, open_search
    from icon_pipeline.search.service import NotReadyError

    try:
        with open_search() as service:
            page = locked_search(
                service,
                query,
                request.model,
                k=request.k,
                offset=request.offset,
                fold=request.fold,
                styles=tuple(request.styles),
                categories=tuple(request.categories),
            )
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    except (SearchUnavailable, NotReadyError) as exc:
        raise HTTPException(503, str(exc)) from None
    except SEARCH_ERRORS as exc:
        raise HTTPException(503, str(exc)) from None
    return page_json(page, described)


def create_app(auth: list[tuple[str, str]] | None = None) -> FastAPI:
    """The API; `auth`: the accepted (user, password) pairs, None for none."""
    app = FastAPI(title="Icon search API", docs_url="/api/docs", openapi_url="/api/openapi.json")

    def signed_in(credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)]) -> str | None:
        if auth is None:
            return None
        if credentials is not None:
            for user, password in auth:
                # Both compared, always: the time taken says nothing about which part was wrong.
                user_ok = secrets.compare_digest(credentials.username.encode(), user.encode())
                password_ok = secrets.compare_digest(credentials.password.encode(), password.encode())
                if user_ok and password_ok:
                    return user
        raise HTTPException(401, "sign in (HTTP basic auth)", headers={"WWW-Authenticate": "Basic"})

    guarded = [Depends(signed_in)]

    @app.get("/api/models", dependencies=guarded)
    def models() -> dict[str, list[str]]:
        from icon_pipeline.apps.search import SearchUnavailable, available_models

        try:
            return {"models": available_models()}
        except SearchUnavailable as exc:
            raise HTTPException(503, str(exc)) from None

    @app.get("/api/search", dependencies=guarded)
    def search_get(
        q: Annotated[str, Query(description="what the icon is for")],
        model: str | None = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        offset: Annotated[int, Query(ge=0)] = 0,
        fold: bool = True,
        style: Annotated[list[str] | None, Query()] = None,
        category: Annotated[list[str] | None, Query()] = None,
    ) -> dict[str, Any]:
        request = SearchRequest(
            text=q, model=model, k=k, offset=offset, fold=fold, styles=style or [], categories=category or []
        )
        return search_post(request)

    @app.post("/api/search", dependencies=guarded)
    def search_post(request: SearchRequest) -> dict[str, Any]:
        if bool(request.text) == bool(request.image):
            raise HTTPException(400, 'give exactly one of "text" or "image" (base64)')
        if request.text:
            return _search(request.text, {"kind": "text", "text": request.text}, request)
        try:
            data = base64.b64decode(request.image or "", validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(400, '"image" is not valid base64') from None
        return _search(data, {"kind": "image", "bytes": len(data)}, request)

    @app.post("/api/search/image", dependencies=guarded)
    async def search_image(
        request: Request,
        model: str | None = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        offset: Annotated[int, Query(ge=0)] = 0,
        fold: bool = True,
    ) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_QUERY_BYTES:  # refused before it is all in memory
                raise HTTPException(413, f"image is over the {MAX_QUERY_BYTES}-byte limit")
        if not data:
            raise HTTPException(400, "send the image file as the request body")
        options = SearchRequest(image="-", model=model, k=k, offset=offset, fold=fold)
        body = await run_in_threadpool(_search, bytes(data), {"kind": "image", "bytes": len(data)}, options)
        return JSONResponse(body)

    return app


@dataclass
class RunningApi:
    url: str
    server: Any
    thread: threading.Thread

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, block: bool = True) -> RunningApi:
    """Serve the API on host:port (block=False: return once it answers, for tests)."""
    import time

    import uvicorn

    auth = parse_auth(os.environ.get(AUTH_ENV), AUTH_ENV)
    if host not in LOOPBACK and auth is None:
        print(
            f"warning: serving the search API on {host} without a password; set {AUTH_ENV}=user:password",
            file=sys.stderr,
        )
    config = uvicorn.Config(create_app(auth), host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    url = f"http://{host}:{port}/"
    if block:
        print(f"search API on {url}api/search (Ctrl-C to stop)")
        server.run()
        return RunningApi(url, server, threading.current_thread())
    thread = threading.Thread(target=server.run, daemon=True, name="icon-search-api")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AppError(f"cannot serve the search API on {host}:{port}; choose another --port")
        time.sleep(0.05)
    return RunningApi(url, server, thread)
