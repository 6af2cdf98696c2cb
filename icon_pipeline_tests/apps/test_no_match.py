"""Absolute confidence and the "no match" state, in the three surfaces a designer uses: the HTTP API on
127.0.0.1, the CLI, and the search app (served, driven through gradio_client). A real small pipeline:
Tabler icons materialized through Dagster, the sentence encoder's captions table, tiny image models and
the normalised drawings in pgvector, and search_fusion fitted on the library's own eval set (which fits
the confidence model beside the weights)."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from PIL import Image

from icon_pipeline.core.database import DatabaseInfo
from icon_pipeline.search.channels import ChannelHit
from icon_pipeline.search.confidence import ConfidenceExample, ConfidenceModel, fit_confidence, fit_logistic
from icon_pipeline_tests.apps.test_apps import (
    Demo,
    client,
    demo_environment,
    free_port,
    index_tiny_models,
    make_library,
    materialize,
)

CONFIG = (
    "sources:\n  - kind: local\n    path: {icons}\n    name: mine\n"
    "eval:\n  n_groups: 6\nqueries:\n  total: 12\npairs:\n  heldout_share: 0.2\n"
)
NONSENSE = "qwxzv plorf"


def noise_image(path: Path) -> Path:
    """A photo-like image: coloured noise, nothing a line icon draws."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(180, 240, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def fitted(postgres: DatabaseInfo, project_tmp: Path, tabler_package: Path) -> Iterator[Demo]:
    root = project_tmp / f"nomatch-{uuid.uuid4().hex[:8]}"
    demo = demo_environment(root, postgres)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in demo.env.items():
            patch.setenv(key, value)
        patch.delenv("ICON_PIPELINE_APP_AUTH", raising=False)
        icons = make_library(root / "icons", tabler_package)
        (root / "icon_pipeline.yaml").write_text(CONFIG.format(icons=icons))
        materialize(
            "icon_catalog",
            "rendered_icons",
            "icon_lexicon",
            "icon_captions",
            "training_pairs",
            "eval_set",
            "benchmark_queries",
            "caption_embeddings",
        )
        index_tiny_models(demo)
        _index_drawings(demo)
        materialize("search_fusion")
        yield demo


