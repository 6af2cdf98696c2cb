"""The HTTP search API under hostile input, with auth, on an index that is not ready, and under
concurrent clients; and the renderer's named failures behind it. Real files, the API served on
127.0.0.1 and called over HTTP, a real PostgreSQL database per test."""

from __future__ import annotations

import base64
import hashlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest

from icon_pipeline.library.records import IconRecord
from icon_pipeline.render.rasterize import (
    MAX_SVG_DEPTH,
    RenderError,
    RenderSettings,
    RenderStore,
    render_batch,
    render_icon,
    render_icon_isolated,
)
from icon_pipeline.search.coalesce import CoalescedCalls

SVG_OPEN = (
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 24 24">'
)
SQUARE = '<path d="M4 4h16v16H4z"/>'


def nested_svg(levels: int) -> str:
    """`levels` nested <g> around a square (the document is levels + 2 elements deep)."""
    return SVG_OPEN + "<g>" * levels + SQUARE + "</g>" * levels + "</svg>"


DEEP_SVG = nested_svg(100_000)
# cairo computes the circle's outline from its radius: an infinite one never finishes drawing.
ENDLESS_SVG = SVG_OPEN + '<circle cx="12" cy="12" r="1e999"/></svg>'


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def record_for(path: Path) -> IconRecord:
    return IconRecord(
        icon_id=f"test:{path.name}",
        source="test",
        name=path.stem,
        raw_name=path.stem,
        file_path=str(path),
        format="svg",
        content_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


# --- the renderer -----------------------------------------------------------------------------------


def test_a_deeply_nested_svg_is_a_named_render_failure(tmp_path: Path) -> None:
    deep = write(tmp_path, "deep.svg", DEEP_SVG)
    with pytest.raises(RenderError) as caught:
        render_icon(deep)
    assert caught.value.reason == f"SVG nesting too deep (more than {MAX_SVG_DEPTH} levels of elements)"
    # Just inside the limit still renders, from a thread already deep in calls (as in a server).
    inside = write(tmp_path, "inside.svg", nested_svg(MAX_SVG_DEPTH - 2))
    drawn: list[np.ndarray] = []

    def render_from_depth(calls: int) -> None:
        if calls:
            render_from_depth(calls - 1)
        else:
            drawn.append(np.asarray(render_icon(inside)))

    worker = threading.Thread(target=render_from_depth, args=(150,))
    worker.start()
    worker.join()
    assert drawn and drawn[0].min() < 60  # the square is drawn in the theme's dark foreground

    # A render batch records it as that icon's failure and renders the rest.
    square = write(tmp_path, "square.svg", SVG_OPEN + SQUARE + "</svg>")
    result = render_batch(
        [record_for(deep), record_for(square)],
        RenderSettings(),
        RenderStore(tmp_path / "store"),
        workers=1,
        show_progress_bar=False,
    )
    outcomes = result.by_icon()
    assert outcomes["test:deep.svg"].status == "failed"
    assert outcomes["test:deep.svg"].reason == caught.value.reason
    assert outcomes["test:square.svg"].status == "rendered"


@pytest.mark.parametrize(
    ("body", "loop"),
    [
        ('<g id="a">' + SQUARE + '<use xlink:href="#a"/></g>', "#a draws #a"),
        (
            '<defs><g id="a"><use href="#b"/></g><g id="b"><use href="#a"/></g></defs><use href="#a"/>',
            "#a draws #b draws #a",
        ),
        (
            '<defs><pattern id="p" width="4" height="4" patternUnits="userSpaceOnUse">'
            '<rect width="2" height="2" fill="url(#p)"/></pattern></defs>'
            '<rect width="9" height="9" fill="url(#p)"/>',
            "#p draws #p",
        ),
        (
            '<defs><clipPath id="c"><rect width="20" height="20" clip-path="url(#c)"/></clipPath></defs>'
            '<rect width="9" height="9" clip-path="url(#c)"/>',
            "#c draws #c",
        ),
    ],
)
def test_an_svg_that_draws_itself_is_named(tmp_path: Path, body: str, loop: str) -> None:
    path = write(tmp_path, "loop.svg", SVG_OPEN + SQUARE + body + "</svg>")
    with pytest.raises(RenderError) as caught:
        render_icon(path)
    assert caught.value.reason.startswith(f"SVG refers to itself: {loop} "), caught.value.reason


def test_reused_drawings_are_not_loops(tmp_path: Path) -> None:
    body = (
        '<defs><g id="a">'
        + SQUARE
        + '</g><g id="b"><use href="#a"/></g></defs><use href="#b"/><use href="#a"/>'
    )
    assert np.asarray(render_icon(write(tmp_path, "reuse.svg", SVG_OPEN + body + "</svg>"))).min() < 60


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('<rect width="10" height="10" opacity="x"/>', "an attribute or style that needs a number holds 'x'"),
        (
            '<g transform="scale(1e300)">' + SQUARE + "</g>",
            "a transform, size or font size scales part of the drawing to zero or infinity",
        ),
    ],
)
def test_renderer_failures_say_what_is_wrong(tmp_path: Path, body: str, reason: str) -> None:
    with pytest.raises(RenderError) as caught:
        render_icon(write(tmp_path, "bad.svg", SVG_OPEN + body + "</svg>"))
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert "Error:" not in caught.value.reason  # what is wrong, not which exception


