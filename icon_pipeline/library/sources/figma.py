"""Figma as an icon source: a small REST client and a scan that turns components into SVG icons.

Request and response shapes follow the official OpenAPI spec (npm
`@figma/rest-api-spec`, openapi/openapi.yaml):

- `GET /v1/files/:key` -> {name, version, lastModified, document (DOCUMENT > CANVAS pages > nodes),
  components: {node id: {key, name, description, componentSetId?, ...}}, componentSets: {...}}
- `GET /v1/images/:key?ids=a,b&format=svg` -> {err: null, images: {node id: url | null}}
- errors -> {status, err} or {error: true, status, message}; auth header `X-Figma-Token`.

Icons are exported as SVG and rasterized locally: `scale` caps at 4, so a 24 px icon would come back
at 96 px at most as PNG.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from icon_pipeline.core.http import parse_retry_after
from icon_pipeline.library.records import IconRecord, SourceFailure, SourceScan, sha256_bytes, stable_id

log = logging.getLogger(__name__)

# Figma file keys are short alphanumeric strings; anything else would end up in a URL path and a
# directory name, so it is refused before any request is made.
_FILE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Variant properties that say how an icon is drawn (outline/filled/...), as opposed to its size.
_STYLE_PROPERTIES = ("style", "theme", "type", "variant", "appearance", "weight")
_STOPWORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "its", "of"}
    | {"on", "or", "that", "the", "this", "to", "use", "used", "when", "with"}
)


class FigmaError(RuntimeError):
    """A Figma request that failed for good; the message names the file key, never the token."""

    def __init__(
        self,
        message: str,
        *,
        file_key: str = "",
        endpoint: str = "",
        status: int | None = None,
        retry_after_s: float | None = None,
        item_problem: bool = False,
        said: str = "",
    ) -> None:
        super().__init__(message)
        self.file_key = file_key
        self.endpoint = endpoint
        self.status = status
        self.retry_after_s = retry_after_s
        self.said = said  # Figma's own error text, when it gave one
        # True: the item itself is unusable (a download over the size limit), not the source.
        self.item_problem = item_problem


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: httpx.Headers
    content: bytes


class FigmaClient:
    """Figma REST API client with bounded retries: 429 `Retry-After` (capped), 5xx and network errors.

    The token is sent only to `api_url`; image export URLs (S3 on the real service) are fetched
    without it so it never leaves Figma's API host.
    """

    def __init__(
        self,
        token: str,
        api_url: str = "https://api.figma.com",
        timeout_s: float = 30.0,
        max_retries: int = 4,
        max_retry_after_s: float = 60.0,
        ids_per_request: int = 100,
        transport: httpx.BaseTransport | None = None,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_download_bytes: int = 20_000_000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ValueError("a Figma personal access token is required (set FIGMA_TOKEN)")
        if ids_per_request < 1:
            raise ValueError(f"ids_per_request must be >= 1, got {ids_per_request}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self._token = token
        self.api_url = api_url.rstrip("/")
        self.max_retries = max_retries
        self.max_retry_after_s = max_retry_after_s
        self.ids_per_request = ids_per_request
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_download_bytes = max_download_bytes
        self._sleep = sleep
        timeout = httpx.Timeout(timeout_s)
        self._api = httpx.Client(
            base_url=self.api_url, headers={"X-Figma-Token": token}, timeout=timeout, transport=transport
        )
        self._cdn = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True)

    def __repr__(self) -> str:
        return f"FigmaClient(api_url={self.api_url!r}, token=<redacted>)"

    def __enter__(self) -> FigmaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._api.close()
        self._cdn.close()

    # -- endpoints -------------------------------------------------------------------------------

    def get_file(self, file_key: str, depth: int | None = None) -> dict[str, Any]:
        """GET /v1/files/:key: the document tree plus `components`, `componentSets`, `version`."""
        _check_file_key(file_key)
        params = {"depth": str(depth)} if depth is not None else None
        endpoint = f"GET /v1/files/{file_key}"
        reply = self._get(self._api, f"/v1/files/{file_key}", params, file_key=file_key, endpoint=endpoint)
        return self._json(reply, file_key, endpoint)

    def get_svg_urls(
        self, file_key: str, ids: Sequence[str], refused: dict[str, str] | None = None
    ) -> dict[str, str | None]:
        """GET /v1/images/:key?format=svg in chunks of `ids_per_request`; a failed render maps to None.

        A chunk Figma refuses as too large (a 400 about too many ids or too large a request, a 413,
        a 414) is halved and retried, down to one id; later chunks keep to the size that worked.
        An id refused even alone maps to None with the reason in `refused` (without `refused`:
        raises that FigmaError), and the other ids go on.
        """
        _check_file_key(file_key)
        unique_ids = list(dict.fromkeys(ids))
        urls: dict[str, str | None] = {}
        size = self.ids_per_request
        start = 0
        while start < len(unique_ids):
            chunk = unique_ids[start : start + size]
            start += len(chunk)
            accepted = self._svg_urls_halving(file_key, chunk, urls, refused)
            if 0 < accepted < len(chunk):
                size = accepted
        return urls

    def _svg_urls_halving(
        self, file_key: str, chunk: list[str], urls: dict[str, str | None], refused: dict[str, str] | None
    ) -> int:
        """Export URLs of `chunk` into `urls`; the size of the largest request Figma accepted."""
        endpoint = f"GET /v1/images/{file_key}"
        try:
            urls.update(self._svg_urls_once(file_key, chunk, endpoint))
            return len(chunk)
        except FigmaError as exc:
            if not _batch_too_large(exc):
                raise
            if len(chunk) == 1:
                if refused is None:
                    raise
                node_id = chunk[0]
                refused[node_id] = (
                    f"Figma refused to export it even on its own ({exc.status}): {exc.said or exc}"
                )
                urls[node_id] = None
                log.warning(
                    "%s for file %s: node %s refused on its own: %s", endpoint, file_key, node_id, exc
                )
                return 0
            half = (len(chunk) + 1) // 2
            log.warning(
                "%s for file %s: %d ids refused as too large (%s); retrying as %d + %d",
                endpoint,
                file_key,
                len(chunk),
                exc.status,
                half,
                len(chunk) - half,
            )
            return max(
                self._svg_urls_halving(file_key, chunk[:half], urls, refused),
                self._svg_urls_halving(file_key, chunk[half:], urls, refused),
            )

    def _svg_urls_once(self, file_key: str, chunk: list[str], endpoint: str) -> dict[str, str | None]:
        params = {"ids": ",".join(chunk), "format": "svg"}
        reply = self._get(self._api, f"/v1/images/{file_key}", params, file_key=file_key, endpoint=endpoint)
        body = self._json(reply, file_key, endpoint)
        if body.get("err"):
            raise FigmaError(
                f"{endpoint} failed for file {file_key}: {self._redact(str(body['err']))}",
                file_key=file_key,
                endpoint=endpoint,
                status=reply.status,
                said=self._redact(str(body["err"])),
            )
        images = body.get("images") or {}
        # The spec promises every requested id in the map; a missing one is treated as null.
        return {
            node_id: url if isinstance(url, str) and url else None
            for node_id in chunk
            for url in [images.get(node_id)]
        }

    def download(self, url: str, file_key: str = "") -> bytes:
        """Fetch an exported image URL (without the token), at most `max_download_bytes`."""
        endpoint = "image download"
        reply = self._get(
            self._cdn, url, None, file_key=file_key, endpoint=endpoint, max_bytes=self.max_download_bytes
        )
        return reply.content

    # -- plumbing --------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<redacted>")

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_base_s * (2**attempt))

    def _fetch_once(
        self, client: httpx.Client, url: str, params: dict[str, str] | None, max_bytes: int | None
    ) -> _Reply:
        request = client.build_request("GET", url, params=params)
        response = client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise _TooLarge(size)
                chunks.append(chunk)
            return _Reply(response.status_code, response.headers, b"".join(chunks))
        finally:
            response.close()

    def _get(
        self,
        client: httpx.Client,
        url: str,
        params: dict[str, str] | None,
        *,
        file_key: str,
        endpoint: str,
        max_bytes: int | None = None,
    ) -> _Reply:
        where = f"{endpoint} for file {file_key}" if file_key else endpoint
        attempt = 0
        while True:
            attempts = attempt + 1
            try:
                reply = self._fetch_once(client, url, params, max_bytes)
            except _TooLarge as exc:
                raise FigmaError(
                    f"{where}: response larger than {max_bytes} bytes (read {exc.size})",
                    file_key=file_key,
                    endpoint=endpoint,
                    item_problem=True,
                ) from None
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    raise FigmaError(
                        f"{where} failed after {attempts} attempts: "
                        f"{type(exc).__name__}: {self._redact(str(exc))}",
                        file_key=file_key,
                        endpoint=endpoint,
                    ) from None
                delay = self._backoff(attempt)
                log.warning("%s: %s, retrying in %.2f s", where, type(exc).__name__, delay)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:  # not worth retrying: bad URL, bad encoding
                raise FigmaError(
                    f"{where} failed: {type(exc).__name__}: {self._redact(str(exc))}",
                    file_key=file_key,
                    endpoint=endpoint,
                ) from None
            else:
                if reply.status < 400:
                    return reply
                if reply.status == 429:
                    delay = self._rate_limit_delay(reply, attempt, file_key=file_key, endpoint=endpoint)
                    log.warning("%s: rate limited (429), retrying in %.2f s", where, delay)
                elif reply.status >= 500:
                    if attempt >= self.max_retries:
                        raise FigmaError(
                            f"{where} failed with status {reply.status} after {attempts} attempts: "
                            f"{self._error_text(reply)}",
                            file_key=file_key,
                            endpoint=endpoint,
                            status=reply.status,
                        )
                    delay = self._backoff(attempt)
                    log.warning("%s: status %d, retrying in %.2f s", where, reply.status, delay)
                else:
                    raise self._client_error(reply, file_key=file_key, endpoint=endpoint)
            self._sleep(delay)
            attempt += 1

    def _rate_limit_delay(self, reply: _Reply, attempt: int, *, file_key: str, endpoint: str) -> float:
        retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        subject = f"file {file_key}" if file_key else endpoint
        details = [endpoint]
        if limit_type := reply.headers.get("X-Figma-Rate-Limit-Type"):
            details.append(f"limit type {limit_type}")
        if retry_after is not None and retry_after > self.max_retry_after_s:
            # Figma has been seen asking for days; sleeping that long inside a run helps nobody.
            raise FigmaError(
                f"rate limited by Figma for {retry_after:.0f} s ({_human_duration(retry_after)}) "
                f"on {subject}; retry later (more than the {self.max_retry_after_s:.0f} s this client waits; "
                f"{', '.join(details)})",
                file_key=file_key,
                endpoint=endpoint,
                status=429,
                retry_after_s=retry_after,
            )
        if attempt >= self.max_retries:
            raise FigmaError(
                f"rate limited by Figma on {subject}: still 429 after {attempt + 1} attempts; retry later "
                f"({', '.join(details)})",
                file_key=file_key,
                endpoint=endpoint,
                status=429,
                retry_after_s=retry_after,
            )
        return retry_after if retry_after is not None else self._backoff(attempt)

    def _client_error(self, reply: _Reply, *, file_key: str, endpoint: str) -> FigmaError:
        status = reply.status
        said = self._error_text(reply)
        if endpoint == "image download":
            message = (
                f"image download for file {file_key} failed ({status}): {said}; "
                "the export URL may have expired"
            )
        elif status in (401, 403):
            message = (
                f"token rejected ({status}) for file {file_key}: check FIGMA_TOKEN and that it can read "
                f"this file (Figma says: {said})"
            )
        elif status == 404:
            message = f"file {file_key} not found (404 from {endpoint}): check the file key"
        else:
            message = f"{endpoint} for file {file_key} was refused ({status}): {said}"
        return FigmaError(message, file_key=file_key, endpoint=endpoint, status=status, said=said)

    def _error_text(self, reply: _Reply) -> str:
        """Figma's own error text from either error shape, else the start of the body."""
        try:
            body = json.loads(reply.content)
        except ValueError:
            body = None
        if isinstance(body, dict):
            text = body.get("err") or body.get("message")
            if text:
                return self._redact(str(text))
        snippet = reply.content[:200].decode("utf-8", "replace").strip()
        return self._redact(snippet) or "(empty body)"

    def _json(self, reply: _Reply, file_key: str, endpoint: str) -> dict[str, Any]:
        try:
            body = json.loads(reply.content)
        except ValueError as exc:
            raise FigmaError(
                f"{endpoint} for file {file_key} returned invalid JSON: {exc}",
                file_key=file_key,
                endpoint=endpoint,
            ) from None
        if not isinstance(body, dict):
            raise FigmaError(
                f"{endpoint} for file {file_key} returned {type(body).__name__}, expected an object",
                file_key=file_key,
                endpoint=endpoint,
            )
        return body


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