def _index_drawings(demo: Demo) -> None:
    """The `pixels` channel's table, as icon_embeddings writes it."""
    import pandas as pd

    from icon_pipeline.search.channels import PIXELS
    from icon_pipeline.search.index import write_embeddings
    from icon_pipeline.search.pixels import pixel_vector

    renders = pd.concat(pd.read_parquet(p) for p in (demo.data / "rendered" / "batches").glob("*.parquet"))
    renders = renders[renders["status"] != "failed"]
    pairs = pd.read_parquet(demo.data / "pairs" / "training_pairs.parquet")
    group_of = {m: row.group_id for row in pairs.itertuples() for m in row.members}
    vectors = np.stack([pixel_vector(Image.open(demo.data / p)) for p in renders["png_path"]])
    with psycopg.connect(demo.db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        ids = list(renders["icon_id"])
        write_embeddings(conn, PIXELS, ids, [group_of.get(i, i) for i in ids], vectors)


def _fusion() -> dict:
    from icon_pipeline.search.service import SearchService

    service = SearchService.open()
    try:
        settings = service.channel_set.stored_fusion()
        return {"weights": settings.weights, "confidence": settings.confidence} if settings else {}
    finally:
        service.close()


def test_confidence_is_fitted_beside_the_weights_on_one_scale(fitted: Demo) -> None:
    from icon_pipeline.search.service import SearchService

    service = SearchService.open()
    try:
        settings = service.channel_set.stored_fusion()
        assert settings is not None and {"words", "image"} <= set(settings.confidence)
        bell = service.text("bell", k=3)
        assert bell[0].name == "bell" and all(0.0 <= h.confidence <= 1.0 for h in bell)
        nonsense = service.text(NONSENSE, k=3)
        # The fused score of any first result is about 1; the confidence says how good it really is.
        threshold = settings.confidence["words"]["no_match_below"]
        assert max(h.confidence for h in nonsense) < threshold <= bell[0].confidence
    finally:
        service.close()


def test_the_api_says_no_match_for_nonsense(fitted: Demo, tmp_path: Path) -> None:
    import httpx

    from icon_pipeline.apps.api import serve

    api = serve(port=free_port(), block=False)
    try:
        search = api.url + "api/search"
        real = httpx.get(search, params={"q": "bell", "k": 3}, timeout=120).json()
        assert real["match"] == "match" and real["message"] == ""
        assert real["results"][0]["name"] == "bell" and 0 < real["results"][0]["confidence"] <= 1
        nonsense = httpx.get(search, params={"q": NONSENSE, "k": 3}, timeout=120).json()
        assert nonsense["match"] == "none" and "no icon matches 'qwxzv plorf' well" in nonsense["message"]
        assert nonsense["results"]  # the closest icons still come, marked as no match
        bell_svg = (fitted.root / "icons" / "bell.svg").read_bytes()
        drawn = httpx.post(search + "/image", content=bell_svg, params={"k": 3}, timeout=120).json()
        assert drawn["match"] == "match" and drawn["results"][0]["name"] == "bell"
    finally:
        api.close()


def test_an_unrelated_image_is_no_match_in_the_api_and_cli(
    fitted: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx

    from icon_pipeline.apps.api import serve
    from icon_pipeline.cli import main

    noise = noise_image(tmp_path / "photo.png")
    assert main(["search", "--image", str(noise), "-k", "3"]) == 0
    assert capsys.readouterr().out.startswith("no match: no icon matches this image well")
    api = serve(port=free_port(), block=False)
    try:
        page = httpx.post(api.url + "api/search/image", content=noise.read_bytes(), timeout=120).json()
        assert page["match"] == "none", (page, _fusion())
    finally:
        api.close()


def test_the_cli_says_no_match(fitted: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    from icon_pipeline.cli import main

    assert main(["search", NONSENSE, "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no match: no icon matches 'qwxzv plorf' well") and "likely" in out
    assert main(["search", NONSENSE, "-k", "3", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["match"] == "none" and body["results"][0]["confidence"] is not None
    assert main(["search", "bell", "-k", "3", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["match"] == "match" and body["results"][0]["name"].startswith("bell")


def test_the_search_app_says_no_match(fitted: Demo, tmp_path: Path) -> None:
    from gradio_client import handle_file

    from icon_pipeline.apps import launch

    app = launch("search", port=free_port(), block=False)
    try:
        api = client(app)
        first, _, message, _ = api.predict(
            NONSENSE, "hybrid", "(none)", True, [], [], api_name="/search_by_text"
        )
        assert "data-match='none'" in first and "No match." in first and "**no match**" in message
        first, _, message, _ = api.predict(
            handle_file(str(fitted.root / "icons" / "bell.svg")),
            None,
            "hybrid",
            "(none)",
            True,
            [],
            [],
            api_name="/search_by_image",
        )
        assert "data-match" not in first and "no match" not in message  # a real drawing is a match
        first, _, message, _ = api.predict(
            "bell", "hybrid", "(none)", True, [], [], api_name="/search_by_text"
        )
        assert "data-match" not in first and "no match" not in message and "% likely" in first
    finally:
        app.close()


def test_the_confidence_fit_orders_evidence_and_sets_the_threshold_from_real_queries() -> None:
    # Relevant icons have the higher cosine: the fitted probability rises with it.
    rng = np.random.default_rng(1)
    examples = []
    for q in range(60):
        hits = [ChannelHit(f"r{q}", 0.8 + 0.1 * rng.random())] + [
            ChannelHit(f"o{q}-{n}", 0.3 + 0.3 * rng.random()) for n in range(9)
        ]
        examples.append(ConfidenceExample("words", {"captions": hits}, frozenset({f"r{q}"}), frozenset(), {}))
    model = fit_confidence(examples, {"words": {"captions": 1.0}})["words"]
    assert model.channels == ("captions",) and model.coef[0] > 0 and model.queries == 60
    chances = model.probabilities(["a", "b"], {"captions": [ChannelHit("a", 0.9), ChannelHit("b", 0.4)]}, {})
    assert chances[0] > 0.5 > chances[1]
    assert 0.5 < model.no_match_below < chances[0]  # real queries' best results sit above it
    coef, intercept = fit_logistic(np.array([[0.0], [1.0], [0.0], [1.0]]), np.array([0.0, 1.0, 0.0, 1.0]))
    assert coef[0] > 0 and np.isfinite(intercept)  # separable labels stay finite (L2 penalty)


def test_an_image_query_that_is_no_drawing_has_no_confidence_whatever_its_cosines() -> None:
    """The image model's second part: whether the query is a drawing at all, from its traits (fitted
    on queries with an answer against pictures made to have none). A photo's pixels can sit close to a
    filled icon's; its traits (drawn all over, every shade) still tell it is no icon."""
    from icon_pipeline.search.confidence import no_answer_queries, query_traits
    from icon_pipeline.search.query import prepare_query_image

    rng = np.random.default_rng(2)
    icon = Image.new("RGB", (224, 224), "white")
    icon.paste((0, 0, 0), (60, 60, 160, 80))
    icon.paste((0, 0, 0), (60, 60, 80, 160))
    drawn = query_traits(prepare_query_image(icon))
    pictures = [prepare_query_image(q) for q in no_answer_queries(0) if not isinstance(q, str)]
    examples = []
    for q in range(40):  # drawings: the relevant icon has the higher cosine
        hits = [ChannelHit(f"r{q}", 0.8 + 0.1 * rng.random())] + [
            ChannelHit(f"o{q}-{n}", 0.5 + 0.3 * rng.random()) for n in range(9)
        ]
        examples.append(
            ConfidenceExample("image", {"pixels": hits}, frozenset({f"r{q}"}), frozenset(), {}, traits=drawn)
        )
    for q, picture in enumerate(pictures):  # pictures: as close by pixels, nothing relevant
        hits = [ChannelHit(f"p{q}-{n}", 0.6 + 0.3 * rng.random()) for n in range(10)]
        examples.append(
            ConfidenceExample(
                "image", {"pixels": hits}, frozenset(), frozenset(), {}, traits=query_traits(picture)
            )
        )
    model = fit_confidence(examples, {"image": {"pixels": 1.0}})["image"]
    assert model.drawing and model.drawing_chance(drawn) > 0.5
    photo = query_traits(prepare_query_image(noise_image(Path(tempfile.mkdtemp()) / "photo.png")))
    assert model.drawing_chance(photo) < 0.5
    close = {"pixels": [ChannelHit("a", 0.9)]}
    assert model.probabilities(["a"], close, {}, photo)[0] < model.no_match_below
    assert model.probabilities(["a"], close, {}, drawn)[0] > model.no_match_below
    stored = model.to_dict()  # stored beside the weights (rounded), read back the same
    assert "drawing" in stored and ConfidenceModel.from_dict(stored).to_dict() == stored
