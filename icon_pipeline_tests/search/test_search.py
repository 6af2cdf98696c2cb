"""Search by text and image: each channel, hybrid search, fusion and its fit, query validation,
BM25 and the benchmark report, on real models and a real PostgreSQL.

The module builds one tiny SigLIP2 checkpoint (untrained: its ranking is arbitrary except that an
image is closest to itself), renders 30 Tabler icons, and indexes them in a database of its own with
the packaged sentence encoder over their names and tags and their normalised drawings.
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

from icon_pipeline.benchmark.report import (
    BM25_BASELINE,
    HYBRID_UNFOLDED,
    MODES,
    PIXEL_BASELINE,
    SUBSETS,
    TASKS,
    channel_colour,
    run_benchmark,
)
from icon_pipeline.core.database import DatabaseInfo
from icon_pipeline.dataset.augment import degrade
from icon_pipeline.model.checkpoint import EncoderBundle, build_base_checkpoint, load_checkpoint
from icon_pipeline.model.sentence_encoder import load_sentence_encoder
from icon_pipeline.render.rasterize import render_icon
from icon_pipeline.search.channels import (
    CAPTIONS,
    CHANNELS,
    HYBRID,
    IMAGE,
    KEYWORDS,
    PIXELS,
    TEXT,
    Channel,
    ChannelInfo,
    ChannelSource,
    KeywordChannel,
    caption_channel,
    channel_info,
    model_channel,
    pixel_channel,
)
from icon_pipeline.search.fusion import FusionSettings
from icon_pipeline.search.hybrid import HybridSearch, LibraryIndex
from icon_pipeline.search.index import (
    TEXT_ROWS_PER_ICON,
    TEXT_SOFTMAX_TEMPERATURE,
    DimensionMismatchError,
    UnknownModelError,
    get_model_index,
    write_embeddings,
)
from icon_pipeline.search.keywords import BM25Index
from icon_pipeline.search.pixels import pixel_vector
from icon_pipeline.search.query import (
    prepare_query_image,
)
from icon_pipeline.search.service import ChannelSet

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
    rows = [(i, t) for i in icon_ids for t in dict.fromkeys([names[i].replace("-", " "), *tags[i]])]
    texts = [t for _, t in rows]
    with psycopg.connect(db_url, autocommit=True) as conn:
        write_embeddings(conn, MODEL_ID, icon_ids, [groups[i] for i in icon_ids], embeddings)
        write_embeddings(
            conn,
            CAPTIONS,
            [i for i, _ in rows],
            [groups[i] for i, _ in rows],
            load_sentence_encoder().embed(texts),
            texts=texts,
        )
        drawings = np.stack([pixel_vector(Image.open(pngs[i])) for i in icon_ids])
        write_embeddings(conn, PIXELS, icon_ids, [groups[i] for i in icon_ids], drawings)
    yield IndexedIcons(db_url, bundle, names, tags, groups, pngs)
    with psycopg.connect(postgres.libpq_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _hybrid(conn: psycopg.Connection, indexed: IndexedIcons, settings: FusionSettings | None = None):
    """Hybrid search over every channel of the module's index, equal weights unless given."""
    keywords = BM25Index.build({i: [indexed.names[i], *indexed.tags[i]] for i in indexed.names})
    channels = {
        KEYWORDS: KeywordChannel(keywords),
        CAPTIONS: caption_channel(conn, load_sentence_encoder()),
        MODEL_ID: model_channel(conn, MODEL_ID, indexed.bundle),
        PIXELS: pixel_channel(conn),
    }
    settings = settings or FusionSettings.unfitted(
        {
            "words": [KEYWORDS, CAPTIONS, MODEL_ID],
            "sentence": [KEYWORDS, CAPTIONS, MODEL_ID],
            "image": [MODEL_ID, PIXELS],
        }
    )
    return HybridSearch(channels, settings, LibraryIndex.build(indexed.icon_to_group, indexed.names))