# How Figma (and the servers in front of it) refuse an export request that asks for too much at
# once: "Request too large. ...", too many ids, "try requesting fewer or smaller images", a URI too
# long for the front end. A smaller request may pass; any other 400 (a bad format) would not.
_TOO_LARGE_RE = re.compile(r"too (large|many|long|big)|fewer|\bids\b|request size", re.IGNORECASE)


def _batch_too_large(error: FigmaError) -> bool:
    if error.status in (413, 414):
        return True
    return error.status == 400 and bool(_TOO_LARGE_RE.search(error.said))


def _check_file_key(file_key: str) -> None:
    if not _FILE_KEY_RE.match(file_key or ""):
        raise FigmaError(
            f"invalid Figma file key {file_key!r}: expected letters, digits, '-' or '_' "
            "(the part after /file/ or /design/ in the file's URL)",
            file_key=file_key,
        )


def _human_duration(seconds: float) -> str:
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 3_600:
        return f"{seconds / 3_600:.1f} hours"
    if seconds >= 60:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds:.0f} seconds"


# -- the document tree -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FigmaComponent:
    """A main component found in a file's document tree (a plain one or a variant of a set)."""

    node_id: str
    name: str  # display name: the last segment of a slash path ("icons/arrows/arrow-left" -> "arrow-left")
    raw_name: str  # the component's (or its set's) full Figma name
    label: str  # how a person finds it in Figma: "name" or "set name/Variant=Value"
    style: str  # from variant properties: "filled", "filled, size=24"; "" for a plain component
    page: str
    frame: str  # the top-level node on the page that holds it; "" when it sits on the page itself
    tags: tuple[str, ...]

    @property
    def context(self) -> str:
        return f"{self.page}/{self.frame}" if self.frame else self.page