def test_refused_xml_names_what_it_declares(tmp_path: Path) -> None:
    text = (
        '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
        + SVG_OPEN
        + "<text>&secret;</text></svg>"
    )
    with pytest.raises(RenderError) as caught:
        render_icon(write(tmp_path, "xxe.svg", text))
    assert caught.value.reason == (
        "XML entities are not allowed (the file declares <!ENTITY secret> pointing at 'file:///etc/passwd')"
    )


def test_an_svg_that_never_finishes_is_stopped_off_the_main_thread(tmp_path: Path) -> None:
    """In a server thread the in-process alarm cannot run: the isolated render stops it anyway."""
    path = write(tmp_path, "endless.svg", ENDLESS_SVG)
    found: list[BaseException] = []

    def render() -> None:
        try:
            render_icon_isolated(path, RenderSettings(timeout_s=1))
        except RenderError as exc:
            found.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=render, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the render was not stopped"
    assert time.monotonic() - started < 30
    assert [e.reason for e in found] == ["timed out after 1s; the renderer was stopped"]  # type: ignore[attr-defined]
    # The same pool goes on rendering; a named failure comes back from the worker with its reason.
    square = write(tmp_path, "square.svg", SVG_OPEN + SQUARE + "</svg>")
    assert np.asarray(render_icon_isolated(square)).min() < 60
    with pytest.raises(RenderError) as caught:
        render_icon_isolated(write(tmp_path, "deep.svg", DEEP_SVG))
    assert caught.value.reason.startswith("SVG nesting too deep")


# --- concurrent searches share forwards ---------------------------------------------------------------


def test_coalesced_embed_answers_each_caller_with_its_own_rows() -> None:
    batches: list[list[str]] = []
    gate = threading.Event()

    def embed(texts: list[str]) -> np.ndarray:
        if not batches:
            gate.wait(timeout=10)  # the first forward runs while the others queue up
        batches.append(list(texts))
        return np.array([[float(len(t)), float(t.count("a"))] for t in texts])

    coalesced = CoalescedCalls()
    texts = [f"query {'a' * i}" for i in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(coalesced, embed, [text]) for text in texts]
        time.sleep(0.5)
        gate.set()
        results = [future.result(timeout=30) for future in futures]
    for text, rows in zip(texts, results, strict=True):
        assert rows.tolist() == [[float(len(text)), float(text.count("a"))]]
    assert sum(len(b) for b in batches) == len(texts)
    assert len(batches) < len(texts)  # the ones that waited went together

    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("encoder unusable")

    with pytest.raises(RuntimeError, match="encoder unusable"):
        coalesced(broken, ["x"])
    assert coalesced(embed, ["after"]).tolist() == [[5.0, 1.0]]  # the next caller leads again


# --- over HTTP ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def api(pipeline_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The API on a fresh data root and an empty database of its own, no auth."""
    from icon_pipeline.apps.api import serve

    monkeypatch.delenv("ICON_PIPELINE_APP_AUTH", raising=False)
    running = serve(port=free_port(), block=False, parallel=3)
    try:
        yield running.url
    finally:
        running.close()


