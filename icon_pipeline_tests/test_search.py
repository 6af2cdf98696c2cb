"""Search by text and image, query validation, BM25 and the benchmark report, on a tiny real model.

The module builds one tiny SigLIP2 checkpoint (untrained: its ranking is arbitrary except that an
image is closest to itself), renders 30 Tabler icons and indexes them in a database of its own.
"""

from __future__ import annotations

import io
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest
from PIL import Image

from icon_pipeline.augment import degrade
from icon_pipeline.database import DatabaseInfo
from icon_pipeline.index import UnknownModelError, write_embeddings
from icon_pipeline.lexical import BM25Index, LibraryKeywords, tokenize
from icon_pipeline.modeling import EncoderBundle, build_base_checkpoint, load_checkpoint
from icon_pipeline.rendering import render_icon
from icon_pipeline.report import BM25_BASELINE, MODES, PIXEL_BASELINE, SUBSETS, TASKS, run_benchmark
from icon_pipeline.search import (
    MAX_QUERY_CHARS,
    QueryError,
    SearchHit,
    prepare_query_image,
    search_image,
    search_keywords,
    search_text,
    validate_text_query,
)

CATEGORIES = (
    "Weather",
    "Animals",
    "Laundry",
    "Charts",
    "Zodiac",
    "Gestures",
    "Database",
    "Gender",
    "Mood",
    "Games",
)
MODEL_ID = "tiny-test"


@dataclass
class IndexedIcons:
    db_url: str
    bundle: EncoderBundle
    names: dict[str, str]  # icon_id -> name
    tags: dict[str, list[str]]
    icon_to_group: dict[str, str]
    png_paths: dict[str, Path]

    @property
    def catalog(self) -> dict[str, tuple[str, str | None]]:
        return {i: (self.names[i], str(self.png_paths[i])) for i in self.names}