def find_components(file_json: dict[str, Any]) -> list[FigmaComponent]:
    """Every main component in document order, with its page, top frame, variant style and tags."""
    components_meta: dict[str, Any] = file_json.get("components") or {}
    sets_meta: dict[str, Any] = file_json.get("componentSets") or {}
    found: list[FigmaComponent] = []

    def visit(node: dict[str, Any], page: str, frame: str, component_set: dict[str, Any] | None) -> None:
        kind = node.get("type")
        if kind == "COMPONENT":
            found.append(_component(node, page, frame, component_set, components_meta, sets_meta))
            return  # a main component's children are its drawing, not more icons
        if kind == "INSTANCE":
            return  # instances are uses of components (which live elsewhere), not icons themselves
        inner_set = node if kind == "COMPONENT_SET" else component_set
        for child in node.get("children") or ():
            visit(child, page, frame, inner_set)

    for page in (file_json.get("document") or {}).get("children") or ():
        if page.get("type") != "CANVAS":
            continue
        page_name = str(page.get("name", ""))
        for top in page.get("children") or ():
            frame = "" if top.get("type") in ("COMPONENT", "COMPONENT_SET") else str(top.get("name", ""))
            visit(top, page_name, frame, None)
    return found


def _component(
    node: dict[str, Any],
    page: str,
    frame: str,
    component_set: dict[str, Any] | None,
    components_meta: dict[str, Any],
    sets_meta: dict[str, Any],
) -> FigmaComponent:
    node_id = str(node.get("id", ""))
    node_name = str(node.get("name", "")).strip()
    description = str((components_meta.get(node_id) or {}).get("description") or "")
    if component_set is None:
        raw_name, label, style = node_name, node_name, ""
        tags = description_tags(description)
    else:
        # In a set, the set carries the icon's name and each variant is named "Prop=Value, ...".
        raw_name = str(component_set.get("name", "")).strip()
        label = f"{raw_name}/{node_name}"
        style = variant_style(node_name)
        set_description = str((sets_meta.get(str(component_set.get("id"))) or {}).get("description") or "")
        tags = tuple(dict.fromkeys(description_tags(set_description) + description_tags(description)))
    name = raw_name.rsplit("/", 1)[-1].strip() or raw_name
    return FigmaComponent(node_id, name, raw_name, label, style, page, frame, tags)


