"""The four Gradio apps served on 127.0.0.1 and driven through gradio_client, on a real small
pipeline (Tabler icons materialized through Dagster on the embedded PostgreSQL) and a real tiny
SigLIP2 model in the pgvector index."""

from __future__ import annotations

import io
import json
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from PIL import Image

from icon_pipeline.apps import AppError, RunningApp, build_app, launch, parse_auth
from icon_pipeline.core.database import DatabaseInfo
from icon_pipeline.core.paths import REPO_ROOT

NAMES = ["bell", "bell-off", "folder", "folder-plus", "trash", "user", "settings", "search", "home", "lock"]
FILLED = ["bell", "folder", "trash"]
CONFIG = (
    "sources:\n  - kind: local\n    path: {icons}\n    name: mine\n"
    "eval:\n  n_groups: 6\npairs:\n  heldout_share: 0.2\n"
)
BELL_EDIT = ["ring for attention", "wake me up", "alarm clock", "reminder", "doorbell"]


def same_page(got: Any, expected: Any) -> bool:
    """Equal pages, scores within 1e-5: the API searches its in-memory copy of the index in float32
    (search/resident.py), the CLI asks PostgreSQL, and the two round the last digit apart."""
    if isinstance(got, float) and isinstance(expected, float):
        return abs(got - expected) <= 1e-5
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same_page(got[k], expected[k]) for k in got)
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(same_page(a, b) for a, b in zip(got, expected, strict=True))
    return got == expected


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Demo:
    root: Path
    env: dict[str, str]
    db_url: str  # psycopg URL of the demo's own database

    @property
    def data(self) -> Path:
        return self.root / "data"


def make_library(folder: Path, tabler: Path) -> Path:
    """A designer's folder of Tabler SVGs (outline, plus a few filled ones) with their tags."""
    known = json.loads((tabler / "icons.json").read_text())
    metadata = {}
    for style, names in (("outline", NAMES), ("filled", FILLED)):
        target = folder if style == "outline" else folder / "filled"
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(tabler / "icons" / style / f"{name}.svg", target / f"{name}.svg")
            metadata[name] = {
                "tags": [str(t) for t in known[name]["tags"] or []],
                "category": known[name]["category"],
            }
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


def demo_environment(root: Path, postgres: DatabaseInfo) -> Demo:
    """A private data dir, config, DAGSTER_HOME and database, like conftest's pipeline_env."""
    database = f"apps_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.libpq_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = postgres.url.replace("/postgres?", f"/{database}?")
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "ICON_PIPELINE_DATA": str(root / "data"),
        "ICON_PIPELINE_CONFIG": str(root / "icon_pipeline.yaml"),
        "ICON_PIPELINE_DATABASE_URL": url,
    }
    return Demo(root, env, url)


def materialize(*assets: str) -> None:
    from dagster import DagsterInstance

    from icon_pipeline.core.database import ensure_database
    from icon_pipeline.definitions import defs
    from icon_pipeline.defs.runner import materialize_assets

    ensure_database()
    summary = materialize_assets(defs, DagsterInstance.get(), list(assets), log=lambda _: None)
    assert summary.runs and summary.success, [r for r in summary.runs if not r.success]


PIPELINE = ("icon_catalog", "rendered_icons", "icon_lexicon", "icon_captions", "training_pairs", "eval_set")


