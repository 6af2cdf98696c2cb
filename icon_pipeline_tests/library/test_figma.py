"""The Figma client and source against a Figma-shaped server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from icon_pipeline.library.records import IconRecord, SourceScan, stable_id
from icon_pipeline.library.sources.figma import (
    FigmaClient,
    FigmaError,
    description_tags,
    figma_versions,
    find_components,
    iter_pages,
    scan_figma,
    variant_style,
)
from icon_pipeline_tests.figma_server import FigmaTestServer, tabler_figma_file

TOKEN = "figd_s3cret-Token-value-123"
KEY = "TablerKit"
ALL_IDS = ["1:2", "1:3", "1:4", "1:5", "1:11", "2:3", "2:4", "2:6", "2:7", "3:1"]


@pytest.fixture
def tabler_dir(tabler_package: Path) -> Path:
    """The real Tabler package (conftest's `tabler_package` skips when it has not been fetched)."""
    return tabler_package


@pytest.fixture
def server(tabler_dir: Path) -> Iterator[FigmaTestServer]:
    files = {KEY: tabler_figma_file(tabler_dir, KEY), "OtherKit": tabler_figma_file(tabler_dir, "OtherKit")}
    with FigmaTestServer(files, token=TOKEN, max_ids_per_request=3) as running:
        yield running


def make_client(server: FigmaTestServer, **overrides) -> FigmaClient:
    settings = {"ids_per_request": 3, "max_retries": 3, "backoff_base_s": 0.001, "backoff_max_s": 0.01}
    settings.update(overrides)
    return FigmaClient(TOKEN, api_url=server.url, **settings)


def by_node_id(scan: SourceScan, file_key: str = KEY) -> dict[str, IconRecord]:
    ids = {stable_id("figma", file_key, node_id): node_id for node_id in ALL_IDS}
    return {ids[icon.icon_id]: icon for icon in scan.icons}


def test_scan_reads_components_variants_pages_and_svgs(server, tabler_dir, tmp_path):
    with make_client(server) as client:
        scan, files = scan_figma(client, [KEY], tmp_path)

    assert scan.failures == []
    icons = by_node_id(scan)
    assert sorted(icons) == sorted(ALL_IDS)  # the instance and the text node are not icons

    search, bell, trash, home, user = icons["1:2"], icons["1:4"], icons["1:5"], icons["1:11"], icons["3:1"]
    assert (search.name, search.style, search.context) == ("search", "", "Icons/System")
    assert search.tags == ("find", "magnifier", "magnifying glass")
    assert icons["1:3"].tags == ("cog", "gear", "preferences")
    assert (bell.name, bell.raw_name) == ("bell", "actions/bell")  # slash path: last segment is the name
    assert "deleting" in trash.tags and "folder" in trash.tags and "the" not in trash.tags
    assert home.context == "Icons/Buildings"
    assert (user.context, user.tags) == ("Variants", ())  # placed on the page, no frame

    # Component sets: the set's name is the icon's name; variants become the style.
    heart_outline, heart_filled = icons["2:3"], icons["2:4"]
    assert (heart_outline.name, heart_outline.style, heart_outline.context) == (
        "heart",
        "outline",
        "Variants/Shapes",
    )
    assert heart_filled.style == "filled"
    assert heart_outline.tags == ("love", "like")  # the set's description applies to every variant
    assert heart_filled.tags == ("love", "like", "wishlist")
    assert (icons["2:6"].style, icons["2:7"].style) == ("outline, size=24", "filled, size=24")

    # The bytes on disk are the Tabler files the server exported; hashes and paths follow.
    for node_id, tabler_name, style in [("1:11", "home", "outline"), ("2:4", "heart", "filled")]:
        icon = icons[node_id]
        expected = (tabler_dir / "icons" / style / f"{tabler_name}.svg").read_bytes()
        assert Path(icon.file_path).read_bytes() == expected
        assert Path(icon.file_path).parent == tmp_path / KEY
        assert icon.format == "svg" and len(icon.content_hash) == 64

    # Versions: per icon and for the scan; file info feeds the sensor and per-page batches.
    file = server.files[KEY]
    assert all(icon.source_version == f"{file.version}@{file.last_modified}" for icon in scan.icons)
    assert scan.version == f"{KEY}={file.version}@{file.last_modified}"
    assert files[KEY]["version"] == file.version and files[KEY]["lastModified"] == file.last_modified
    assert files[KEY]["name"] == "Tabler kit"
    pages = {page: ids for _, page, ids in iter_pages(files)}
    assert sorted(pages) == ["Icons", "Variants"]
    assert len(pages["Icons"]) == 5 and len(pages["Variants"]) == 5

    # Chunking: 10 ids, 3 per request -> 4 image requests, each within the server's limit.
    image_requests = server.requests_to("images")
    assert len(image_requests) == math.ceil(len(ALL_IDS) / 3)
    assert all(len(r.query["ids"].split(",")) <= 3 and r.query["format"] == "svg" for r in image_requests)


def test_ids_stable_across_scans_and_token_only_sent_to_the_api(server, tmp_path):
    with make_client(server) as client:
        first, _ = scan_figma(client, [KEY], tmp_path / "a")
        second, _ = scan_figma(client, [KEY], tmp_path / "b")
    assert [i.icon_id for i in first.icons] == [i.icon_id for i in second.icons]
    assert [i.content_hash for i in first.icons] == [i.content_hash for i in second.icons]
    assert all(r.headers.get("x-figma-token") == TOKEN for r in server.requests_to("files"))
    # Export URLs are pre-signed storage URLs on the real service: the token must not go there.
    cdn = server.requests_to("cdn")
    assert cdn and all("x-figma-token" not in r.headers for r in cdn)


def test_429_with_small_retry_after_waits_then_succeeds(server):
    server.fail("files", 429, times=2, retry_after="2")
    waits: list[float] = []
    with make_client(server, sleep=waits.append) as client:
        body = client.get_file(KEY)
    assert body["version"] == server.files[KEY].version
    assert waits == [2.0, 2.0]  # exactly what Figma asked for
    assert len(server.requests_to("files")) == 3


def test_429_with_huge_retry_after_fails_fast_and_clearly(server):
    three_days = str(3 * 86_400)
    server.fail("images", 429, times=None, retry_after=three_days, headers={"X-Figma-Rate-Limit-Type": "low"})
    waits: list[float] = []
    with (
        make_client(server, max_retry_after_s=60, sleep=waits.append) as client,
        pytest.raises(FigmaError) as caught,
    ):
        client.get_svg_urls(KEY, ["1:2"])
    assert waits == []  # it fails at once instead of sleeping for days
    message = str(caught.value)
    assert f"rate limited by Figma for {three_days} s" in message
    assert f"on file {KEY}; retry later" in message and "3.0 days" in message and "limit type low" in message
    assert caught.value.status == 429 and caught.value.retry_after_s == 3 * 86_400
    assert len(server.requests_to("images")) == 1


def test_429_without_end_gives_up_after_max_retries(server):
    server.fail("files", 429, times=None, retry_after="1")
    waits: list[float] = []
    with (
        make_client(server, max_retries=2, sleep=waits.append) as client,
        pytest.raises(FigmaError) as caught,
    ):
        client.get_file(KEY)
    assert "still 429 after 3 attempts" in str(caught.value) and KEY in str(caught.value)
    assert waits == [1.0, 1.0]


def test_5xx_is_retried_with_backoff_then_succeeds(server, tmp_path):
    server.fail("images", 502, times=2)
    server.fail("cdn", 503, times=1, error_shape="error")
    with make_client(server, max_retries=3) as client:
        scan, _ = scan_figma(client, [KEY], tmp_path)
    assert scan.failures == [] and len(scan.icons) == len(ALL_IDS)
    assert len(server.requests_to("images")) == 4 + 2


def test_5xx_forever_fails_after_max_retries_naming_file_endpoint_and_status(server):
    server.fail("files", 500, times=None, error_shape="error")
    waits: list[float] = []
    client = make_client(server, max_retries=3, backoff_base_s=0.001, backoff_max_s=0.003, sleep=waits.append)
    with client, pytest.raises(FigmaError) as caught:
        client.get_file(KEY)
    message = str(caught.value)
    assert f"GET /v1/files/{KEY}" in message and "status 500" in message and "after 4 attempts" in message
    assert "Internal server error" in message  # Figma's own text from the {error, status, message} shape
    assert waits == [0.001, 0.002, 0.003]  # exponential, capped
    assert len(server.requests_to("files")) == 4


def test_connection_errors_are_retried_then_reported():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = FigmaClient(TOKEN, api_url=f"http://127.0.0.1:{port}", max_retries=2, backoff_base_s=0.001)
    with client, pytest.raises(FigmaError) as caught:
        client.get_file(KEY)
    assert "after 3 attempts" in str(caught.value) and "ConnectError" in str(caught.value)
    assert KEY in str(caught.value) and TOKEN not in str(caught.value)


def test_null_image_url_is_a_failure_and_the_rest_succeed(server, tmp_path):
    server.null_image_ids = {"2:4"}
    with make_client(server) as client:
        scan, _ = scan_figma(client, [KEY], tmp_path)
    assert len(scan.icons) == len(ALL_IDS) - 1
    assert [(f.item, f.reason) for f in scan.failures] == [
        (f"{KEY}/heart/Style=Filled (2:4)", "Figma returned no image (null URL)")
    ]


def test_an_expired_download_makes_the_scan_incomplete_an_oversized_one_is_an_item_failure(server, tmp_path):
    server.fail("cdn", 403, times=1)  # pre-signed export URL expired: the scan is incomplete
    with make_client(server) as client:
        scan, _ = scan_figma(client, [KEY], tmp_path / "a")
    assert len(scan.icons) == len(ALL_IDS) - 1 and not scan.failures
    assert "failed (403)" in scan.error and "expired" in scan.error

    with make_client(server, max_download_bytes=100) as client:
        scan, _ = scan_figma(client, [KEY], tmp_path / "b")
    assert scan.icons == [] and len(scan.failures) == len(ALL_IDS)
    assert all("larger than 100 bytes" in f.reason for f in scan.failures)


def test_bad_token_names_the_file_and_never_the_token(server, tmp_path, caplog):
    wrong = "figd_WRONG-token-987654321"
    caplog.set_level(logging.DEBUG)
    client = FigmaClient(wrong, api_url=server.url, max_retries=1, backoff_base_s=0.001)
    assert wrong not in repr(client) and "redacted" in repr(client)
    with pytest.raises(FigmaError) as caught:
        client.get_file(KEY)
    message = str(caught.value)
    assert message.startswith(f"token rejected (403) for file {KEY}: check FIGMA_TOKEN")
    assert wrong not in message and wrong not in repr(caught.value)
    with client:
        scan, _ = scan_figma(client, [KEY], tmp_path)
    assert scan.icons == [] and not scan.failures and f"file {KEY}" in scan.error
    assert wrong not in scan.error and wrong not in caplog.text
    assert len(server.requests_to("files")) == 2  # a 403 is final: not retried


def test_a_missing_file_makes_the_scan_incomplete_and_other_files_go_on(server, tmp_path):
    with make_client(server) as client:
        scan, files = scan_figma(client, ["Gone404", KEY, "bad key/../x"], tmp_path)
    assert len(scan.icons) == len(ALL_IDS) and not scan.failures
    assert "file Gone404 not found" in scan.error and "(and 1 more)" in scan.error
    assert set(files) == {KEY}
    assert scan.version.startswith("Gone404=unavailable;TablerKit=")


def _image_batch_sizes(server: FigmaTestServer) -> list[int]:
    return [len(r.query["ids"].split(",")) for r in server.requests_to("images")]


@pytest.mark.parametrize("status", [400, 413, 414])
def test_a_batch_figma_refuses_as_too_large_is_halved_until_every_icon_is_downloaded(
    server, tmp_path, status
):
    server.too_large_status = status  # 400: Figma's {"status": 400, "err": "Request too large. ..."}
    with make_client(server, ids_per_request=8) as client:
        scan, _ = scan_figma(client, [KEY], tmp_path)
    assert scan.error is None and scan.failures == []
    assert sorted(by_node_id(scan)) == sorted(ALL_IDS)
    assert all(Path(icon.file_path).read_bytes().startswith(b"<svg") for icon in scan.icons)
    # The server takes 3 ids at most: 8 -> 4 + 4 -> 2 + 2 each; the last 2 ids go at the size that worked.
    assert _image_batch_sizes(server) == [8, 4, 2, 2, 4, 2, 2, 2]
    assert len(server.requests_to("cdn")) == len(ALL_IDS)


def test_a_node_refused_even_on_its_own_is_that_icons_failure_and_the_rest_go_on(server, tmp_path):
    server.oversized_ids = {"2:4"}  # any request with this node is "too large"
    with make_client(server) as client:
        scan, _ = scan_figma(client, [KEY], tmp_path)
    assert scan.error is None  # not a source problem: every other icon came
    assert sorted(by_node_id(scan)) == sorted(set(ALL_IDS) - {"2:4"})
    [failure] = scan.failures
    assert failure.item == f"{KEY}/heart/Style=Filled (2:4)"
    assert failure.reason == (
        "Figma refused to export it even on its own (400): "
        "Request too large. If applicable, filter by query params."
    )
    with make_client(server) as client, pytest.raises(FigmaError) as caught:
        client.get_svg_urls(KEY, ["2:3", "2:4"])  # without a `refused` map: the error itself
    assert "was refused (400)" in str(caught.value) and caught.value.said.startswith("Request too large")

    # Any other 400 (not about the request's size) is final at once: no halving into more requests.
    server.oversized_ids = set()
    server.fail("images", 400, times=None)
    before = len(server.requests_to("images"))
    with make_client(server) as client, pytest.raises(FigmaError) as caught:
        client.get_svg_urls(KEY, ALL_IDS)
    assert "was refused (400)" in str(caught.value) and len(server.requests_to("images")) == before + 1


def test_version_change_is_visible_through_figma_versions(server):
    with make_client(server) as client:
        before = figma_versions(client, [KEY, "OtherKit"])
        server.files[KEY].bump()
        after = figma_versions(client, [KEY, "OtherKit"])
        failures = []
        partial = figma_versions(client, ["Gone404", KEY], failures=failures)
        with pytest.raises(FigmaError, match="Gone404 not found"):
            figma_versions(client, ["Gone404"])
    assert before["OtherKit"] == after["OtherKit"] and before[KEY] != after[KEY]
    assert after[KEY] == f"{server.files[KEY].version}@{server.files[KEY].last_modified}"
    assert partial == {KEY: after[KEY]} and failures[0].item == "file Gone404"
    # cheap: pages only, no document tree beyond them
    assert all(r.query.get("depth") == "1" for r in server.requests_to("files"))


def test_find_components_ignores_remote_and_instances(tabler_dir):
    body = tabler_figma_file(tabler_dir).body()
    # An instance's component may be listed in `components` (e.g. from a library) without living here.
    body["components"]["99:1"] = {"key": "remote", "name": "remote", "description": "", "remote": True}
    assert sorted(c.node_id for c in find_components(body)) == sorted(ALL_IDS)


@pytest.mark.parametrize(
    ("variant", "style"),
    [
        ("Style=Filled", "filled"),
        ("Size=24, Style=Filled", "filled, size=24"),
        ("Size=16", "size=16"),
        ("Filled", "filled"),
        ("Theme=Dark,State=Hover", "dark, state=hover"),
    ],
)
def test_variant_style(variant, style):
    assert variant_style(variant) == style


@pytest.mark.parametrize(
    ("description", "tags"),
    [
        ("", ()),
        ("home, house; main\nreal estate", ("home", "house", "main", "real estate")),
        ("Arrow", ("arrow",)),
        ("Shows the user's profile on a page.", ("shows", "user's", "profile", "page")),
        ("a, a, A", ("a",)),
    ],
)
def test_description_tags(description, tags):
    assert description_tags(description) == tags


def test_client_settings_are_checked():
    with pytest.raises(ValueError, match="FIGMA_TOKEN"):
        FigmaClient("")
    with pytest.raises(ValueError, match="ids_per_request"):
        FigmaClient(TOKEN, ids_per_request=0)