def variant_style(variant_name: str) -> str:
    """'Size=24, Style=Filled' -> 'filled, size=24': the style-like value first, other props as k=v."""
    props = []
    for part in variant_name.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            props.append((key.strip().lower(), value.strip().lower()))
    if not props:
        return variant_name.strip().lower()
    style_index = next((i for i, (key, _) in enumerate(props) if key in _STYLE_PROPERTIES), None)
    first = [props[style_index][1]] if style_index is not None else []
    rest = [f"{key}={value}" for i, (key, value) in enumerate(props) if i != style_index]
    return ", ".join(first + rest)


def description_tags(description: str) -> tuple[str, ...]:
    """Tags from a component description: a list ('home, house; main') keeps short phrases whole;
    a sentence ('Use for the start page') gives its content words."""
    tags: list[str] = []
    for piece in re.split(r"[,;\n|]+", description):
        words = re.findall(r"[\w][\w'-]*", piece.lower())
        if not words:
            continue
        if len(words) <= 3:
            tags.append(" ".join(words))
        else:
            tags.extend(w for w in words if w not in _STOPWORDS and len(w) > 1)
    return tuple(dict.fromkeys(tags))


# -- the scan --------------------------------------------------------------------------------------


def file_version(file_json: dict[str, Any]) -> str:
    """`version@lastModified`: changes whenever the file does."""
    return f"{file_json.get('version', '')}@{file_json.get('lastModified', '')}"