def index_tiny_models(demo: Demo, model_ids: tuple[str, ...] = ("base", "finetuned")) -> dict[str, Path]:
    """Tiny from-scratch checkpoints (one per model id, different seeds) with every rendered icon
    embedded in the pgvector index, as icon_embeddings will do."""
    import pandas as pd

    from icon_pipeline.model.checkpoint import build_base_checkpoint, load_checkpoint
    from icon_pipeline.search.index import write_embeddings

    renders = pd.concat(pd.read_parquet(p) for p in (demo.data / "rendered" / "batches").glob("*.parquet"))
    renders = renders[renders["status"] != "failed"]
    pairs = pd.read_parquet(demo.data / "pairs" / "training_pairs.parquet")
    group_of = {m: row.group_id for row in pairs.itertuples() for m in row.members}
    captions = [c for row in pairs.itertuples() for c in row.captions]
    icon_ids = list(renders["icon_id"])
    # png_path is stored relative to the data root (core/storage).
    images = [Image.open(demo.data / p).convert("RGB") for p in renders["png_path"]]
    checkpoints = {}
    for seed, model_id in enumerate(model_ids):
        path = build_base_checkpoint(demo.root / f"ckpt-{model_id}", captions, size="tiny", seed=seed)
        embeddings = load_checkpoint(path).embed_images(images)
        with psycopg.connect(demo.db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            write_embeddings(
                conn,
                model_id,
                icon_ids,
                [group_of.get(i, i) for i in icon_ids],
                embeddings,
                embedder_info={"checkpoint": str(path)},
            )
        checkpoints[model_id] = path
    return checkpoints


def build_demo(root: Path, postgres: DatabaseInfo, tabler_package: Path) -> Iterator[Demo]:
    """The pipeline materialized on a small library, with two tiny models indexed; for fixtures."""
    built = demo_environment(root, postgres)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in built.env.items():
            patch.setenv(key, value)
        icons = make_library(root / "icons", tabler_package)
        (root / "icon_pipeline.yaml").write_text(CONFIG.format(icons=icons))
        materialize(*PIPELINE)
        index_tiny_models(built)
        yield built


@pytest.fixture(scope="module")
def demo(postgres: DatabaseInfo, project_tmp: Path, tabler_package: Path) -> Iterator[Demo]:
    yield from build_demo(project_tmp / f"apps-{uuid.uuid4().hex[:8]}", postgres, tabler_package)


@pytest.fixture(scope="module")
def served(demo: Demo) -> Iterator[dict[str, RunningApp]]:
    apps = {}
    try:
        for name in ("captions", "dataset", "augment", "search"):
            apps[name] = launch(name, port=free_port(), block=False)
        yield apps
    finally:
        for app in apps.values():
            app.close()


def client(app: RunningApp):
    from gradio_client import Client

    return Client(app.url, verbose=False, download_files=False, analytics_enabled=False)


# --- launcher -----------------------------------------------------------------------------------


def test_launcher_binds_loopback_by_default_and_parses_auth() -> None:
    assert parse_auth(None) is None and parse_auth("  ") is None
    assert parse_auth("ana:pw1, bo:p:w2") == [("ana", "pw1"), ("bo", "p:w2")]
    with pytest.raises(AppError, match="entry 2 is not `user:password`") as caught:
        parse_auth("ana:secret-one,bo")
    assert "secret-one" not in str(caught.value)
    with pytest.raises(AppError, match="unknown app 'nope'; available: captions, dataset, augment, search"):
        build_app("nope")


def test_basic_auth_from_the_environment(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    monkeypatch.setenv("ICON_PIPELINE_APP_AUTH", "ana:let-me-in")
    app = launch("dataset", port=free_port(), block=False)
    try:
        assert app.url.startswith("http://127.0.0.1:")
        assert httpx.get(app.url + "config", timeout=10).status_code == 401
        login = httpx.post(app.url + "login", data={"username": "ana", "password": "let-me-in"}, timeout=10)
        assert login.status_code == 200
        assert (
            httpx.post(app.url + "login", data={"username": "ana", "password": "no"}, timeout=10).status_code
            == 400
        )
    finally:
        app.close()


# --- captions ------------------------------------------------------------------------------------


def test_captions_app_lists_shows_and_saves_with_conflict_detection(served: dict[str, RunningApp]) -> None:
    api = client(served["captions"])
    gallery, label, ids, page, notes = api.predict("bell", "all", 1, api_name="/list_icons")
    assert label == "page 1 of 1 (3 icons)" and len(gallery) == len(ids) == 3 and notes == ""
    assert sorted(item[1] for item in gallery) == ["bell", "bell (filled)", "bell-off"]
    bell = next(i for i, item in zip(ids, gallery, strict=True) if item[1] == "bell")
    image, details, phrases, revision, message = api.predict(bell, api_name="/show_icon")
    assert Path(image).exists() and revision == 0 and message == ""
    assert "**Kept terms:** bell" in details and "**Generated captions** (" in details
    assert "**Override:** none yet" in details and len(phrases.splitlines()) >= 5

    edited = "\n".join(BELL_EDIT)
    note, revision, offer, _ = api.predict(bell, edited, "save edit", "ana", 0, api_name="/save_caption")
    assert note.startswith("**Saved:**") and "edited by ana" in note and revision == 1 and not offer
    # Bo still has revision 0 open: his save is refused and names Ana's change.
    note, revision, offer, theirs = api.predict(bell, phrases, "approve", "bo", 0, api_name="/save_caption")
    assert note.startswith("**Conflict, not saved.**") and "edited by ana" in note and "wake me up" in note
    assert (revision, offer, theirs) == (0, True, 1)
    note, revision, *_ = api.predict(bell, phrases, "approve", "bo", theirs, api_name="/save_caption")
    assert "approved by bo" in note and revision == 2

    note, *_ = api.predict(bell, "one\ntwo", "save edit", "ana", 2, api_name="/save_caption")
    assert note.startswith("**Not saved:**") and "expected 5-8 phrases, got 2" in note
    note, *_ = api.predict("mine:nope", edited, "save edit", "ana", 0, api_name="/save_caption")
    assert "no icon with id `mine:nope`" in note

    gallery, label, ids, *_ = api.predict("", "approved", 1, api_name="/list_icons")
    assert ids == [bell] and gallery[0][1] == "bell ✓"
    _, details, phrases, revision, _ = api.predict(bell, api_name="/show_icon")
    assert "approved by bo" in details and revision == 2


def test_captions_app_pages_long_lists(served: dict[str, RunningApp]) -> None:
    from icon_pipeline.apps.common import paginate

    api = client(served["captions"])
    gallery, label, ids, page, _ = api.predict("", "all", 99, api_name="/list_icons")
    assert page == 1 and label == "page 1 of 1 (13 icons)" and len(ids) == 13  # clamped
    many = paginate(list(range(5000)), 3)
    assert (many.items[0], len(many.items), many.pages, many.label()) == (
        96,
        48,
        105,
        "page 3 of 105 (5000 icons)",
    )


def test_captions_app_queues_edits_while_the_database_is_away(
    served: dict[str, RunningApp], demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = client(served["captions"])
    _, _, ids, *_ = api.predict("lock", "all", 1, api_name="/list_icons")
    (lock,) = ids
    _, _, phrases, revision, _ = api.predict(lock, api_name="/show_icon")
    # The app runs in this process: point it at a server that is not there.
    monkeypatch.setenv("ICON_PIPELINE_DATABASE_URL", "postgresql://reviewer:pw-secret@127.0.0.1:1/icons")
    _, _, _, _, message = api.predict(lock, api_name="/show_icon")
    assert "Cannot read the current override" in message and "pw-secret" not in message
    note, *_ = api.predict(lock, phrases, "reject", "ana", revision, api_name="/save_caption")
    assert note.startswith("**Database unreachable, edit queued (not lost):**") and "pw-secret" not in note
    assert "Still unreachable" in api.predict(api_name="/retry_pending")
    assert (demo.data / "overrides" / "pending.jsonl").read_text().count(lock) == 1

    monkeypatch.setenv("ICON_PIPELINE_DATABASE_URL", demo.env["ICON_PIPELINE_DATABASE_URL"])
    assert api.predict(api_name="/retry_pending").startswith("Saved 1 queued edit(s).")
    _, details, *_ = api.predict(lock, api_name="/show_icon")
    assert "**Override:** rejected by ana" in details
    assert api.predict(api_name="/retry_pending") == "No queued edits."


@contextmanager
def _captions_app_signed_in_as_bo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The captions app with two reviewers' sign-in, and an API client signed in as bo."""
    from gradio_client import Client

    monkeypatch.setenv("ICON_PIPELINE_APP_AUTH", "ana:pw-ana,bo:pw-bo")
    app = launch("captions", port=free_port(), block=False)
    try:
        yield Client(
            app.url, auth=("bo", "pw-bo"), verbose=False, download_files=False, analytics_enabled=False
        )
    finally:
        app.close()


def test_with_basic_auth_an_edit_is_stored_under_the_signed_in_reviewer(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _captions_app_signed_in_as_bo(monkeypatch) as bo:
        gallery, _, ids, *_ = bo.predict("trash", "all", 1, api_name="/list_icons")
        trash = next(i for i, item in zip(ids, gallery, strict=True) if item[1] == "trash")
        phrases = "\n".join(["throw away", "delete file", "remove item", "discard it", "empty the bin"])
        # Bo signs in and sends Ana's name as the author, through the API.
        note, revision, *_ = bo.predict(trash, phrases, "save edit", "ana", 0, api_name="/save_caption")
        assert note.startswith("**Saved:**") and "edited by bo" in note and revision == 1
    with psycopg.connect(demo.db_url) as conn:
        stored = conn.execute("SELECT author FROM caption_overrides WHERE icon_id = %s", (trash,)).fetchall()
        history = conn.execute(
            "SELECT author FROM caption_override_history WHERE icon_id = %s", (trash,)
        ).fetchall()
    assert stored == [("bo",)] and history == [("bo",)]


def test_captions_app_bulk_approves_as_the_reviewer_at_the_time(
    served: dict[str, RunningApp], demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from icon_pipeline.captions.overrides import OverrideStore

    api = client(served["captions"])
    gallery, _, ids, *_ = api.predict("folder", "all", 1, api_name="/list_icons")
    folders = dict(zip(ids, [item[1] for item in gallery], strict=True))
    assert sorted(folders.values()) == ["folder", "folder (filled)", "folder-plus"]
    generated = {i: api.predict(i, api_name="/show_icon")[2].splitlines() for i in folders}
    filled = next(i for i, name in folders.items() if name == "folder (filled)")
    before = datetime.now(UTC)
    note = api.predict([*folders, "mine:nope"], "ana", api_name="/bulk_approve")
    assert note.startswith("**Approved 2 icon(s)** as ana: folder (`mine:folder.svg`), folder-plus (")
    assert "- `mine:nope`: no such icon in icon_catalog" in note
    # The offline captioner says one phrase about a bare filled folder: too few to approve.
    refused = f"- folder (`{filled}`): not saved: expected 5-8 phrases, got 1"
    assert refused in note
    overrides = OverrideStore(demo.db_url)
    for icon_id in set(folders) - {filled}:
        (stored,) = overrides.history(icon_id)  # who, when and what, as a single approval records
        assert (stored.status, stored.author, stored.revision) == ("approved", "ana", 1)
        assert stored.phrases == generated[icon_id] and before <= stored.updated_at <= datetime.now(UTC)
    assert overrides.get(filled) is None
    # A second pass overwrites nobody's decision: each icon is named as already decided.
    note = api.predict(list(folders), "bo", api_name="/bulk_approve")
    assert note.startswith("**Nothing approved.**") and note.count("already approved by ana") == 2
    assert refused in note
    assert api.predict([], "bo", api_name="/bulk_approve") == "**Nothing approved:** select icons first."
    gallery, *_ = api.predict("folder", "approved", 1, api_name="/list_icons")
    assert sorted(item[1] for item in gallery) == ["folder ✓", "folder-plus ✓"]

    # With the database away, the approvals are queued like single edits, and saved on retry.
    _, _, (user,), *_ = api.predict("user", "all", 1, api_name="/list_icons")
    monkeypatch.setenv("ICON_PIPELINE_DATABASE_URL", "postgresql://reviewer:pw-secret@127.0.0.1:1/icons")
    note = api.predict([user], "ana", api_name="/bulk_approve")
    assert "1 approval(s) queued (not lost)" in note and "pw-secret" not in note
    monkeypatch.setenv("ICON_PIPELINE_DATABASE_URL", demo.env["ICON_PIPELINE_DATABASE_URL"])
    assert api.predict(api_name="/retry_pending").startswith("Saved 1 queued edit(s).")
    assert overrides.get(user).describe().startswith("approved by ana")


def test_captions_app_flags_contradictions_first_and_diffs_edits(served: dict[str, RunningApp]) -> None:
    from icon_pipeline.apps.captions import step_icon

    api = client(served["captions"])
    _, _, ids, *_ = api.predict("", "flagged", 1, api_name="/list_icons")
    assert ids == []  # the offline captioner contradicts no icon of the demo
    _, _, (bell_off,), *_ = api.predict("bell-off", "all", 1, api_name="/list_icons")
    _, _, generated, revision, _ = api.predict(bell_off, api_name="/show_icon")
    assert api.predict(bell_off, api_name="/caption_diff") == ""  # nothing edited yet
    generated = generated.splitlines()
    edit = ["notifications on", *generated[1:]]  # the first phrase replaced
    note, *_ = api.predict(bell_off, "\n".join(edit), "save edit", "ana", revision, api_name="/save_caption")
    assert note.startswith("**Saved:**")

    gallery, _, ids, *_ = api.predict("", "flagged", 1, api_name="/list_icons")
    assert ids == [bell_off] and gallery[0][1] == "bell-off ✎ ⚠"
    _, _, all_ids, *_ = api.predict("", "all", 1, api_name="/list_icons")
    assert all_ids[0] == bell_off  # flagged icons come first
    _, details, *_ = api.predict(bell_off, api_name="/show_icon")
    assert "Contradicts the icon's name or tags" in details
    assert "notifications on&quot;: says on, but &#x27;bell-off&#x27; is switched off" in details

    diff = api.predict(bell_off, api_name="/caption_diff")
    assert "Generated → edited by ana" in diff and "1 removed, 1 added" in diff
    assert (
        f'<li class="removed"><del style="color:#b42318;text-decoration:line-through">− {generated[0]}<'
        in diff
    )
    assert '<li class="added"><ins style="color:#067647;font-weight:600">+ notifications on</ins>' in diff
    assert diff.count('class="kept"') == len(generated) - 1

    # What the J / K keys (and the buttons they press) do on a page.
    assert [step_icon(all_ids, all_ids[0], 1), step_icon(all_ids, all_ids[-1], 1)] == [
        all_ids[1],
        all_ids[-1],
    ]
    assert [step_icon(all_ids, all_ids[1], -1), step_icon(all_ids, all_ids[0], -1)] == [
        all_ids[0],
        all_ids[0],
    ]
    assert [step_icon(all_ids, "", 1), step_icon(all_ids, "", -1), step_icon([], "x", 1)] == [
        all_ids[0],
        all_ids[-1],
        "x",
    ]


def test_with_basic_auth_a_bulk_approval_is_stored_under_the_signed_in_reviewer(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _captions_app_signed_in_as_bo(monkeypatch) as bo:
        _, _, ids, *_ = bo.predict("settings", "all", 1, api_name="/list_icons")
        # Bo sends Ana's name: the approval is still his.
        assert bo.predict(ids, "ana", api_name="/bulk_approve").startswith("**Approved 1 icon(s)** as bo:")
    with psycopg.connect(demo.db_url) as conn:
        stored = conn.execute(
            "SELECT author, status FROM caption_overrides WHERE icon_id = %s", ids
        ).fetchall()
    assert stored == [("bo", "approved")]


# --- dataset -------------------------------------------------------------------------------------


def test_dataset_app_shows_groups_heldout_and_eval(served: dict[str, RunningApp]) -> None:
    api = client(served["dataset"])
    summary = api.predict(api_name="/summary")
    assert (
        "groups** of 13 icons" in summary
        and "held out" in summary
        and "**Eval set** `eval_t2i_i2t.v1.jsonl`" in summary
    )
    rows, label, ids, page = api.predict("bell", "all", 1, api_name="/list_groups")
    names = [row[3] for row in rows]
    assert "bell" in names and "bell-off" in names  # variants grouped, bell-off apart
    bell_row = rows[names.index("bell")]
    assert bell_row[2] == 2 and bell_row[4] == "name" and "notification" in bell_row[5]
    images, details = api.predict(bell_row[0], api_name="/show_group")
    assert len(images) == 2 and {caption for _, caption in images} == {"bell", "bell (filled)"}
    assert "**Merged captions" in details and "name (bell)" in details

    heldout, _, _, _ = api.predict("", "heldout", 1, api_name="/list_groups")
    assert heldout and all(row[1] == "heldout" for row in heldout)
    rows, label, group_ids, _ = api.predict("", "most similar first", 1, api_name="/list_eval")
    sims = [row[2] for row in rows]
    assert rows and sims == sorted(sims, reverse=True) and all(0 <= s <= 1 for s in sims)
    assert all(row[1] for row in rows) and label.endswith("eval captions)")


# --- augment -------------------------------------------------------------------------------------


def _pixels(item) -> np.ndarray:
    image = item["image"]  # gradio_client downloads gallery images and gives their local path
    path = image if isinstance(image, str) else image["path"]
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_augment_app_draws_beside_the_original_and_rerolls(served: dict[str, RunningApp]) -> None:
    from gradio_client import Client

    api = Client(served["augment"].url, verbose=False, analytics_enabled=False)  # downloads the images
    settings = (1.0, 0.25, 1.0, 0.5, 1.5, 0.0, 0.7, 1.0, 0.0, 0.1)  # always downsample and blur
    gallery, note = api.predict("bell-off, user", 3, 7, *settings, api_name="/augment_preview")
    captions = [item["caption"] for item in gallery]
    assert captions[:4] == ["bell-off: original", "bell-off: draw 1", "bell-off: draw 2", "bell-off: draw 3"]
    assert len(gallery) == 2 * 4 and "Seed 7" in note and "downsample: p = 1.00" in note
    original, draw = _pixels(gallery[0]), _pixels(gallery[1])
    assert original.shape == draw.shape and np.abs(original - draw).mean() > 1  # really augmented
    again, _ = api.predict("bell-off, user", 3, 7, *settings, api_name="/augment_preview")
    assert np.array_equal(_pixels(again[1]), draw)  # same seed, same pixels
    rerolled, _ = api.predict("bell-off, user", 3, 8, *settings, api_name="/augment_preview")
    assert not np.array_equal(_pixels(rerolled[1]), draw)

    gallery, note = api.predict(
        "bell", 2, 0, 0.5, 0.25, 0.3, 2.0, 1.0, 0, 0.7, 1, 0, 0.1, api_name="/augment_preview"
    )
    assert gallery == [] and "**Error:** AugmentConfig.blur_radius must be (low, high)" in note
    gallery, note = api.predict("zzz-nothing", 2, 0, *settings, api_name="/augment_preview")
    assert gallery == [] and "No rendered icon matches" in note


# --- search --------------------------------------------------------------------------------------


def _html(panel: str | dict) -> str:
    """A panel's HTML, whether sent as a value or as an update (the compare panel shows and hides)."""
    return panel["value"] if isinstance(panel, dict) else panel


def _cards(panel: str | dict) -> list[tuple[str, str]]:
    """(icon id, name) of each result card in a panel's HTML, in order."""
    import re

    return re.findall(r"data-icon-id='([^']+)'[^>]*>.*?<span class='icon-name'>([^<]*)</span>", _html(panel))


def test_search_app_answers_text_and_image_queries_for_two_models(
    served: dict[str, RunningApp], demo: Demo, tmp_path: Path
) -> None:
    from gradio_client import handle_file

    api = client(served["search"])
    assert api.predict(api_name="/available_models") == ["hybrid", "bm25", "finetuned", "base"]
    first, second, message, _ = api.predict(
        "ring a bell", "base", "finetuned", True, [], [], api_name="/search_by_text"
    )
    assert "Pretrained image-text model only" in first and "Fine-tuned image-text model only" in _html(second)
    # Variants folded: 10 concepts of 13 icons, each once; bell's filled variant rides along.
    assert len(_cards(first)) == 10 and "**base**: 10 results (13 icons)" in message
    assert len({name for _, name in _cards(first)}) == 10 and first.count("class='icon-variants'") == 3
    unfolded, _, message, _ = api.predict(
        "ring a bell", "hybrid", "(none)", False, [], [], api_name="/search_by_text"
    )
    assert len(_cards(unfolded)) == 13 and "**hybrid**: 13 results" in message
    assert "Hybrid search (default)" in unfolded
    filled, _, _, _ = api.predict(
        "bell", "hybrid", "(none)", False, ["filled"], [], api_name="/search_by_text"
    )
    assert sorted(name for _, name in _cards(filled)) == ["bell", "folder", "trash"]
    docs, _, _, _ = api.predict(
        "folder", "bm25", "(none)", True, [], ["Document"], api_name="/search_by_text"
    )
    assert {name for _, name in _cards(docs)} == {"folder", "folder-plus"}

    import pandas as pd

    renders = pd.concat(pd.read_parquet(p) for p in (demo.data / "rendered" / "batches").glob("*.parquet"))
    stored = renders.loc[renders["icon_id"].str.endswith("folder-plus.svg"), "png_path"].iloc[0]
    render = str(demo.data / stored)  # stored relative to the data root
    first, second, message, shown = api.predict(
        handle_file(render), None, "base", "(none)", True, [], [], api_name="/search_by_image"
    )
    assert _cards(first)[0][1] == "folder-plus" and "1.000" in first and shown  # the query, as a picture
    _, keyword, message, _ = api.predict(
        handle_file(render), None, "base", "bm25", True, [], [], api_name="/search_by_image"
    )
    assert _cards(keyword) == [] and "bm25 takes words, not an image" in message

    _, _, message, _ = api.predict("   ", "base", "(none)", True, [], [], api_name="/search_by_text")
    assert message == "**Error:** text query is empty: type a few words, e.g. &#x27;delete file&#x27;"
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    _, _, message, _ = api.predict(
        handle_file(str(not_image)), None, "base", "(none)", True, [], [], api_name="/search_by_image"
    )
    # The upload's own name, never the server's temporary folder.
    assert message.startswith("**Error:** notes.png: not an image PIL can read")
    assert "/tmp" not in message and "gradio" not in message
    huge = tmp_path / "huge.png"
    Image.new("1", (7000, 7000)).save(huge)  # 49 Mpx, a few kB on disk
    _, _, message, _ = api.predict(
        handle_file(str(huge)), None, "base", "(none)", True, [], [], api_name="/search_by_image"
    )
    assert "7000x7000 = 49000000 pixels is over the 40000000-pixel limit" in message
    _, _, message, _ = api.predict(None, None, "base", "(none)", True, [], [], api_name="/search_by_image")
    assert message == "**Error:** upload or paste an image first (PNG, JPEG, GIF, WebP, BMP or SVG)"
    _, _, message, _ = api.predict("bell", "nope", "(none)", True, [], [], api_name="/search_by_text")
    assert "unknown model &#x27;nope&#x27;; choose one of: hybrid, bm25, finetuned, base" in message


# --- HTTP API ------------------------------------------------------------------------------------


def test_http_api_answers_text_and_image_and_pages(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    import httpx

    from icon_pipeline.apps.api import serve

    monkeypatch.delenv("ICON_PIPELINE_APP_AUTH", raising=False)
    api = serve(port=free_port(), block=False)
    try:
        assert api.url.startswith("http://127.0.0.1:")
        search = api.url + "api/search"
        assert httpx.get(api.url + "api/models", timeout=30).json()["models"][0] == "hybrid"
        page = httpx.get(search, params={"q": "ring a bell", "k": 4}, timeout=60).json()
        assert page["model"] == "hybrid" and page["has_more"] and len(page["results"]) == 4
        bell = page["results"][0]
        # Ids and files as the client may see them: no server folder anywhere in the answer.
        assert bell["name"] == "bell" and bell["channels"] and bell["file"] == "bell.svg"
        assert str(demo.root) not in json.dumps(page)
        assert [v["style"] for v in bell["variants"]] == ["filled"]
        # The icon itself, in the colour, stroke and background asked for.
        root = api.url.rstrip("/")
        svg_answer = httpx.get(root + bell["svg_url"] + "&color=%23ff0000", timeout=30)
        assert svg_answer.headers["content-type"].startswith("image/svg+xml")
        assert 'stroke="#ff0000"' in svg_answer.text and "currentColor" not in svg_answer.text
        png_answer = httpx.get(root + bell["png_url"] + "&size=48&stroke=1&color=0000ff", timeout=30)
        assert png_answer.status_code == 200, png_answer.text
        drawn = Image.open(io.BytesIO(png_answer.content))
        assert drawn.size == (48, 48) and drawn.mode == "RGBA" and drawn.getpixel((0, 0))[3] == 0
        assert (0, 0, 255) in {p[:3] for p in drawn.get_flattened_data() if p[3] == 255}
        on_white = httpx.get(root + bell["png_url"] + "&background=%23fff", timeout=30)
        assert Image.open(io.BytesIO(on_white.content)).mode == "RGB"
        bad_colour = httpx.get(root + bell["png_url"] + "&color=reddish", timeout=30)
        assert bad_colour.status_code == 400 and "hex colour" in bad_colour.json()["detail"]
        unknown_icon = httpx.get(api.url + "api/icon.svg", params={"id": "mine:nope"}, timeout=30)
        assert unknown_icon.status_code == 404 and "mine:nope" in unknown_icon.json()["detail"]
        # An unknown filter value is refused with the choices, not answered with nothing.
        bad_style = httpx.get(search, params={"q": "bell", "style": "glossy"}, timeout=30)
        assert bad_style.status_code == 400
        assert bad_style.json()["detail"] == "unknown style 'glossy'; choose from: filled"
        bad_category = httpx.get(search, params={"q": "bell", "category": "Nope"}, timeout=30)
        assert bad_category.status_code == 400 and "choose from: " in bad_category.json()["detail"]
        # The docs' assets come from this server, not a CDN.
        docs = httpx.get(api.url + "api/docs", timeout=30).text
        assert "cdn." not in docs and "/api/docs-assets/swagger-ui-bundle.js" in docs
        assert httpx.get(api.url + "api/docs-assets/swagger-ui-bundle.js", timeout=30).status_code == 200
        assert "cdn." not in httpx.get(api.url + "api/redoc", timeout=30).text
        rest = httpx.get(search, params={"q": "ring a bell", "k": 4, "offset": 8}, timeout=60).json()
        assert [r["rank"] for r in rest["results"]] == [9, 10] and not rest["has_more"]
        svg = (demo.root / "icons" / "folder-plus.svg").read_bytes()
        by_body = httpx.post(search + "/image", content=svg, params={"k": 2, "model": "BASE"}, timeout=60)
        assert by_body.status_code == 200 and by_body.json()["results"][0]["name"] == "folder-plus"
        by_json = httpx.post(search, json={"image": base64.b64encode(svg).decode(), "k": 1}, timeout=60)
        assert by_json.json()["results"][0]["name"] == "folder-plus"
        bad = httpx.post(search, json={"text": "bell", "model": "nope"}, timeout=30)
        assert (
            bad.status_code == 400 and "choose one of: hybrid, bm25, finetuned, base" in bad.json()["detail"]
        )
        assert httpx.post(search, json={}, timeout=30).status_code == 400
    finally:
        api.close()

    monkeypatch.setenv("ICON_PIPELINE_APP_AUTH", "ana:let-me-in")
    api = serve(port=free_port(), block=False)
    try:
        search = api.url + "api/search"
        refused = httpx.get(search, params={"q": "bell"}, timeout=30)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Basic"
        wrong = httpx.get(search, params={"q": "bell"}, auth=("ana", "nope"), timeout=30)
        assert wrong.status_code == 401 and "let-me-in" not in wrong.text
        signed = httpx.get(search, params={"q": "bell", "k": 1}, auth=("ana", "let-me-in"), timeout=60)
        assert signed.status_code == 200 and signed.json()["results"][0]["name"] == "bell"
    finally:
        api.close()


# --- CLI and judgements ----------------------------------------------------------------------------


def test_cli_search_checks_input_first_and_lists_models(
    demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from icon_pipeline.cli import main

    assert main(["search", "bell", "--model", "NOPE"]) == 2
    assert "unknown model 'NOPE'; choose one of: hybrid, bm25, finetuned, base" in capsys.readouterr().err
    assert main(["search", "ring a bell", "--model", "Base", "-k", "2"]) == 0
    out, err = capsys.readouterr()
    assert "(base channel, cosine)" in out and ".svg" in out and str(demo.root) not in out  # relative
    assert "%|" not in err and "Loading" not in err  # no weight-loading progress bars
    assert main(["search", "--image", str(demo.root / "icons" / "folder-plus.svg"), "-k", "1"]) == 0
    assert "folder-plus" in capsys.readouterr().out
    assert main(["search", "bell", "--style", "glossy"]) == 2
    assert "unknown style 'glossy'; choose from: filled" in capsys.readouterr().err

    # With a running API named in the environment the CLI asks it (models warm there) and prints
    # the same page: one layout for both.
    from icon_pipeline.apps.api import serve

    searches = [
        ["search", "ring a bell", "-k", "3", "--json"],
        ["search", "bell", "--style", "filled", "--json"],
    ]
    searches.append(["search", "--image", str(demo.root / "icons" / "folder-plus.svg"), "-k", "2", "--json"])
    here = []
    for argv in searches:
        assert main([*argv, "--here"]) == 0
        here.append(json.loads(capsys.readouterr().out))
    monkeypatch.delenv("ICON_PIPELINE_APP_AUTH", raising=False)
    running = serve(port=free_port(), block=False)
    try:
        monkeypatch.setenv("ICON_PIPELINE_API_URL", running.url)
        for argv, expected in zip(searches, here, strict=True):
            assert main(argv) == 0
            out, err = capsys.readouterr()
            assert same_page(json.loads(out), expected) and "searching here" not in err
        assert main(["search", "bell", "--model", "nope"]) == 2  # the API's refusal, as one line
        assert "unknown model 'nope'; choose one of" in capsys.readouterr().err
    finally:
        running.close()
    monkeypatch.setenv("ICON_PIPELINE_API_URL", f"http://127.0.0.1:{free_port()}/")  # nothing there
    assert main(searches[0]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == here[0] and "no search API answers" in err
    monkeypatch.delenv("ICON_PIPELINE_API_URL")

    # Bad input fails before the database or any model is touched: here there is no database at all.
    monkeypatch.setenv("ICON_PIPELINE_DATABASE_URL", "postgresql://designer:pw@127.0.0.1:1/icons")
    broken = tmp_path / "broken.svg"
    broken.write_text("<svg xmlns='http://www.w3.org/2000/svg'><path d=")
    for argv, expected in [
        (["search", "  "], "text query is empty"),
        (["search", "bell", "-k", "0"], "k must be between 1 and 1000, got 0"),
        (["search", "--image", str(tmp_path / "missing.png")], "missing.png: cannot read file"),
        (["search", "--image", str(broken)], "broken.svg: cannot render this SVG"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and "127.0.0.1:1" not in err, argv


def test_judgements_are_stored_and_evaluated_as_real_queries(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    from icon_pipeline.cli import main
    from icon_pipeline.search.judgements import ensure_table, read_judgements, record_judgement
    from icon_pipeline.search.query import prepare_query_image

    with psycopg.connect(demo.db_url, autocommit=True) as conn:
        ensure_table(conn)
        ensure_table(conn)  # idempotent
        record_judgement(conn, "ring a bell", "mine:bell.svg", True, model="hybrid", judged_by="ana")
        record_judgement(conn, "ring a bell", "mine:trash.svg", True)
        record_judgement(conn, "ring a bell", "mine:trash.svg", False, judged_by="bo")  # outvoted
        image = prepare_query_image(demo.root / "icons" / "folder-plus.svg")
        record_judgement(conn, image, "mine:folder-plus.svg", True)
        record_judgement(conn, "nothing good", "mine:home.svg", False)
        stored = read_judgements(conn)
    assert [(j.query_kind, j.icon_id, j.relevant, j.judged_by) for j in stored[:3]] == [
        ("text", "mine:bell.svg", True, "ana"),
        ("text", "mine:trash.svg", True, None),
        ("text", "mine:trash.svg", False, "bo"),
    ]
    assert stored[3].query_image_sha256 and stored[3].query_text is None

    assert main(["evaluate", "--judgements", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == 2 and "judgements" in report["file"]
    assert report["skipped"][0]["reason"].startswith("1 judged quer")
    rows = {(r["channel"], r["kind"]): r for r in report["results"]}
    assert rows[("hybrid", "text")]["n_queries"] == 1 and rows[("hybrid", "image")]["n_queries"] == 1
    assert rows[("hybrid", "text")]["recall@1"] == 1.0  # bell first for "ring a bell"
    assert main(["evaluate"]) == 2
    assert "give a queries file, --judgements, or both" in capsys.readouterr().err


def test_search_app_says_when_the_index_is_unreachable(
    served: dict[str, RunningApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = client(served["search"])
    monkeypatch.setenv("ICON_PIPELINE_DATABASE_URL", "postgresql://designer:pw-secret@127.0.0.1:1/icons")
    first, second, message, _ = api.predict(
        "bell", "base", "(none)", True, [], [], api_name="/search_by_text"
    )
    assert first == _html(second) == "" and message.startswith("**Error:** the search index is unreachable")
    assert "pw-secret" not in message


# --- before the assets exist -------------------------------------------------------------------


def test_apps_started_before_their_assets_say_what_to_materialize(
    postgres: DatabaseInfo, project_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icon_pipeline.apps import augment, dataset, search

    empty = demo_environment(project_tmp / f"empty-{uuid.uuid4().hex[:6]}", postgres)
    for key, value in empty.env.items():
        monkeypatch.setenv(key, value)
    app = launch("captions", port=free_port(), block=False)
    try:
        gallery, page_text, *_ = client(app).predict("", "all", 1, api_name="/list_icons")
    finally:
        app.close()
    assert gallery == [] and "`icon_catalog` has not been materialized yet" in page_text
    assert "icon-pipeline materialize icon_captions" in page_text
    assert "`training_pairs` has not been materialized yet" in dataset.summary()
    assert (
        "`rendered_icons` has not been materialized yet" in augment.augment_preview("", 1, 0, *[0.5] * 10)[1]
    )
    *_, note, ready = search.page_state()
    assert not ready and "materialize `icon_embeddings`" in note


def test_search_on_an_empty_catalog_is_one_clear_line(
    postgres: DatabaseInfo, project_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalog with no icon (as an unmounted share once left it): the CLI prints one line, no
    traceback, and the search page says what to do."""
    import os
    import subprocess

    from icon_pipeline.apps import search
    from icon_pipeline.core.storage import pairs_path, write_table
    from icon_pipeline.library.catalog import write_catalog

    empty = demo_environment(project_tmp / f"no-icons-{uuid.uuid4().hex[:6]}", postgres)
    for key, value in empty.env.items():
        monkeypatch.setenv(key, value)
    write_catalog([])
    import pandas as pd

    write_table(pd.DataFrame({"group_id": [], "members": [], "captions": []}), pairs_path())
    result = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "icon-pipeline"), "search", "arrow", "--model", "bm25"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **empty.env},
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0 and "Traceback" not in output, output
    assert output.splitlines()[-1].startswith("icon-pipeline: error:"), output
    assert "the icon catalog holds no icons" in output, output
    *_, note, ready = search.page_state()
    assert not ready and "materialize" in note, note


def test_every_app_builds(demo: Demo) -> None:
    for name in ("captions", "dataset", "augment", "search"):
        assert build_app(name).title


def test_folding_keeps_differently_named_look_alikes_apart() -> None:
    """A training group may hold icons that only look alike (Tabler's brightness, contrast and
    percentage-50): search folds only the variants of one name into a result."""
    from icon_pipeline.search.query import SearchHit
    from icon_pipeline.search.service import fold_hits

    ids = ["outline:brightness", "outline:contrast", "filled:brightness", "outline:percentage-50"]
    names = {i: i.split(":")[1] for i in ids}
    hits = [SearchHit(i, names[i], "g-look-alike", 1.0 - n / 10, None) for n, i in enumerate(ids)]
    folded = fold_hits(hits, names)
    assert [(g.hit.icon_id, [v.icon_id for v in g.variants]) for g in folded] == [
        ("outline:brightness", ["filled:brightness"]),
        ("outline:contrast", []),
        ("outline:percentage-50", []),
    ]