@pytest.fixture(scope="module")
def indexed(postgres: DatabaseInfo, tabler_package: Path, project_tmp: Path) -> Iterator[IndexedIcons]:
    work = project_tmp / f"search-{uuid.uuid4().hex[:8]}"
    (work / "png").mkdir(parents=True)
    icons = json.loads((tabler_package / "icons.json").read_text())
    chosen = []
    for category in CATEGORIES:
        in_category = sorted(
            n for n, v in icons.items() if v["category"] == category and "outline" in v["styles"]
        )
        chosen += in_category[:3]
    names, tags, groups, pngs = {}, {}, {}, {}
    for name in chosen:
        icon_id = f"tabler:{name}"
        image = render_icon(tabler_package / "icons" / "outline" / f"{name}.svg")
        pngs[icon_id] = work / "png" / f"{name}.png"
        image.save(pngs[icon_id])
        names[icon_id], tags[icon_id], groups[icon_id] = name, icons[name]["tags"], icons[name]["category"]
    captions = [" ".join(t) for t in tags.values()] + list(names.values())
    bundle = load_checkpoint(build_base_checkpoint(work / "ckpt", captions, size="tiny"))

    database = f"search_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.libpq_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    db_url = postgres.libpq_url.replace("/postgres?", f"/{database}?")
    icon_ids = list(names)
    embeddings = bundle.embed_images([Image.open(pngs[i]) for i in icon_ids])
    with psycopg.connect(db_url) as conn:
        write_embeddings(conn, MODEL_ID, icon_ids, [groups[i] for i in icon_ids], embeddings)
    yield IndexedIcons(db_url, bundle, names, tags, groups, pngs)
    with psycopg.connect(postgres.libpq_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# --- search -----------------------------------------------------------------------------------


@pytest.mark.parametrize("exact", [False, True])
def test_image_search_finds_the_icon_first(indexed: IndexedIcons, exact: bool) -> None:
    with psycopg.connect(indexed.db_url) as conn:
        for icon_id in list(indexed.names)[::7]:
            hits = search_image(
                conn,
                indexed.bundle,
                MODEL_ID,
                indexed.png_paths[icon_id],
                k=5,
                catalog=indexed.catalog,
                exact=exact,
            )
            assert len(hits) == 5
            assert hits[0].icon_id == icon_id and hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert hits[0].name == indexed.names[icon_id] and hits[0].png_path == str(
                indexed.png_paths[icon_id]
            )
            assert hits[0].group_id == indexed.icon_to_group[icon_id]
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_image_search_accepts_bytes_and_pil(indexed: IndexedIcons) -> None:
    icon_id = next(iter(indexed.names))
    data = indexed.png_paths[icon_id].read_bytes()
    with psycopg.connect(indexed.db_url) as conn:
        from_bytes = search_image(conn, indexed.bundle, MODEL_ID, data, k=1)
        from_pil = search_image(conn, indexed.bundle, MODEL_ID, Image.open(io.BytesIO(data)), k=1)
    assert from_bytes[0].icon_id == from_pil[0].icon_id == icon_id
    assert from_bytes[0].name == icon_id  # no catalog given: the id stands in for the name


def test_text_search_returns_k_named_hits(indexed: IndexedIcons) -> None:
    with psycopg.connect(indexed.db_url) as conn:
        hits = search_text(
            conn, indexed.bundle, MODEL_ID, "  sunny   weather ", k=10, catalog=indexed.catalog
        )
    assert len(hits) == 10 and all(isinstance(h, SearchHit) for h in hits)
    assert all(h.name == indexed.names[h.icon_id] for h in hits)
    assert len({h.icon_id for h in hits}) == 10


def test_unknown_model_fails_before_encoding(indexed: IndexedIcons) -> None:
    with (
        psycopg.connect(indexed.db_url) as conn,
        pytest.raises(UnknownModelError, match=f"'nope'; available models: {MODEL_ID}"),
    ):
        search_text(conn, indexed.bundle, "nope", "delete")


# --- keyword search (no model needed) ----------------------------------------------------------


def test_keyword_search_ranks_by_shared_words_and_pads_with_nothing() -> None:
    keywords = LibraryKeywords(
        index=BM25Index.build(
            {
                "eye-off": ["eye off", "hide", "hide layer", "invisible"],
                "eye": ["eye", "show", "visible"],
                "layers": ["layers", "stack", "layer order"],
            }
        ),
        groups={"eye-off": "g-eye-off", "eye": "g-eye", "layers": "g-layers"},
    )
    catalog = {"eye-off": ("eye-off (outline)", "/renders/eye-off.png")}
    hits = search_keywords(keywords, "  Hide   layers ", 10, catalog=catalog)
    assert [h.icon_id for h in hits] == ["eye-off", "layers"]  # no guess for "eye"
    assert hits[0] == SearchHit(
        "eye-off", "eye-off (outline)", "g-eye-off", hits[0].score, "/renders/eye-off.png"
    )
    assert hits[0].score > hits[1].score > 0
    assert hits[1].name == "layers" and hits[1].png_path is None  # not in the catalog: shown by id
    assert search_keywords(keywords, "teapot", 10) == []
    with pytest.raises(QueryError, match="text query is empty"):
        search_keywords(keywords, "   ", 10)


# --- query validation (no model needed) -------------------------------------------------------


def test_text_query_validation() -> None:
    assert validate_text_query("  hide \n layer ") == "hide layer"
    with pytest.raises(QueryError, match="text query is empty"):
        validate_text_query(" \t\n")
    assert validate_text_query("a" * MAX_QUERY_CHARS) == "a" * MAX_QUERY_CHARS
    with pytest.raises(
        QueryError, match=f"{MAX_QUERY_CHARS + 1} characters long; the limit is {MAX_QUERY_CHARS}"
    ):
        validate_text_query("a" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(QueryError, match="must be a string"):
        validate_text_query(None)  # type: ignore[arg-type]


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_bad_images_fail_clearly(fresh_dir: Path) -> None:
    with pytest.raises(QueryError, match="cannot read file"):
        prepare_query_image(fresh_dir / "missing.png")
    garbage = fresh_dir / "garbage.png"
    garbage.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(QueryError, match=r"garbage.png: not an image PIL can read"):
        prepare_query_image(garbage)
    empty = fresh_dir / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(QueryError, match="empty file"):
        prepare_query_image(empty)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    truncated = fresh_dir / "truncated.png"
    truncated.write_bytes(_png_bytes(noise)[:20_000])
    with pytest.raises(QueryError, match="truncated.png: unreadable or truncated image"):
        prepare_query_image(truncated)


def test_decompression_bombs_are_refused() -> None:
    # Over our own limit (40 Mpx) though under PIL's warning threshold: refused from the header.
    big = _png_bytes(Image.new("1", (7000, 7000)))
    with pytest.raises(QueryError, match="7000x7000 = 49000000 pixels is over the 40000000-pixel limit"):
        prepare_query_image(big)
    # Over PIL's MAX_IMAGE_PIXELS: PIL's warning is turned into a refusal too.
    huge = _png_bytes(Image.new("1", (10000, 10000)))
    with pytest.raises(QueryError, match="too large"):
        prepare_query_image(huge)


def test_animated_takes_first_frame_and_any_aspect_is_padded_white() -> None:
    red, blue = Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 255))
    gif = io.BytesIO()
    red.save(gif, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    prepared = prepare_query_image(gif.getvalue())
    assert prepared.size == (224, 224) and prepared.mode == "RGB"
    r, g, b = prepared.getpixel((112, 112))
    assert r > 200 and b < 50  # the red first frame, not the blue second one

    tall = Image.new("RGB", (100, 300), (0, 0, 0))
    square = prepare_query_image(tall)
    assert square.size == (224, 224)
    assert square.getpixel((5, 112)) == (255, 255, 255)  # padding left and right is white
    assert square.getpixel((112, 112)) == (0, 0, 0)

    transparent = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert prepare_query_image(transparent).getpixel((10, 10)) == (255, 255, 255)


# --- BM25 -------------------------------------------------------------------------------------


def test_bm25_ranks_the_obvious_match_first() -> None:
    documents = {
        "trash": ["trash", "delete", "bin", "remove", "garbage"],
        "folder-plus": ["folderPlus", "create new folder", "add directory"],
        "arrow-left": ["arrow-left", "back", "previous", "direction"],
        "file": ["file", "document", "paper"],
        "empty": ["the", "of"],
    }
    index = BM25Index.build(documents)
    assert index.ranked_ids("delete the garbage", 3)[0] == "trash"
    assert index.ranked_ids("paper files", 3)[0] == "file"  # plural folded
    assert index.ranked_ids("create a new folder", 3)[0] == "folder-plus"
    assert index.ranked_ids("go back", 3) == ["arrow-left"]  # only matching icons are returned
    assert index.search("zebra unicorn", 5) == []
    assert tokenize("folderPlus_Icon files") == ["folder", "plus", "file"]
    with pytest.raises(ValueError, match="at least one document"):
        BM25Index.build({})


# --- the report -------------------------------------------------------------------------------


def _queries(indexed: IndexedIcons, out: Path) -> list[dict]:
    rng = random.Random(0)
    rows: list[dict] = []
    icon_ids = list(indexed.names)
    for n, icon_id in enumerate(icon_ids[:12]):
        group = indexed.icon_to_group[icon_id]
        tag = indexed.tags[icon_id][0]
        heldout = n % 4 == 0
        rows.append(
            {
                "query_id": f"t{n}",
                "task": "text2img",
                "text": tag,
                "relevant_group_ids": [group],
                "heldout": heldout,
            }
        )
        rows.append(
            {
                "query_id": f"s{n}",
                "task": "semantic2img",
                "text": f"i want to show {tag}",
                "relevant_group_ids": [group],
                "heldout": heldout,
            }
        )
        image_path = out / f"q{n}.png"
        degrade(Image.open(indexed.png_paths[icon_id]), "downsample", rng).save(image_path)
        rows.append(
            {
                "query_id": f"i{n}",
                "task": "img2img",
                "image_path": str(image_path),
                "relevant_group_ids": [group],
                "source_icon_id": icon_id,
                "heldout": heldout,
            }
        )
    broken = out / "broken.png"
    broken.write_bytes(b"not a png")
    rows.append(
        {
            "query_id": "broken",
            "task": "img2img",
            "image_path": str(broken),
            "relevant_group_ids": ["Weather"],
            "source_icon_id": icon_ids[0],
            "heldout": False,
        }
    )
    return rows


def test_report_has_every_task_model_mode_and_metric(indexed: IndexedIcons, fresh_dir: Path) -> None:
    queries = _queries(indexed, fresh_dir)
    lexical = BM25Index.build({i: [indexed.names[i], *indexed.tags[i]] for i in indexed.names})
    with psycopg.connect(indexed.db_url) as conn:
        report = run_benchmark(
            conn,
            queries,
            {MODEL_ID: indexed.bundle},
            indexed.icon_to_group,
            lexical,
            icon_images=indexed.png_paths,
        )
    data = json.loads(json.dumps(report.to_json()))  # JSON-able, NaN-free
    assert data["ks"] == [1, 5, 10, 30] and data["map_k"] == 30
    assert data["query_counts"] == {"text2img": 12, "semantic2img": 12, "img2img": 12}
    assert [f["query_id"] for f in data["failures"]] == ["broken"]
    metrics = {"n_queries", "recall@1", "recall@5", "recall@10", "recall@30", "map@30", "latency_p50_ms"}
    for task in TASKS:
        for mode in MODES:
            for subset in SUBSETS:
                cell = data["results"][task][MODEL_ID][mode][subset]
                assert metrics <= set(cell), (task, mode, subset)
                assert cell["n_queries"] == {"all": 12, "seen": 9, "heldout": 3}[subset]
                assert (
                    0 <= cell["recall@1"] <= cell["recall@5"] <= cell["recall@10"] <= cell["recall@30"] <= 1
                )
                assert cell["latency_p50_ms"] > 0
    for task in ("text2img", "semantic2img"):
        assert data["results"][task][BM25_BASELINE]["lexical"]["all"]["n_queries"] == 12
    pixels = data["results"]["img2img"][PIXEL_BASELINE]["numpy"]["all"]
    # A downsampled copy's siblings are found by pixels well above chance (3 of 30 icons per group).
    assert pixels["recall@30"] == 1.0 and pixels["n_queries"] == 12
    # 30 icons, 29 candidates once the source is excluded: R@30 finds every group.
    assert data["results"]["img2img"][MODEL_ID]["exact"]["all"]["recall@30"] == 1.0
    # HNSW on 30 rows is exact.
    assert data["results"]["img2img"][MODEL_ID]["hnsw"]["all"]["ann_overlap@10"] == 1.0

    markdown = report.to_markdown()
    for task in TASKS:
        assert f"### {task}" in markdown
    assert f"| {MODEL_ID} | hnsw | heldout | 3 |" in markdown and PIXEL_BASELINE in markdown
    paths = report.plots(fresh_dir / "plots")
    assert [p.name for p in paths] == [f"recall_at_k_{t}.png" for t in TASKS]
    assert all(Image.open(p).size[0] > 100 for p in paths)


def test_report_refuses_bad_queries_and_dimension_mismatch(indexed: IndexedIcons) -> None:
    with psycopg.connect(indexed.db_url) as conn:
        with pytest.raises(ValueError, match="query q1: unknown task 'sketch2img'"):
            run_benchmark(
                conn,
                [{"query_id": "q1", "task": "sketch2img", "relevant_group_ids": ["g"]}],
                {},
                indexed.icon_to_group,
            )

        class WrongDim:
            dim = 8

            def embed_texts(self, texts):  # pragma: no cover - never reached
                raise AssertionError

            embed_images = embed_texts

        row = {"query_id": "q", "task": "text2img", "text": "sun", "relevant_group_ids": ["Weather"]}
        with pytest.raises(ValueError, match="encoder dimension 8 differs from the stored embeddings' 64"):
            run_benchmark(conn, [row], {MODEL_ID: WrongDim()}, indexed.icon_to_group)