def node_file_name(node_id: str) -> str:
    """A node id as a file name: '12:34' -> '12-34', 'I1:2;3:4' -> 'I1-2_3-4'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", node_id.replace(":", "-"))


def scan_figma(
    client: FigmaClient,
    file_keys: Sequence[str],
    download_dir: Path,
    source_name: str = "figma",
    download_workers: int = 8,
) -> tuple[SourceScan, dict[str, dict[str, Any]]]:
    """Scan Figma files into SVG icons under download_dir/<file_key>/<node>.svg.

    Returns the scan (icons, failures, a version combining every file's) and, per readable file,
    {version, lastModified, name, pages: {page name: [icon ids]}} so a sensor can spot a new
    version and batching can go per page. One bad file or icon is a recorded failure; the rest go on.
    """
    icons: list[IconRecord] = []
    failures: list[SourceFailure] = []
    # Requests that failed for good (HTTP 4xx/5xx, rate limits, refused export batches): the scan
    # is then incomplete, and icon_catalog must not drop the icons it could not see.
    errors: list[str] = []
    files_info: dict[str, dict[str, Any]] = {}
    versions: list[str] = []
    for file_key in file_keys:
        try:
            file_json = client.get_file(file_key)
        except FigmaError as exc:
            errors.append(str(exc))
            versions.append(f"{file_key}=unavailable")
            continue
        version = file_version(file_json)
        versions.append(f"{file_key}={version}")
        info: dict[str, Any] = {
            "version": str(file_json.get("version", "")),
            "lastModified": str(file_json.get("lastModified", "")),
            "name": str(file_json.get("name", "")),
            "pages": {},
        }
        files_info[file_key] = info
        try:
            components = find_components(file_json)
        except (AttributeError, TypeError) as exc:
            reason = f"unexpected document shape from GET /v1/files/{file_key}: {exc}"
            failures.append(SourceFailure(source_name, f"file {file_key}", reason))
            continue
        log.info("figma file %s (%s): %d components", file_key, info["name"], len(components))
        refused: dict[str, str] = {}  # node id -> why Figma would not export it even on its own
        try:
            urls = client.get_svg_urls(file_key, [c.node_id for c in components], refused)
        except FigmaError as exc:
            errors.append(str(exc))
            continue
        file_dir = Path(download_dir) / file_key
        file_dir.mkdir(parents=True, exist_ok=True)
        fetch = partial(_fetch_icon, client, file_key, file_dir)
        with ThreadPoolExecutor(max_workers=max(1, download_workers)) as pool:
            results = pool.map(
                fetch,
                components,
                [urls.get(c.node_id) for c in components],
                [refused.get(c.node_id) for c in components],
            )
            for component, result in zip(components, results, strict=True):
                item = f"{file_key}/{component.label} ({component.node_id})"
                if isinstance(result, FigmaError):  # a download that failed for good: transient
                    errors.append(f"{item}: {result}")
                    continue
                if isinstance(result, str):
                    failures.append(SourceFailure(source_name, item, result))
                    continue
                path, data = result
                icon = IconRecord(
                    icon_id=stable_id(source_name, file_key, component.node_id),
                    source=source_name,
                    name=component.name,
                    raw_name=component.raw_name,
                    file_path=str(path),
                    format="svg",
                    content_hash=sha256_bytes(data),
                    tags=component.tags,
                    style=component.style,
                    context=component.context,
                    source_version=version,
                )
                icons.append(icon)
                info["pages"].setdefault(component.page, []).append(icon.icon_id)
    scan = SourceScan(source=source_name, version=";".join(versions), icons=icons, failures=failures)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        scan.error = f"{errors[0]}{more}"
    return scan, files_info


def _fetch_icon(
    client: FigmaClient,
    file_key: str,
    file_dir: Path,
    component: FigmaComponent,
    url: str | None,
    refused: str | None = None,
) -> tuple[Path, bytes] | str | FigmaError:
    """Download one exported SVG. A bad item comes back as its reason (str) so the batch goes on; a
    request that failed for good comes back as the FigmaError (the scan is then incomplete)."""
    if url is None:
        return refused or "Figma returned no image (null URL)"
    try:
        data = client.download(url, file_key=file_key)
    except FigmaError as exc:
        return str(exc) if exc.item_problem else exc
    if b"<svg" not in data[:65_536]:
        return f"download is not an SVG ({len(data)} bytes starting {data[:40]!r})"
    path = file_dir / f"{node_file_name(component.node_id)}.svg"
    # Write then rename, so a crash never leaves half an SVG that a later render would trust.
    tmp = path.with_suffix(f".svg.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    return path, data


def figma_versions(
    client: FigmaClient,
    file_keys: Sequence[str],
    failures: list[SourceFailure] | None = None,
    source_name: str = "figma",
) -> dict[str, str]:
    """file key -> `version@lastModified`, cheaply (depth=1: pages only) for a change sensor.

    A file that cannot be read raises FigmaError, or, when a `failures` list is given, is recorded
    there and left out of the result so the other files are still checked.
    """
    versions: dict[str, str] = {}
    for file_key in file_keys:
        try:
            versions[file_key] = file_version(client.get_file(file_key, depth=1))
        except FigmaError as exc:
            if failures is None:
                raise
            failures.append(SourceFailure(source_name, f"file {file_key}", str(exc)))
    return versions


def iter_pages(files_info: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, list[str]]]:
    """(file key, page name, icon ids) for every page with icons: the unit of a Figma batch."""
    for file_key, info in files_info.items():
        for page, icon_ids in info.get("pages", {}).items():
            yield file_key, page, icon_ids