# --- channels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("exact", [False, True])
def test_image_search_finds_the_icon_first(indexed: IndexedIcons, exact: bool) -> None:
    with psycopg.connect(indexed.db_url) as conn:
        channel = model_channel(conn, MODEL_ID, indexed.bundle)
        for icon_id in list(indexed.names)[::7]:
            query = prepare_query_image(indexed.png_paths[icon_id])
            hits = channel.search(channel.encode([query])[0], 5, exact=exact)
            assert len(hits) == 5
            assert hits[0].icon_id == icon_id and hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_image_queries_accept_bytes_and_pil(indexed: IndexedIcons) -> None:
    icon_id = next(iter(indexed.names))
    data = indexed.png_paths[icon_id].read_bytes()
    with psycopg.connect(indexed.db_url) as conn:
        channel = model_channel(conn, MODEL_ID, indexed.bundle)
        first = [
            channel.search(channel.encode([prepare_query_image(source)])[0], 1)[0].icon_id
            for source in (data, Image.open(io.BytesIO(data)))
        ]
    assert first == [icon_id, icon_id]


def test_the_caption_channel_scores_each_icon_by_a_soft_maximum_of_its_texts(indexed: IndexedIcons) -> None:
    encoder = load_sentence_encoder()
    texts_of = {i: {indexed.names[i].replace("-", " "), *indexed.tags[i]} for i in indexed.names}
    distinct = sorted(set().union(*texts_of.values()))
    vectors = dict(zip(distinct, encoder.embed(distinct), strict=True))
    with psycopg.connect(indexed.db_url) as conn:
        table = get_model_index(conn, CAPTIONS)
        # One row per distinct text, however many icons carry it.
        assert table.row_kind == "text" and table.rows == len(distinct)
        channel = caption_channel(conn, encoder)
        name = indexed.names[next(iter(indexed.names))]
        query = channel.encode([name.replace("-", " ")])[0]
        # numpy: the nearest texts (as many as the search reads), then per icon tau * ln(sum(exp(cos / tau))).
        cosine = {t: float(v @ query) for t, v in vectors.items()}
        nearest = set(sorted(distinct, key=lambda t: -cosine[t])[: 10 * TEXT_ROWS_PER_ICON])
        tau = TEXT_SOFTMAX_TEMPERATURE
        expected = {
            i: tau * np.log(sum(np.exp(cosine[t] / tau) for t in texts & nearest))
            for i, texts in texts_of.items()
            if texts & nearest
        }
        for exact in (True, False):
            hits = channel.search(query, 10, exact=exact)
            assert indexed.names[hits[0].icon_id] == name  # its own name, word for word, first
            assert hits[0].score >= 1.0 - 1e-3  # at least the cosine of that name
            assert len({h.icon_id for h in hits}) == len(hits) == 10  # each icon once
            if exact:
                for hit in hits:
                    assert hit.score == pytest.approx(expected[hit.icon_id], abs=2e-3)


def test_the_pixel_channel_finds_the_icon_of_a_screenshot(indexed: IndexedIcons) -> None:
    rng = random.Random(1)
    with psycopg.connect(indexed.db_url) as conn:
        channel = pixel_channel(conn)
        found = 0
        for icon_id in list(indexed.names)[:10]:
            for kind in ("dark", "aspect", "crop"):
                shot = prepare_query_image(degrade(Image.open(indexed.png_paths[icon_id]), kind, rng))
                found += channel.search(channel.encode([shot])[0], 1)[0].icon_id == icon_id
        assert found >= 27, found  # dark theme, padding and crops are undone before comparing


def test_unknown_model_and_wrong_dimension_are_clear(indexed: IndexedIcons) -> None:
    with psycopg.connect(indexed.db_url) as conn:
        with pytest.raises(UnknownModelError, match=f"'nope'; available models: .*{MODEL_ID}"):
            model_channel(conn, "nope", indexed.bundle)
        channel = pixel_channel(conn)
        with pytest.raises(
            DimensionMismatchError, match="dimension 3 but the stored embeddings have dimension 1024"
        ):
            channel.search(np.ones(3, np.float32) / np.sqrt(3), 5)


