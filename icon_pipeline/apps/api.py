"""A plain HTTP JSON search endpoint over the same SearchService as the search app and the CLI.

    icon-pipeline api [--host 127.0.0.1] [--port 7865]

- `GET  /api/models`                      -> {"models": ["hybrid", "bm25", ...]}
- `GET  /api/search?q=hide+layer&k=10`    -> a page of hits (options below as query parameters)
- `POST /api/search` JSON `{"text": "..."}` or `{"image": "<base64 PNG/JPEG/SVG...>"}`, options:
  `model` (default hybrid, any case), `k` (1-100), `offset`, `fold` (variants folded into one
  result, default true), `styles`, `categories` (lists).
- `POST /api/search/image?k=...` with the raw image bytes as the body (`curl --data-binary @x.svg`).
- `GET  /api/icon.svg?id=ICON_ID` and `/api/icon.png?id=ICON_ID&size=256`: the icon itself, with
  `color` (hex ink), `stroke` (width, outline icons) and `background` (hex; transparent by default).
- `GET  /api/docs`, `/api/redoc`, `/api/openapi.json`: the interactive docs and the schema (their
  assets are served from here: they work offline).

Answers (apps/common.page_json, the layout of `icon-pipeline search --json` too): `{"query": {...},
"model", "offset", "has_more", "results": [{"rank", "icon_id", "name", "group_id", "score", "style",
"category", "file" (relative to the data root), "channels": {channel: score}, "svg_url", "png_url",
"variants": [...]}]}`. Errors: 400 (bad query, image, or an unknown model, style or category, with
the choices), 401 (auth on, no or wrong credentials), 404 (unknown icon), 503 (index not ready or
unreachable; a one-line message). Binds 127.0.0.1 unless told
otherwise; HTTP basic auth on every route, the docs included, when ICON_PIPELINE_APP_AUTH holds
`user:password` (as the Gradio apps).

Searches run side by side: each takes a search service of its own from a pool kept between
requests (its database connection, channels and fitted settings; one small query checks that the
index has not changed), at most four per core at once. Models load once per process, as it starts,
and are shared; each process searches its own in-memory copy of the index (search/resident.py);
concurrent searches share the text encoder's forwards and the copies' matrix products. `serve`
runs one worker process per core (`icon-pipeline api --workers N`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from icon_pipeline.apps import AUTH_ENV, LOOPBACK, AppError, parse_auth
from icon_pipeline.apps.common import (
    ICON_PNG_ROUTE,
    ICON_SVG_ROUTE,
    DownloadOptions,
    check_filters,
    page_json,
    styled_png,
    styled_svg,
)
from icon_pipeline.search.query import MAX_QUERY_BYTES, QueryError

if TYPE_CHECKING:
    from icon_pipeline.model.checkpoint import EncoderBundle
    from icon_pipeline.search.service import SearchService

DEFAULT_PORT = 7865
MAX_K = 100
EMBEDDINGS_ASSET = "icon_embeddings"
DOCS_URL, REDOC_URL, OPENAPI_URL = "/api/docs", "/api/redoc", "/api/openapi.json"
DOCS_ASSETS = "/api/docs-assets"  # Swagger UI and ReDoc, served from the fastapi-offline wheel (no CDN)
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


T = TypeVar("T")
log = logging.getLogger(__name__)
# Loaded checkpoints, shared by every request of this process (each search has its own connection).
_bundles: dict[str, EncoderBundle] = {}


class IndexUnavailable(RuntimeError):
    """The database behind the index cannot be reached; the message says so in one line."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_parallel() -> int:
    """Searches run at once per process: four per core. While some wait (on a batch, on PostgreSQL)
    others run, and the ones that meet at an encoder or a table share its work (search/coalesce.py);
    on 2 cores, when searches still asked PostgreSQL, 8 at once answered 8 clients about a quarter
    faster than 4, and 16 no faster than 8. Later requests queue."""
    return max(4, 4 * usable_cores())