def test_api_answers_4xx_with_the_reason_for_hostile_svgs(api: str) -> None:
    by_body = httpx.post(api + "api/search/image", content=DEEP_SVG.encode(), timeout=60)
    assert by_body.status_code == 400, by_body.text
    assert "SVG nesting too deep (more than 256 levels of elements)" in by_body.json()["detail"]
    encoded = base64.b64encode(DEEP_SVG.encode()).decode()
    by_json = httpx.post(api + "api/search", json={"image": encoded}, timeout=60)
    assert by_json.status_code == 400 and "SVG nesting too deep" in by_json.json()["detail"]
    looped = SVG_OPEN + '<g id="a">' + SQUARE + '<use href="#a"/></g></svg>'
    answer = httpx.post(api + "api/search/image", content=looped.encode(), timeout=60)
    assert answer.status_code == 400 and "SVG refers to itself: #a draws #a" in answer.json()["detail"]

    # A file the renderer would draw forever: stopped at the render time limit, the server unharmed.
    started = time.monotonic()
    endless = httpx.post(api + "api/search/image", content=ENDLESS_SVG.encode(), timeout=120)
    assert endless.status_code == 400 and "timed out" in endless.json()["detail"], endless.text
    assert time.monotonic() - started < 60
    assert httpx.get(api + "api/docs", timeout=30).status_code == 200