def test_a_new_channel_is_one_registry_entry(indexed: IndexedIcons, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a channel is lives in channels.CHANNELS: the service lists, orders, builds and checks
    the kinds of a new one from its entry alone; a model id not listed is an image-text model."""
    built: list[str] = []

    def build_names(source: ChannelSource, name: str) -> Channel:
        built.append(name)
        return KeywordChannel(BM25Index.build({i: [n] for i, n in indexed.names.items()}), name=name)

    names_only = ChannelInfo("names", TEXT, "Icon names only", "BM25 over names", build_names, indexed=False)
    with psycopg.connect(indexed.db_url, autocommit=True) as conn:
        before = ChannelSet(conn).available()
        assert before == [HYBRID, KEYWORDS, CAPTIONS, PIXELS, MODEL_ID]
        assert (
            channel_info(MODEL_ID).kinds == TEXT | IMAGE
            and "image-text" in channel_info(MODEL_ID).description.lower()
        )

        monkeypatch.setitem(CHANNELS, "names", names_only)
        channels = ChannelSet(conn)
        # A table-less channel answers at once, after the listed ones and before unlisted model ids.
        assert channels.available() == [HYBRID, KEYWORDS, CAPTIONS, PIXELS, "names", MODEL_ID]
        icon_id, name = sorted(indexed.names.items())[0]
        found = channels.channel("names").search(name.replace("-", " "), 3)
        assert built == ["names"] and found[0].icon_id == icon_id
        assert channel_info("names").description == "Icon names only"


# --- hybrid search over the channels ------------------------------------------------------------


def test_hybrid_answers_when_no_word_matches_and_finds_variants_of_a_screenshot(
    indexed: IndexedIcons,
) -> None:
    with psycopg.connect(indexed.db_url) as conn:
        search = _hybrid(conn, indexed)
        # No icon's name or tag has this word: keywords say nothing, the other channels still answer.
        query = "meteorology"
        assert search.single(KEYWORDS, query) == []
        hits = search.search(query, 5)
        assert len(hits) == 5 and all(KEYWORDS not in h.channel_scores for h in hits)
        # An exact name comes first, whatever the channels think.
        name = indexed.names[next(iter(indexed.names))]
        assert search.search(name, 1)[0].icon_id == next(iter(indexed.names))
        # A screenshot: its icon first, exact and through HNSW alike.
        icon_id = list(indexed.names)[3]
        shot = prepare_query_image(degrade(Image.open(indexed.png_paths[icon_id]), "blur", random.Random(0)))
        assert search.search(shot, 1)[0].icon_id == icon_id
        assert search.search(shot, 1, exact=True)[0].icon_id == icon_id


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


def test_report_has_every_task_channel_mode_and_metric(indexed: IndexedIcons, fresh_dir: Path) -> None:
    queries = _queries(indexed, fresh_dir)
    with psycopg.connect(indexed.db_url) as conn:
        search = _hybrid(conn, indexed)
        report = run_benchmark(queries, search, indexed.icon_to_group, icon_images=indexed.png_paths)
    data = json.loads(json.dumps(report.to_json()))  # JSON-able, NaN-free
    assert data["ks"] == [1, 5, 10, 30] and data["map_k"] == 30
    assert data["query_counts"] == {"text2img": 12, "semantic2img": 12, "img2img": 12}
    assert [f["query_id"] for f in data["failures"]] == ["broken"]
    metrics = {"n_queries", "recall@1", "recall@5", "recall@10", "recall@30", "map@30", "latency_p50_ms"}
    answers = {
        "text2img": [CAPTIONS, MODEL_ID],
        "semantic2img": [CAPTIONS, MODEL_ID],
        "img2img": [MODEL_ID, PIXELS],
    }
    for task in TASKS:
        for channel in [HYBRID, HYBRID_UNFOLDED, *answers[task]]:
            for mode in MODES:
                for subset in SUBSETS:
                    cell = data["results"][task][channel][mode][subset]
                    assert metrics <= set(cell), (task, channel, mode, subset)
                    assert cell["n_queries"] == {"all": 12, "seen": 9, "heldout": 3}[subset]
                    assert (
                        0
                        <= cell["recall@1"]
                        <= cell["recall@5"]
                        <= cell["recall@10"]
                        <= cell["recall@30"]
                        <= 1
                    )
                    assert cell["latency_p50_ms"] > 0
    for task in ("text2img", "semantic2img"):
        assert data["results"][task][BM25_BASELINE]["lexical"]["all"]["n_queries"] == 12
        assert PIXELS not in data["results"][task]  # a channel is only scored on what it answers
    pixels = data["results"]["img2img"][PIXEL_BASELINE]["numpy"]["all"]
    # A downsampled copy's siblings are found by pixels well above chance (3 of 30 icons per group).
    assert pixels["recall@30"] == 1.0 and pixels["n_queries"] == 12
    # 30 icons, 29 candidates once the source is excluded: R@30 finds every group.
    assert data["results"]["img2img"][MODEL_ID]["exact"]["all"]["recall@30"] == 1.0
    # HNSW on 30 rows is exact.
    assert data["results"]["img2img"][MODEL_ID]["hnsw"]["all"]["ann_overlap@10"] == 1.0
    # Tags as queries, judged by category: the caption channel finds them, word for word.
    assert data["results"]["text2img"][CAPTIONS]["hnsw"]["all"]["recall@1"] == 1.0
    # Paired tests beside the comparisons that matter, and 12 queries flagged as too few.
    compared = {(c["task"], c["model"], c["baseline"]) for c in data["comparisons"]}
    assert {("text2img", HYBRID, BM25_BASELINE), ("img2img", HYBRID, PIXEL_BASELINE)} <= compared
    assert all(0 <= c["p_value"] <= 1 for c in data["comparisons"])
    assert len(data["warnings"]) == 3 and "only 12 queries" in data["warnings"][0]
    assert data["fusion"]["weights"]["image"] == {MODEL_ID: 0.5, PIXELS: 0.5}

    markdown = report.to_markdown()
    assert markdown.startswith("### headline")
    for task in TASKS:
        assert f"### {task}" in markdown
    assert f"| {MODEL_ID} | hnsw | heldout | 3 |" in markdown and PIXEL_BASELINE in markdown
    assert "**Warning:** img2img: only 12 queries" in markdown
    assert "### how to read these figures" in markdown and "index error" in markdown
    # Narrow tables: none as wide as the old 12-column one.
    assert max(line.count("|") - 1 for line in markdown.splitlines() if line.startswith("|")) <= 10
    paths = report.plots(fresh_dir / "plots")
    # Small multiples: one picture, a panel per task, each search one colour of its own.
    assert [p.name for p in paths] == ["recall_at_k.png"]
    picture = np.asarray(Image.open(paths[0]).convert("L"))
    assert picture.shape[1] > 2.5 * picture.shape[0]  # three panels side by side
    plotted = {row["search"] for task in TASKS for row in report.task_table(task)}
    assert len({channel_colour(name) for name in plotted}) == len(plotted)
    # The legend sits below the panels (dark pixels in the bottom strip), not over a line.
    assert (picture[-int(picture.shape[0] * 0.12) :] < 128).any()

    # Dagster's tables: per task, four columns; seen vs held-out with the held-out count.
    table = {row["search"]: row for row in report.task_table("img2img")}
    assert list(table[MODEL_ID]) == ["search", "R@1", "R@10", "exact"]
    assert table[MODEL_ID]["exact"] == report.row("img2img", MODEL_ID, "exact").recall[10]
    assert table[PIXEL_BASELINE]["exact"] is None  # one mode: no second figure
    split = {row["search"]: row for row in report.seen_heldout_table("text2img")}
    assert list(split[MODEL_ID]) == ["search", "seen", "held-out"]
    assert report.subset_counts("text2img") == {"all": 12, "seen": 9, "heldout": 3}
    assert split[MODEL_ID]["held-out"] == report.row("text2img", MODEL_ID, "hnsw", "heldout").recall[10]

    # The checks say what to do when they fail. Hybrid search made worse than a channel (a real
    # report with one figure altered) fails the fusion check, naming search_fusion.
    from dataclasses import replace

    from icon_pipeline.defs.benchmark import _fine_tuning_check, _fusion_check

    worse = replace(
        report,
        rows=[
            replace(r, recall={**r.recall, 10: 0.0}) if (r.model, r.mode) == (HYBRID, "hnsw") else r
            for r in report.rows
        ],
    )
    failed = _fusion_check(worse)
    assert not failed.passed and "re-materialize search_fusion" in failed.description
    assert "text2img: hybrid search R@10 0.000 trails the" in failed.description
    # The test model's rows as a fine-tuned model and a base it does not beat (the same figures).
    untrained = replace(
        report,
        rows=[
            *report.rows,
            *[
                replace(r, model=name)
                for r in report.rows
                if r.model == MODEL_ID
                for name in ("finetuned", "base")
            ],
        ],
    )
    lost = _fine_tuning_check(untrained)
    assert not lost.passed and "re-materialize finetuned_checkpoint" in lost.description
    assert _fine_tuning_check(report).passed  # no fine-tuned model measured: nothing to warn about


def test_report_refuses_bad_queries(indexed: IndexedIcons) -> None:
    with (
        psycopg.connect(indexed.db_url) as conn,
        pytest.raises(ValueError, match="query q1: unknown task 'sketch2img'"),
    ):
        run_benchmark(
            [{"query_id": "q1", "task": "sketch2img", "relevant_group_ids": ["g"]}],
            _hybrid(conn, indexed),
            indexed.icon_to_group,
        )