class SearchPool:
    """Search services kept between requests, each on a database connection of its own, and a
    bound on the searches run at once.

    Each search has a service to itself; it goes back to the pool when the search ends with its
    connection idle, and is closed otherwise. A kept service keeps what it read of the index (the
    registry, the fitted settings, its channels) until the index changes: one small query per
    search checks that (SearchService.revalidate) instead of reading it all again. A kept
    connection found dead (the server restarted) is replaced and the search run once more.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"the pool needs at least one connection, got {size}")
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[SearchService] = []
        self._where: tuple[str, str, str] | None = None  # the configuration the kept ones are for
        self._url: str | None = None

    @staticmethod
    def _location() -> tuple[str, str, str]:
        from icon_pipeline.core.paths import ENV_DATABASE_URL, get_paths

        paths = get_paths()
        return os.environ.get(ENV_DATABASE_URL, ""), str(paths.data_dir), str(paths.pgdata)

    def _connect(self, where: tuple[str, str, str]) -> psycopg.Connection:
        from icon_pipeline.core.database import DatabaseError, describe_url, ensure_database

        with self._lock:
            url = self._url if self._where == where else None
        if url is not None:
            try:
                return psycopg.connect(url, connect_timeout=5, autocommit=True)
            except psycopg.OperationalError:
                pass  # the server may have been restarted elsewhere: look it up again
        try:
            url = ensure_database().libpq_url
        except DatabaseError as exc:
            raise IndexUnavailable(f"the search index is unreachable: {exc}") from None
        try:
            conn = psycopg.connect(url, connect_timeout=5, autocommit=True)
        except psycopg.OperationalError:
            raise IndexUnavailable(
                f"the search index is unreachable: cannot connect to {describe_url(url)}"
            ) from None
        with self._lock:
            self._where, self._url = where, url
        return conn

    def _take(self) -> tuple[SearchService, bool]:
        """(a service, whether it was kept from an earlier request)."""
        from icon_pipeline.search.resident import server_index
        from icon_pipeline.search.service import SearchService

        where = self._location()
        service: SearchService | None = None
        with self._lock:
            if where != self._where:
                stale, self._idle = self._idle, []  # another database or data root: not for this one
            else:
                stale = []
                while self._idle and service is None:
                    kept = self._idle.pop()
                    service = None if kept.conn.closed else kept
        for old in stale:
            old.close()
        if service is not None:
            return service, True
        return SearchService(self._connect(where), bundles=_bundles, resident=server_index()), False

    def _give_back(self, service: SearchService) -> None:
        conn = service.conn
        usable = not conn.closed and not conn.broken
        if usable and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            with self._lock:
                if len(self._idle) < self.size:
                    self._idle.append(service)
                    return
        conn.close()

    def run(self, work: Callable[[SearchService], T]) -> T:
        """work(a service on a connection of its own, up to date with the index), once a slot is free."""
        with self._slots:
            for attempt in (1, 2):
                service, kept = self._take()
                try:
                    if kept:
                        service.revalidate()
                    result = work(service)
                except psycopg.OperationalError:
                    service.close()
                    if kept and attempt == 1:
                        self.clear()  # the server went away since: every kept connection is dead
                        continue
                    raise IndexUnavailable(
                        "the search index became unreachable during the query; try again"
                    ) from None
                except BaseException:
                    self._give_back(service)
                    raise
                self._give_back(service)
                return result
        raise AssertionError("unreachable")

    def clear(self) -> None:
        """Close every kept connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for service in idle:
            service.close()


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def _unavailable(exc: BaseException) -> HTTPException:
    """503 with one line: the index is not ready (the message names what to materialize), cannot be
    reached, or cannot be read."""
    if isinstance(exc, psycopg.Error):
        # e.g. an index table dropped while icon_embeddings is rebuilt
        diag = getattr(exc, "diag", None)
        detail = (diag.message_primary if diag is not None else None) or str(exc)
        return HTTPException(
            503, one_line(f"the search index cannot be read now ({detail}); try again once it is rebuilt")
        )
    return HTTPException(503, one_line(exc))


def _not_ready_errors() -> tuple[type[BaseException], ...]:
    from icon_pipeline.model.checkpoint import CheckpointError
    from icon_pipeline.model.sentence_encoder import TextEncoderError
    from icon_pipeline.search.index import EmbeddingIndexError
    from icon_pipeline.search.service import NotReadyError

    return (
        IndexUnavailable,
        NotReadyError,
        EmbeddingIndexError,
        CheckpointError,
        TextEncoderError,
        psycopg.Error,
    )


def _search(
    pool: SearchPool, query: Any, described: dict[str, Any], request: SearchRequest
) -> dict[str, Any]:
    from icon_pipeline.search.query import prepare_query_image

    try:
        if not isinstance(query, str):
            # Checked (and an SVG drawn) before a connection is taken: a bad file costs no slot.
            query = prepare_query_image(query, label="query image")

        def run(service: SearchService) -> Any:
            check_filters(request.styles, request.categories, service.facets)
            return service.search(
                query,
                request.model,
                k=request.k,
                offset=request.offset,
                fold=request.fold,
                styles=tuple(request.styles),
                categories=tuple(request.categories),
            )

        page = pool.run(run)
    except QueryError as exc:
        raise HTTPException(400, one_line(exc)) from None
    except _not_ready_errors() as exc:
        raise _unavailable(exc) from None
    return page_json(page, described)


