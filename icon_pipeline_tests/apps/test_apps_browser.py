"""End to end in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): a caption
edited in the captions app shows up in the next `icon_captions` materialization, a rejected icon
leaves training_pairs, and the search page answers a query (screenshot kept in the test's
temp dir)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from icon_pipeline.apps import RunningApp, launch
from icon_pipeline.captions.overrides import OverrideStore
from icon_pipeline.core.database import DatabaseInfo
from icon_pipeline_tests.apps.test_apps import Demo, build_demo, free_port, materialize

CHROMIUM = Path("/usr/bin/chromium")
# A CI container: no sandbox (root), no GPU, nothing fetched from outside.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
    "--mute-audio",
]
EDIT = ["ring for attention", "wake me up", "alarm clock", "remind me later", "doorbell"]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium and chromium-driver")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo(postgres: DatabaseInfo, project_tmp: Path, tabler_package: Path) -> Iterator[Demo]:
    yield from build_demo(project_tmp / f"browser-{uuid.uuid4().hex[:8]}", postgres, tabler_package)


@pytest.fixture(scope="module")
def served(demo: Demo) -> Iterator[dict[str, RunningApp]]:
    apps = {}
    try:
        for name in ("captions", "search"):
            apps[name] = launch(name, port=free_port(), block=False)
        yield apps
    finally:
        for app in apps.values():
            app.close()


def _captions(demo: Demo) -> pd.DataFrame:
    return pd.concat(
        pd.read_parquet(p) for p in sorted((demo.data / "captions" / "batches").glob("*.parquet"))
    )


def _latest_metadata(asset: str) -> dict:
    from dagster import AssetKey, DagsterInstance

    records = DagsterInstance.get().fetch_materializations(AssetKey(asset), limit=1).records
    return {k: v.value for k, v in records[0].event_log_entry.asset_materialization.metadata.items()}


def test_a_caption_edited_in_the_browser_is_used_by_the_next_run(
    browser, served: dict[str, RunningApp], demo: Demo, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    started = time.perf_counter()
    page.goto(served["captions"].url)
    page.locator("#icons img").first.wait_for()
    print(f"captions app: first page of icons shown {time.perf_counter() - started:.2f} s after navigation")
    # Each gallery label sits under its icon, never over it.
    page.wait_for_function("document.getElementById('icons-gallery-css') !== null")
    thumbnails = page.locator("#icons button.thumbnail-item")
    for i in range(min(thumbnails.count(), 8)):
        image = thumbnails.nth(i).locator("img").bounding_box()
        label = thumbnails.nth(i).locator(".caption-label").bounding_box()
        assert image and label and label["y"] >= image["y"] + image["height"] - 1, (i, image, label)
    page.screenshot(path=str(tmp_path / "captions-gallery.png"))

    page.locator("#query textarea, #query input").first.fill("bell-off")
    page.locator("#query textarea, #query input").first.press("Enter")
    page.locator("#page-label", has_text="(1 icons)").wait_for()
    page.locator("#icons button.thumbnail-item").first.click()
    page.locator("#details", has_text="bell-off").wait_for()
    page.locator("#phrases textarea").fill("\n".join(EDIT))
    page.locator("#author textarea, #author input").first.fill("ana")
    page.locator("#save-edit").click()
    page.locator("#message", has_text="Saved:").wait_for()
    assert "edited by ana" in page.inner_text("#message")
    page.screenshot(path=str(tmp_path / "captions.png"), full_page=True)

    before = _captions(demo).set_index("name").loc["bell-off"]
    assert list(before["phrases"]) != EDIT
    materialize("icon_captions")
    row = _captions(demo).set_index("name").loc["bell-off"]
    assert list(row["phrases"]) == EDIT and list(row["generated_phrases"]) == list(before["phrases"])
    assert (row["override"], row["override_author"], row["override_revision"]) == ("edited", "ana", 1)
    meta = _latest_metadata("icon_captions")
    assert meta["overrides_applied"] == 1 and meta["overrides_edited"] == 1

    # A rejected icon keeps its captions row, flagged, and leaves training.
    trash_id = _captions(demo).set_index("name").loc["trash", "icon_id"]
    trash = trash_id if isinstance(trash_id, str) else sorted(trash_id)[0]
    OverrideStore(demo.db_url).save(trash, [], "rejected", "bo", 0)
    materialize("icon_captions", "training_pairs")
    assert bool(_captions(demo).set_index("icon_id").loc[trash, "rejected"])
    pairs = pd.read_parquet(demo.data / "pairs" / "training_pairs.parquet")
    members = {m for group in pairs["members"] for m in group}
    assert trash not in members and len(members) == 12
    assert _latest_metadata("training_pairs")["rejected_icons"] == 1
    page.close()


def test_search_detail_downloads_svg_query_and_judgement_in_the_browser(
    browser, served: dict[str, RunningApp], demo: Demo, tmp_path: Path
) -> None:
    import psycopg
    from PIL import Image

    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(TIMEOUT_MS)
    started = time.perf_counter()
    page.goto(served["search"].url)
    page.locator("#model input").first.wait_for()
    # Opens on the product's default: hybrid search.
    page.wait_for_function("document.querySelector('#model input').value === 'hybrid'")
    print(f"search app: ready {time.perf_counter() - started:.2f} s after navigation")

    page.locator("#query textarea, #query input").first.fill("turn off notifications")
    page.locator("#search-text").click()
    # One result per concept, variants folded in: fewer results than icons (the demo has 10
    # concepts in 13 icons; the captions test before this one may have rejected one).
    summary = re.compile(r"hybrid: (\d+) results \((\d+) icons\)")
    page.locator("#message", has_text=summary).wait_for()
    results, icons = map(int, summary.search(page.inner_text("#message")).groups())
    assert 9 <= results < icons <= 13
    assert "Hybrid search (default)" in page.inner_text("#results .panel-title")
    cards = page.locator("#results .icon-card")
    assert cards.count() == results and page.locator("#results .icon-card > img").count() == results
    # Each folded variant is seen inside its card: a small picture and its style.
    assert page.locator("#results .icon-variant img").count() == icons - results
    assert page.locator("#results .icon-variant", has_text="+ filled").count() >= 1
    page.wait_for_function(
        "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    # Labels sit below the icon, whole: never over it, never cut.
    for i in range(cards.count()):
        image = cards.nth(i).locator("> img").bounding_box()
        label = cards.nth(i).locator(".icon-name")
        box = label.bounding_box()
        assert image and box and box["y"] >= image["y"] + image["height"]
        assert label.evaluate("e => e.scrollWidth <= e.clientWidth")
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)

    bell = page.locator("#results .icon-card", has=page.locator(".icon-name", has_text="bell")).first
    icon_id = bell.get_attribute("data-icon-id")
    bell.click()
    page.locator("#detail-info", has_text="Why it matched").wait_for()
    # The detail view opens where the user looks: over the grid, inside the viewport.
    box = page.locator("#detail").bounding_box()
    assert box and box["y"] >= 0 and box["y"] + 200 <= 1000 and box["x"] >= 0, box
    from playwright.sync_api import expect

    expect(page.locator("#detail-name")).to_be_in_viewport()
    expect(page.locator("#download-png")).to_be_in_viewport()
    info = page.inner_text("#detail-info")
    assert "Captions:" in info and "Group:" in info
    assert page.locator("#detail-image img").count() == 1
    name = page.locator("#detail-name textarea, #detail-name input").first.input_value()
    assert name in ("bell", "bell-off")
    with page.expect_download() as svg_download:
        page.locator("#download-svg").click()
    svg = tmp_path / svg_download.value.suggested_filename
    svg_download.value.save_as(svg)
    assert svg.name == f"{name}.svg" and svg.read_text().lstrip().startswith("<svg")
    page.locator("#png-size input").first.click()
    page.get_by_role("option", name="64", exact=True).click()
    page.wait_for_timeout(500)  # the PNG is re-rendered at the new size
    with page.expect_download() as png_download:
        page.locator("#download-png").click()
    png = tmp_path / png_download.value.suggested_filename
    png_download.value.save_as(png)
    drawn = Image.open(png)
    assert png.name == f"{name}-64px.png" and drawn.size == (64, 64)
    assert drawn.mode == "RGBA" and drawn.getpixel((0, 0))[3] == 0  # transparent by default
    page.locator("#transparent input").uncheck()
    page.wait_for_timeout(500)  # both downloads are drawn again
    with page.expect_download() as white_download:
        page.locator("#download-png").click()
    on_white = tmp_path / ("white-" + white_download.value.suggested_filename)
    white_download.value.save_as(on_white)
    assert on_white.name.endswith("on-ffffff-64px.png")
    assert Image.open(on_white).mode == "RGB" and Image.open(on_white).getpixel((0, 0)) == (255, 255, 255)

    page.locator("#thumbs-up").click()
    page.locator("#judge-message", has_text="Saved:").wait_for()
    with psycopg.connect(demo.db_url) as conn:
        rows = conn.execute(
            "SELECT query_kind, query_text, icon_id, relevant, model FROM icon_search_judgements"
        ).fetchall()
    assert rows == [("text", "turn off notifications", icon_id, True, "hybrid")]

    # The detail view lies over the page: closing it gives the query controls back.
    page.locator("#detail-close").click()
    page.locator("#detail").wait_for(state="hidden")

    # An SVG file as the query: drawn by the renderer, shown as a picture, searched.
    page.locator("#upload input[type=file]").set_input_files(str(demo.root / "icons" / "folder-plus.svg"))
    page.locator("#search-image").click()
    page.locator("#query-image img").wait_for()
    page.locator("#results .icon-name", has_text="folder-plus").first.wait_for()
    assert page.locator("#results .icon-name").first.inner_text() == "folder-plus"
    assert "/tmp" not in page.inner_text("#message")
    page.close()


def test_a_search_is_shared_by_its_url(browser, served: dict[str, RunningApp]) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(served["search"].url + "?q=folder&model=bm25&fold=false")
    page.locator("#results .icon-name", has_text="folder").first.wait_for()
    assert page.locator("#query textarea, #query input").first.input_value() == "folder"
    page.wait_for_function("document.querySelector('#model input').value === 'bm25'")
    link = page.locator("#share-link a")
    assert link.get_attribute("href") == "?q=folder&model=bm25&fold=false"
    page.goto(served["search"].url + "?q=bell&style=glossy")
    page.locator("#message", has_text="unknown style 'glossy'; choose from: filled").wait_for()
    page.close()


def test_keys_step_through_icons_and_a_bulk_approval_lands(
    browser, served: dict[str, RunningApp], demo: Demo, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    store = OverrideStore(demo.db_url)
    bell_off = _captions(demo).set_index("name").loc["bell-off", "icon_id"]
    current = store.get(bell_off)
    contradicting = ["notifications on", "ring for attention", "alarm clock", "remind me later", "doorbell"]
    store.save(bell_off, contradicting, "edited", "ana", current.revision if current else 0)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(served["captions"].url)
    page.locator("#icons img").first.wait_for()
    hints = page.inner_text("#key-hints")
    assert "J / → next icon" in hints and "A approve" in hints and "R reject" in hints
    query = page.locator("#query textarea, #query input").first
    query.fill("folder")
    query.press("Enter")
    page.locator("#page-label", has_text="(3 icons)").wait_for()
    icon_id = page.locator("#icon-id textarea, #icon-id input").first
    page.locator("#icons button.thumbnail-item").first.click()
    page.locator("#details", has_text="folder").wait_for()
    first = icon_id.input_value()

    query.press("j")  # typing in a box is typing, not a key command
    page.wait_for_timeout(500)
    assert icon_id.input_value() == first and query.input_value() == "folderj"
    page.locator("#key-hints").click()  # out of the box
    page.keyboard.press("j")
    expect(icon_id).not_to_have_value(first)
    second = icon_id.input_value()
    page.locator("#details", has_text=second).wait_for()
    page.keyboard.press("k")
    expect(icon_id).to_have_value(first)

    page.locator("#author textarea, #author input").first.fill("cy")
    page.locator("#select-all").click()
    expect(page.locator("#bulk-pick input[type=checkbox]:checked")).to_have_count(3)
    page.locator("#bulk-approve").click()
    page.locator("#bulk-message", has_text="Approved 2 icon(s)").wait_for()  # the filled one: 1 phrase
    approved = {o.icon_id for o in store.load_all().values() if o.author == "cy" and o.status == "approved"}
    assert approved == {"mine:folder.svg", "mine:folder-plus.svg"}

    # The flagged icon comes first; opened, it shows why and what the edit changed.
    query.fill("")
    query.press("Enter")
    page.locator("#page-label", has_text="(13 icons)").wait_for()
    page.locator("#icons button.thumbnail-item").first.click()
    page.locator("#details", has_text="Contradicts the icon's name or tags").wait_for()
    assert "says on, but 'bell-off' is switched off" in page.inner_text("#details")
    assert "+ notifications on" in page.inner_text("#diff")
    screenshot = tmp_path / "captions-app.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"captions screenshot: {screenshot}")
    page.close()