def test_api_docs_and_schema_need_the_same_credentials(
    pipeline_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icon_pipeline.apps.api import serve

    monkeypatch.setenv("ICON_PIPELINE_APP_AUTH", "ana:let-me-in")
    running = serve(port=free_port(), block=False)
    try:
        for path in ("api/docs", "api/redoc", "api/openapi.json"):
            refused = httpx.get(running.url + path, timeout=30)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Basic", path
            wrong = httpx.get(running.url + path, auth=("ana", "nope"), timeout=30)
            assert wrong.status_code == 401, path
            assert httpx.get(running.url + path, auth=("ana", "let-me-in"), timeout=30).status_code == 200
        for path in ("docs", "redoc", "openapi.json"):  # FastAPI's own, unguarded, places
            assert httpx.get(running.url + path, timeout=30).status_code == 404, path
        schema = httpx.get(running.url + "api/openapi.json", auth=("ana", "let-me-in"), timeout=30).json()
        assert "/api/search" in schema["paths"] and "/api/docs" not in schema["paths"]
    finally:
        running.close()

    monkeypatch.delenv("ICON_PIPELINE_APP_AUTH")
    running = serve(port=free_port(), block=False)
    try:
        for path in ("api/docs", "api/redoc", "api/openapi.json"):
            assert httpx.get(running.url + path, timeout=30).status_code == 200, path
        assert "swagger" in httpx.get(running.url + "api/docs", timeout=30).text.lower()
    finally:
        running.close()


def test_api_with_worker_processes_serves_with_auth_from_the_environment(
    pipeline_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`icon-pipeline api --workers 2`: two processes on one port (what uses two cores; each search
    is mostly Python, one thread at a time per process), the same answers and the same sign-in."""
    monkeypatch.setenv("ICON_PIPELINE_APP_AUTH", "ana:let-me-in")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "icon_pipeline.cli", "api", "--port", str(port), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                answer = httpx.get(url + "api/models", timeout=30)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "the API did not start"
                time.sleep(0.3)
        assert answer.status_code == 401
        with httpx.Client(base_url=url, auth=("ana", "let-me-in"), timeout=60) as client:
            # Separate connections, so both processes answer some of them.
            answers = [client.get("api/models", headers={"Connection": "close"}) for _ in range(6)]
        for answer in answers:  # nothing indexed yet: the one-line reason, from either process
            assert_one_line_503(answer, "icon_embeddings")
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=60)
    assert "2 worker processes" in output and "let-me-in" not in output
    assert "Traceback" not in output, output


def assert_one_line_503(answer: httpx.Response, *words: str) -> str:
    assert answer.status_code == 503, answer.text
    detail = answer.json()["detail"]
    assert "\n" not in detail and "Traceback" not in answer.text, detail
    for word in words:
        assert word in detail, detail
    return detail


def write_empty_catalog() -> None:
    """A catalog with no icon and its (empty) training pairs, as a scan of an empty share leaves."""
    import pandas as pd

    from icon_pipeline.core.storage import pairs_path, write_table
    from icon_pipeline.library.catalog import write_catalog

    write_catalog([])
    write_table(pd.DataFrame({"group_id": [], "members": [], "captions": []}), pairs_path())


def test_search_on_an_empty_or_unready_index_is_a_one_line_503(api: str) -> None:
    # Nothing materialized yet: no catalog, no index tables.
    assert_one_line_503(httpx.get(api + "api/search", params={"q": "bell"}, timeout=60), "icon_embeddings")
    assert_one_line_503(httpx.get(api + "api/models", timeout=60), "icon_embeddings")
    assert_one_line_503(
        httpx.get(api + "api/search", params={"q": "bell", "model": "bm25"}, timeout=60), "materialize"
    )
    # A catalog that holds no icon (the keyword index cannot be built on nothing).
    write_empty_catalog()
    for params in ({"q": "bell", "model": "bm25"}, {"q": "bell"}):
        assert_one_line_503(httpx.get(api + "api/search", params=params, timeout=60), "materialize")
    # The image route too: the file is fine, the index is not.
    square = (SVG_OPEN + SQUARE + "</svg>").encode()
    assert_one_line_503(httpx.post(api + "api/search/image", content=square, timeout=60), "materialize")


def write_small_library() -> list[str]:
    """A catalog of a few named icons with captions: enough for keyword search (no model needed)."""
    import pandas as pd

    from icon_pipeline.core.storage import pairs_path, write_table
    from icon_pipeline.library.catalog import write_catalog

    names = ["bell", "bell-off", "folder", "trash", "user", "lock", "home", "search"]
    icons = [
        IconRecord(
            icon_id=f"mine:{name}",
            source="mine",
            name=name,
            raw_name=name,
            file_path=f"/nowhere/{name}.svg",
            format="svg",
            content_hash=hashlib.sha256(name.encode()).hexdigest(),
            tags=(name.split("-")[0], "icon"),
        )
        for name in names
    ]
    write_catalog(icons)
    pairs = pd.DataFrame(
        {
            "group_id": [f"g:{n}" for n in names],
            "members": [[f"mine:{n}"] for n in names],
            "captions": [[f"a {n.replace('-', ' ')} symbol"] for n in names],
        }
    )
    write_table(pairs, pairs_path())
    return names


def test_a_kept_search_service_sees_new_captions_without_an_index_rebuild(api: str) -> None:
    """The API keeps a search service per connection and re-reads the index only when it changed;
    the catalog and pairs are read again when they change, even when the index did not."""
    import pandas as pd

    from icon_pipeline.core.database import ensure_database
    from icon_pipeline.core.storage import pairs_path, read_table, write_table
    from icon_pipeline.search.index import ensure_schema, write_fusion_settings

    write_small_library()
    with psycopg.connect(ensure_database().libpq_url, autocommit=True) as conn:
        ensure_schema(conn)  # an index that does not change below
        write_fusion_settings(conn, "{}")

    def found(query: str) -> list[str]:
        answer = httpx.get(api + "api/search", params={"q": query, "model": "bm25"}, timeout=60)
        assert answer.status_code == 200, answer.text
        return [r["icon_id"] for r in answer.json()["results"]]

    assert found("bell") and "mine:lock" not in found("umbrella")
    pairs = read_table(pairs_path(), "training pairs")
    pairs["captions"] = [
        [*captions, "an umbrella for rain"] if group == "g:lock" else list(captions)
        for group, captions in zip(pairs["group_id"], pairs["captions"], strict=True)
    ]
    write_table(pd.DataFrame(pairs), pairs_path())
    assert found("umbrella")[0] == "mine:lock"


def test_concurrent_searches_answer_alike_on_kept_connections(api: str) -> None:
    """16 clients at once get what one gets alone; the searches run on connections the API keeps
    (at most `parallel` of them) instead of one opened and closed per request."""
    from icon_pipeline.core.database import ensure_database

    names = write_small_library()
    queries = [name.replace("-", " ") for name in names] * 4

    def ask(query: str) -> list[str]:
        answer = httpx.get(api + "api/search", params={"q": query, "model": "bm25", "k": 3}, timeout=60)
        assert answer.status_code == 200, answer.text
        return [r["icon_id"] for r in answer.json()["results"]]

    alone = [ask(q) for q in queries]
    assert alone[0][0] == "mine:bell"
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(ask, queries))
    assert together == alone

    def backends() -> set[int]:
        url = ensure_database().libpq_url
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        return {pid for (pid,) in rows}

    kept = backends()
    assert 1 <= len(kept) <= 3, kept  # serve(parallel=3)
    for query in queries[:6]:
        ask(query)
    assert backends() == kept  # the same connections again