def _docs_routes(app: FastAPI, guarded: list[Any]) -> None:
    """The docs and the schema, behind the same sign-in as the API (FastAPI's own are unguarded).
    Their scripts and styles come from this server (the fastapi-offline wheel ships them), so the
    docs work on a machine without internet."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    swagger = {
        "swagger_js_url": f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        "swagger_css_url": f"{DOCS_ASSETS}/swagger-ui.css",
        "swagger_favicon_url": f"{DOCS_ASSETS}/favicon.png",
    }

    @app.get(OPENAPI_URL, dependencies=guarded, include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(DOCS_URL, dependencies=guarded, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{app.title} - docs", **swagger)

    @app.get(REDOC_URL, dependencies=guarded, include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def warm_up(pool: SearchPool) -> None:
    """Load what searches need (the models, the index's in-memory copies) in the background as the
    server starts, so that a designer's first query takes as long as any other. Nothing to load
    yet (no index, the database away) is not an error here: searches say what is missing."""
    from PIL import Image, ImageDraw

    drawing = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(drawing).rectangle((16, 16, 48, 48), outline="black", width=4)

    def run() -> None:
        for query in ("icon", drawing):
            try:
                pool.run(lambda service, query=query: service.search(query, k=1))
            except Exception as exc:  # noqa: BLE001 (whatever it is, the searches will say it)
                log.info("search API warm-up stopped: %s", one_line(exc))
                return

    threading.Thread(target=run, daemon=True, name="icon-search-warm-up").start()


def create_app(
    auth: list[tuple[str, str]] | None = None, parallel: int | None = None, warm: bool = False
) -> FastAPI:
    """The API; `auth`: the accepted (user, password) pairs, None for none; `parallel`: searches
    run at once (default: four per core); `warm`: load the models as it starts (warm_up)."""
    pool = SearchPool(parallel or default_parallel())
    app = FastAPI(title="Icon search API", docs_url=None, redoc_url=None, openapi_url=None)
    app.router.on_shutdown.append(pool.clear)
    if warm:
        app.router.on_startup.append(lambda: warm_up(pool))
    app.state.pool = pool

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
    _docs_routes(app, guarded)

    @app.get("/api/models", dependencies=guarded)
    def models() -> dict[str, list[str]]:
        from icon_pipeline.search.channels import HYBRID

        try:
            names = pool.run(lambda service: service.models())
        except _not_ready_errors() as exc:
            raise _unavailable(exc) from None
        if HYBRID not in names:
            raise HTTPException(
                503,
                f"the search index has no models yet: materialize `{EMBEDDINGS_ASSET}` "
                f"(`icon-pipeline materialize {EMBEDDINGS_ASSET}`)",
            )
        return {"models": names}

    @app.get("/api/search", dependencies=guarded)
    def search_get(
        q: Annotated[str, Query(description="what the icon is for")],
        model: str | None = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        offset: Annotated[int, Query(ge=0)] = 0,
        fold: bool = True,
        style: Annotated[list[str] | None, Query()] = None,
        category: Annotated[list[str] | None, Query()] = None,
    ) -> JSONResponse:
        request = SearchRequest(
            text=q, model=model, k=k, offset=offset, fold=fold, styles=style or [], categories=category or []
        )
        return search_post(request)

    @app.post("/api/search", dependencies=guarded)
    def search_post(request: SearchRequest) -> JSONResponse:
        # A JSONResponse: the page is JSON already, and FastAPI's walk over a returned dict
        # (jsonable_encoder) cost 0.8 ms a search, as much as the search's own fusion.
        if bool(request.text) == bool(request.image):
            raise HTTPException(400, 'give exactly one of "text" or "image" (base64)')
        if request.text:
            return JSONResponse(_search(pool, request.text, {"kind": "text", "text": request.text}, request))
        try:
            data = base64.b64decode(request.image or "", validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(400, '"image" is not valid base64') from None
        return JSONResponse(_search(pool, data, {"kind": "image", "bytes": len(data)}, request))

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
        described = {"kind": "image", "bytes": len(data)}
        body = await run_in_threadpool(_search, pool, bytes(data), described, options)
        return JSONResponse(body)

    def _icon_file(icon_id: str) -> tuple[str, str]:
        """(source file, format) of a catalog icon; 404 naming an unknown one."""
        try:
            record = pool.run(lambda service: service.icon(icon_id))
        except QueryError as exc:
            raise HTTPException(404, one_line(exc)) from None
        except _not_ready_errors() as exc:
            raise _unavailable(exc) from None
        return record.file_path, record.format

    def _options(
        color: str | None, stroke: float | None, background: str | None, size: int
    ) -> DownloadOptions:
        try:
            return DownloadOptions.parse(color, stroke, background, size)
        except QueryError as exc:
            raise HTTPException(400, one_line(exc)) from None

    @app.get(ICON_SVG_ROUTE, dependencies=guarded)
    def icon_svg(
        id: Annotated[str, Query(description="an icon_id from a search result")],
        color: Annotated[str | None, Query(description="ink colour, hex (e.g. #1a73e8)")] = None,
        stroke: Annotated[float | None, Query(description="stroke width (outline icons), 0.5 to 4")] = None,
        background: Annotated[str | None, Query(description="hex colour; transparent by default")] = None,
    ) -> Response:
        file_path, fmt = _icon_file(id)
        if fmt != "svg":
            raise HTTPException(404, f"icon {id!r} has no SVG source (it is a {fmt} icon): ask for PNG")
        try:
            body = styled_svg(file_path, _options(color, stroke, background, 256))
        except QueryError as exc:
            raise HTTPException(400, one_line(exc)) from None
        return Response(body, media_type="image/svg+xml")

    @app.get(ICON_PNG_ROUTE, dependencies=guarded)
    def icon_png(
        id: Annotated[str, Query(description="an icon_id from a search result")],
        size: Annotated[int, Query(ge=16, le=1024)] = 256,
        color: Annotated[str | None, Query(description="ink colour, hex (e.g. #1a73e8)")] = None,
        stroke: Annotated[float | None, Query(description="stroke width (outline icons), 0.5 to 4")] = None,
        background: Annotated[str | None, Query(description="hex colour; transparent by default")] = None,
    ) -> Response:
        file_path, fmt = _icon_file(id)
        try:
            body = styled_png(file_path, fmt, _options(color, stroke, background, size))
        except QueryError as exc:
            raise HTTPException(400, one_line(exc)) from None
        return Response(body, media_type="image/png")

    return app


@dataclass
class RunningApi:
    url: str
    server: Any
    thread: threading.Thread

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def one_thread_per_forward() -> None:
    """Each model forward on one thread: a server's searches run side by side, and the intra-op
    threads of concurrent forwards on a machine with few cores spin against each other (the
    sentence encoder on a busy 2-core machine: 15 ms a query on one thread, 350 ms on two)."""
    try:
        import torch
    except ImportError:  # keyword search needs no model
        return
    torch.set_num_threads(1)


def worker_app() -> FastAPI:
    """The app of one worker process of a server with several (uvicorn imports it by name): auth
    from the environment, as `serve` reads it."""
    one_thread_per_forward()
    return create_app(parse_auth(os.environ.get(AUTH_ENV), AUTH_ENV), warm=True)


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    block: bool = True,
    parallel: int | None = None,
    workers: int = 1,
) -> RunningApi:
    """Serve the API on host:port (block=False: return once it answers, for tests); `parallel`:
    searches run at once per process (default: four per core). A blocking server owns its
    process: its model forwards then run one thread each (one_thread_per_forward), and `workers`
    processes share the port. Several are what uses several cores: most of a search's work
    outside the model forwards is Python, which runs one thread at a time per process (on 2
    cores, one process answered 8 clients at 78 requests/s with 1.25 cores busy)."""
    import time

    import uvicorn

    auth = parse_auth(os.environ.get(AUTH_ENV), AUTH_ENV)
    if host not in LOOPBACK and auth is None:
        print(
            f"warning: serving the search API on {host} without a password; set {AUTH_ENV}=user:password",
            file=sys.stderr,
        )
    url = f"http://{host}:{port}/"
    if block and workers > 1:
        print(f"search API on {url}api/search, {workers} worker processes (Ctrl-C to stop)")
        uvicorn.run(
            f"{__name__}:worker_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
        )
        return RunningApi(url, None, threading.current_thread())
    app = create_app(auth, parallel, warm=block)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if block:
        one_thread_per_forward()
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
