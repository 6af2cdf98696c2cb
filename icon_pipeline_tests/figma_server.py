"""A Figma-shaped HTTP server on 127.0.0.1 for tests: real sockets, responses shaped like the spec.

Shapes follow the official OpenAPI spec (npm `@figma/rest-api-spec`): `GET /v1/files/:key`,
`GET /v1/images/:key?ids=..&format=svg`, errors as `{status, err}` or `{error: true, status, message}`,
auth by the `X-Figma-Token` header. Image URLs point back at this server (`/cdn/...`), standing in
for Figma's pre-signed S3 URLs, and need no token.

Knobs: `fail(endpoint, status, times, retry_after)` injects 429/5xx, `null_image_ids` makes a render
fail, `max_ids_per_request` refuses over-long id lists as Figma refuses a request that is too large
(`{"status": 400, "err": "Request too large. ..."}`; `too_large_status` 413 or 414 for the answers of
the front ends before it), `oversized_ids` are nodes too large to export in any request, even alone,
and `files[key].bump()` publishes a new version. Usage:

    with FigmaTestServer({"KIT": tabler_figma_file(tabler_dir, "KIT")}, token="t") as server:
        client = FigmaClient("t", api_url=server.url)
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

Endpoint = Literal["files", "images", "cdn"]


def _cdn_name(node_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", node_id.replace(":", "-"))


@dataclass
class FigmaFile:
    """One Figma file as the API describes it, plus the SVG each node exports to."""

    key: str
    name: str
    version: str
    last_modified: str
    document: dict[str, Any]
    components: dict[str, Any]
    component_sets: dict[str, Any]
    svgs: dict[str, bytes]  # node id -> exported SVG

    def bump(self) -> None:
        """Publish a new version, as an edit in Figma would."""
        self.version = str(int(self.version) + 1)
        previous = datetime.fromisoformat(self.last_modified.replace("Z", "+00:00"))
        self.last_modified = (previous + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def body(self, depth: int | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": "viewer",
            "lastModified": self.last_modified,
            "editorType": "figma",
            "thumbnailUrl": f"https://example.invalid/thumbnails/{self.key}.png",
            "version": self.version,
            "document": _truncate(self.document, depth),
            "components": self.components,
            "componentSets": self.component_sets,
            "schemaVersion": 0,
            "styles": {},
        }


def _truncate(node: dict[str, Any], depth: int | None) -> dict[str, Any]:
    """The `depth` query parameter: 1 = pages only, 2 = pages and their top-level nodes."""
    copy = {k: v for k, v in node.items() if k != "children"}
    if "children" in node:
        if depth is None:
            copy["children"] = [_truncate(child, None) for child in node["children"]]
        elif depth > 0:
            copy["children"] = [_truncate(child, depth - 1) for child in node["children"]]
    return copy


# (page, top-level frame or None, [component entries]); an entry is either
# ("component", node id, name, tabler name, style, description) or
# ("set", node id, name, description, [(node id, variant name, tabler name, style, description)]).
_LAYOUT: list[tuple[str, str, str | None, str | None, list[tuple[Any, ...]]]] = [
    (
        "0:1",
        "Icons",
        "1:1",
        "System",
        [
            ("component", "1:2", "search", "search", "outline", "find, magnifier, magnifying glass"),
            ("component", "1:3", "settings", "settings", "outline", "cog; gear\npreferences"),
            ("component", "1:4", "actions/bell", "bell", "outline", "notification, alert"),
            (
                "component",
                "1:5",
                "trash",
                "trash",
                "outline",
                "Use this icon for deleting a file or a folder.",
            ),
        ],
    ),
    (
        "0:1",
        "Icons",
        "1:10",
        "Buildings",
        [("component", "1:11", "home", "home", "outline", "house, homepage")],
    ),
    (
        "0:2",
        "Variants",
        "2:1",
        "Shapes",
        [
            (
                "set",
                "2:2",
                "heart",
                "love, like",
                [
                    ("2:3", "Style=Outline", "heart", "outline", ""),
                    ("2:4", "Style=Filled", "heart", "filled", "wishlist"),
                ],
            ),
            (
                "set",
                "2:5",
                "star",
                "",
                [
                    ("2:6", "Size=24, Style=Outline", "star", "outline", "favorite, rating"),
                    ("2:7", "Size=24, Style=Filled", "star", "filled", "favorite, rating"),
                ],
            ),
            ("instance", "I2:8;1:11", "home"),
        ],
    ),
    ("0:2", "Variants", None, None, [("component", "3:1", "user", "user", "outline", "")]),
]


def tabler_figma_file(
    tabler_dir: Path,
    key: str = "TablerKit",
    name: str = "Tabler kit",
    version: str = "4000000001",
    last_modified: str = "2026-11-02T10:00:00Z",
) -> FigmaFile:
    """A file built from real Tabler icons: 2 pages with icons (plus one without), frames, plain
    components (one with a slash path, one with a sentence as description), two component sets
    with outline/filled variants, an instance (not an icon) and a component placed on the page.

    Node ids and names: Icons/System 1:2 search, 1:3 settings, 1:4 actions/bell, 1:5 trash;
    Icons/Buildings 1:11 home; Variants/Shapes set heart 2:2 (2:3 outline, 2:4 filled), set star 2:5
    (2:6 outline, 2:7 filled); Variants (on the page) 3:1 user.
    """
    icons_dir = Path(tabler_dir) / "icons"
    components: dict[str, Any] = {}
    component_sets: dict[str, Any] = {}
    svgs: dict[str, bytes] = {}
    pages: dict[str, dict[str, Any]] = {}

    def component_node(node_id: str, name: str, tabler: str, style: str, description: str, set_id: str = ""):
        svgs[node_id] = (icons_dir / style / f"{tabler}.svg").read_bytes()
        meta = {
            "key": f"k{_cdn_name(node_id)}",
            "name": name,
            "description": description,
            "documentationLinks": [],
            "remote": False,
        }
        if set_id:
            meta["componentSetId"] = set_id
        components[node_id] = meta
        return {
            "id": node_id,
            "name": name,
            "type": "COMPONENT",
            "absoluteBoundingBox": {"x": 0, "y": 0, "width": 24, "height": 24},
            "children": [{"id": f"{node_id}-v", "name": "Vector", "type": "VECTOR"}],
        }

    for page_id, page_name, frame_id, frame_name, entries in _LAYOUT:
        page = pages.setdefault(
            page_id,
            {"id": page_id, "name": page_name, "type": "CANVAS", "children": [], "backgroundColor": {}},
        )
        nodes: list[dict[str, Any]] = []
        for entry in entries:
            if entry[0] == "component":
                _, node_id, comp_name, tabler, style, description = entry
                nodes.append(component_node(node_id, comp_name, tabler, style, description))
            elif entry[0] == "set":
                _, set_id, set_name, set_description, variants = entry
                component_sets[set_id] = {
                    "key": f"k{_cdn_name(set_id)}",
                    "name": set_name,
                    "description": set_description,
                    "documentationLinks": [],
                    "remote": False,
                }
                children = [
                    component_node(vid, vname, tabler, style, vdesc, set_id)
                    for vid, vname, tabler, style, vdesc in variants
                ]
                nodes.append({"id": set_id, "name": set_name, "type": "COMPONENT_SET", "children": children})
            else:
                _, node_id, instance_of = entry
                nodes.append(
                    {
                        "id": node_id,
                        "name": instance_of,
                        "type": "INSTANCE",
                        "componentId": "1:11",
                        "children": [{"id": f"{node_id};v", "name": "Vector", "type": "VECTOR"}],
                    }
                )
        if frame_id is None:
            page["children"].extend(nodes)
        else:
            page["children"].append({"id": frame_id, "name": frame_name, "type": "FRAME", "children": nodes})
    notes = {
        "id": "0:3",
        "name": "Notes",
        "type": "CANVAS",
        "children": [{"id": "4:1", "name": "Read me", "type": "TEXT"}],
    }
    document = {"id": "0:0", "name": "Document", "type": "DOCUMENT", "children": [*pages.values(), notes]}
    return FigmaFile(key, name, version, last_modified, document, components, component_sets, svgs)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Fault:
    status: int
    remaining: int | None  # None: forever
    retry_after: str | None = None
    error_shape: Literal["err", "error"] = "err"
    headers: dict[str, str] = field(default_factory=dict)


class FigmaTestServer:
    """Context manager: a threaded Figma-shaped server on 127.0.0.1:<free port>."""

    def __init__(
        self,
        files: dict[str, FigmaFile] | None = None,
        token: str = "figd_test-token",
        max_ids_per_request: int = 3,
    ) -> None:
        self.files: dict[str, FigmaFile] = dict(files or {})
        self.token = token
        self.max_ids_per_request = max_ids_per_request
        self.too_large_status = 400
        self.oversized_ids: set[str] = set()
        self.null_image_ids: set[str] = set()
        self.requests: list[RecordedRequest] = []
        self._faults: dict[str, list[Fault]] = {"files": [], "images": [], "cdn": []}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- knobs -----------------------------------------------------------------------------------

    def fail(
        self,
        endpoint: Endpoint,
        status: int,
        times: int | None = 1,
        retry_after: str | None = None,
        error_shape: Literal["err", "error"] = "err",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` requests to `endpoint` (None: all of them) with `status`."""
        with self._lock:
            self._faults[endpoint].append(Fault(status, times, retry_after, error_shape, dict(headers or {})))

    def heal(self) -> None:
        """Drop every fault still pending: the server answers normally again."""
        with self._lock:
            for faults in self._faults.values():
                faults.clear()

    def requests_to(self, endpoint: Endpoint) -> list[RecordedRequest]:
        prefix = {"files": "/v1/files/", "images": "/v1/images/", "cdn": "/cdn/"}[endpoint]
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> FigmaTestServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="figma-test-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- request handling (called from the handler thread) ---------------------------------------

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            queue = self._faults[endpoint]
            if not queue:
                return None
            fault = queue[0]
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.pop(0)
            return fault

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append(RecordedRequest(method, parts.path, query, headers))
        segments = parts.path.strip("/").split("/")
        if segments[:2] == ["v1", "files"] and len(segments) == 3:
            endpoint = "files"
        elif segments[:2] == ["v1", "images"] and len(segments) == 3:
            endpoint = "images"
        elif segments[0] == "cdn" and len(segments) == 3:
            endpoint = "cdn"
        else:
            return _error(404, "Not found")
        if endpoint != "cdn" and headers.get("x-figma-token") != self.token:
            return _error(403, "Invalid token")
        if (fault := self._take_fault(endpoint)) is not None:
            extra = dict(fault.headers)
            if fault.retry_after is not None:
                extra["Retry-After"] = fault.retry_after
            message = "Rate limit exceeded" if fault.status == 429 else "Internal server error"
            status, base_headers, body = _error(fault.status, message, fault.error_shape)
            return status, {**base_headers, **extra}, body
        file = self.files.get(segments[2] if endpoint != "cdn" else segments[1])
        if file is None:
            return _error(404, "Not found")
        if endpoint == "files":
            depth = int(float(query["depth"])) if "depth" in query else None
            return _json(200, file.body(depth))
        if endpoint == "images":
            return self._images(file, query)
        node_file = segments[2].removesuffix(".svg")
        by_name = {_cdn_name(node_id): svg for node_id, svg in file.svgs.items()}
        if node_file not in by_name:
            return 404, {"Content-Type": "application/xml"}, b"<Error><Code>NoSuchKey</Code></Error>"
        return 200, {"Content-Type": "image/svg+xml"}, by_name[node_file]

    def _images(self, file: FigmaFile, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        ids = [i for i in query.get("ids", "").split(",") if i]
        if not ids:
            return _error(400, "Missing ids")
        if query.get("format") != "svg":
            return _error(400, "this test server only exports format=svg")
        if len(ids) > self.max_ids_per_request or self.oversized_ids.intersection(ids):
            if self.too_large_status == 413:
                return 413, {"Content-Type": "text/html"}, b"<html><body>413 Payload Too Large</body></html>"
            if self.too_large_status == 414:
                return (
                    414,
                    {"Content-Type": "text/html"},
                    b"<html><body>414 Request-URI Too Large</body></html>",
                )
            # Figma's own words for a request that asks for too much at once.
            return _error(400, "Request too large. If applicable, filter by query params.")
        images = {
            node_id: (
                None
                if node_id in self.null_image_ids or node_id not in file.svgs
                else f"{self.url}/cdn/{file.key}/{_cdn_name(node_id)}.svg"
            )
            for node_id in ids
        }
        return _json(200, {"err": None, "images": images})


def _json(status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(body).encode()


def _error(
    status: int, message: str, shape: Literal["err", "error"] = "err"
) -> tuple[int, dict[str, str], bytes]:
    if shape == "error":
        return _json(status, {"error": True, "status": status, "message": message})
    return _json(status, {"status": status, "err": message})


def _make_handler(server: FigmaTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client pools connections

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, response_headers, body = server.handle("GET", self.path, headers)
            self.send_response(status)
            for name, value in response_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .requests instead
            pass

    return Handler
