"""A team's own library, end to end with the default config: any size, switched back and forth on
one instance, or failing, the catalog, partitions, frozen sets and search describe exactly the
configured library and nothing is lost.

Real parts: the embedded PostgreSQL, a real Dagster instance, real folders of Tabler SVGs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from icon_pipeline.core.config import library_id, load_config
from icon_pipeline.core.database import ensure_database
from icon_pipeline.definitions import defs
from icon_pipeline.defs.partitions import icon_batches
from icon_pipeline.defs.runner import materialize_assets
from icon_pipeline.search.service import NotReadyError, SearchService


def _folder(folder: Path, tabler: Path, names: list[str]) -> Path:
    """A designer's folder of outline SVGs with a metadata.json of their tags and category."""
    folder.mkdir(parents=True, exist_ok=True)
    known = json.loads((tabler / "icons.json").read_text())
    for name in names:
        shutil.copy(tabler / "icons" / "outline" / f"{name}.svg", folder / f"{name}.svg")
    metadata = {
        n: {"tags": [str(t) for t in known[n]["tags"]], "category": known[n]["category"]} for n in names
    }
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


def _use(env: Path, folder: Path, name: str) -> None:
    """The default config on `folder`; only the fine-tune is shortened (the linear probe still
    fits the model; the demo's 60 SGD steps would add two minutes and test nothing more here)."""
    (env / "icon_pipeline.yaml").write_text(
        f"sources:\n  - kind: local\n    path: {folder}\n    name: {name}\ntraining:\n  max_steps: 4\n"
    )


def _run_everything(instance: DagsterInstance) -> None:
    summary = materialize_assets(defs, instance, None, log=lambda _: None)
    assert summary.success, [r for r in summary.runs if not r.success]


def _state(env: Path, instance: DagsterInstance) -> dict:
    catalog = pd.read_parquet(env / "data" / "catalog" / "icon_catalog.parquet")
    service = SearchService.open()
    try:
        hits = service.text("arrow", k=20) + service.text("I want to go back", k=20)
    finally:
        service.close()
    report = json.loads((env / "data" / "reports" / "benchmark.json").read_text())
    return {
        "sources": set(catalog["source"]),
        "icons": set(catalog["icon_id"]),
        "batches": dict(zip(catalog["icon_id"], catalog["batch_key"], strict=True)),
        "partitions": set(instance.get_dynamic_partitions(icon_batches.name)),
        "hit_ids": {h.icon_id for h in hits},
        "library": library_id(load_config()),
        "report_queries": report["query_counts"],
        "warnings": report["warnings"],
    }


@pytest.mark.slow
def test_a_30_and_a_400_icon_library_switched_back_and_forth(
    pipeline_env: Path, tabler_package: Path
) -> None:
    names = sorted(json.loads((tabler_package / "icons.json").read_text()))
    small = _folder(pipeline_env / "alpha", tabler_package, [n for n in names if n.startswith("arrow")][:30])
    large = _folder(
        pipeline_env / "beta", tabler_package, [n for n in names if not n.startswith("arrow")][:400]
    )
    ensure_database()
    instance = DagsterInstance.get()

    _use(pipeline_env, small, "alpha")
    _run_everything(instance)
    first = _state(pipeline_env, instance)
    assert first["sources"] == {"alpha"} and len(first["icons"]) == 30
    assert first["partitions"] == set(first["batches"].values())
    assert first["hit_ids"] and first["hit_ids"] <= first["icons"]
    assert all(n > 0 for n in first["report_queries"].values())  # img2img too, with no variants
    assert first["warnings"]  # a 30-icon benchmark is flagged as too small to mean much
    eval_alpha = pipeline_env / "data" / "eval" / first["library"] / "eval_t2i_i2t.v1.jsonl"
    assert eval_alpha.exists()
    frozen_alpha = eval_alpha.read_bytes()

    _use(pipeline_env, large, "beta")
    _run_everything(instance)
    second = _state(pipeline_env, instance)
    assert second["sources"] == {"beta"} and len(second["icons"]) == 400
    # alpha's batches are retired, never re-materialized as empty; beta's are the only partitions.
    assert second["partitions"] == set(second["batches"].values())
    assert not second["partitions"] & first["partitions"]
    for key in first["partitions"]:
        assert (pipeline_env / "data" / "rendered" / "retired" / f"{key}.parquet").exists()
    # beta has frozen sets of its own; search serves beta only.
    assert second["library"] != first["library"]
    assert (pipeline_env / "data" / "eval" / second["library"] / "eval_t2i_i2t.v1.jsonl").exists()
    assert second["hit_ids"] and second["hit_ids"] <= second["icons"]
    assert second["warnings"] == []  # 400 icons give enough queries for every task
    regression = instance.get_latest_asset_check_evaluation_record(
        AssetCheckKey(AssetKey("benchmark_report"), "no_regression_since_previous")
    )
    assert regression is not None and regression.event is not None
    described = regression.event.dagster_event.event_specific_data.description
    assert f"the previous report was of another library ({first['library']}" in described, described

    _use(pipeline_env, small, "alpha")
    # Switched back, the catalog refreshed, the index not yet: search names the stale index.
    assert materialize_assets(defs, instance, ["icon_catalog"], log=lambda _: None).success
    service = SearchService.open()
    try:
        with pytest.raises(NotReadyError, match="the finetuned index holds icons of another library"):
            service.search("arrow", "finetuned", k=5)
    finally:
        service.close()
    _run_everything(instance)
    third = _state(pipeline_env, instance)
    assert third["icons"] == first["icons"]
    assert third["batches"] == first["batches"]  # the same keys as the first time: never re-keyed
    assert third["partitions"] == first["partitions"]
    assert eval_alpha.read_bytes() == frozen_alpha  # alpha's frozen eval set, reused as it was
    assert third["hit_ids"] and third["hit_ids"] <= third["icons"]


def test_a_failing_source_never_shrinks_the_library(
    pipeline_env: Path, tabler_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Figma answering 429, 403 or 500, or a folder gone: icon_catalog fails with the reason and the
    catalog, its batches and their tables stay as they were; `on_failure: keep` goes on with the
    source's last good icons, marked stale."""
    from icon_pipeline_tests.figma_server import FigmaTestServer, tabler_figma_file

    mine = _folder(pipeline_env / "mine", tabler_package, ["bell", "folder", "trash"])
    with FigmaTestServer({"TablerKit": tabler_figma_file(tabler_package)}, max_ids_per_request=100) as figma:
        monkeypatch.setenv("FIGMA_TOKEN", "figd_test-token")
        config = (
            f"sources:\n  - kind: local\n    path: {mine}\n    name: mine\n"
            f"  - kind: figma\n    file_keys: [TablerKit]\n    api_url: {figma.url}\n"
        )
        (pipeline_env / "icon_pipeline.yaml").write_text(config)
        ensure_database()
        instance = DagsterInstance.get()
        good = materialize_assets(defs, instance, ["icon_catalog", "rendered_icons"], log=lambda _: None)
        assert good.success
        catalog_file = pipeline_env / "data" / "catalog" / "icon_catalog.parquet"
        before = pd.read_parquet(catalog_file)
        partitions = set(instance.get_dynamic_partitions(icon_batches.name))
        assert set(before["source"]) == {"mine", "figma"}

        three_days = str(3 * 86_400)
        for status, retry_after, said in (
            (429, three_days, "rate limited"),
            (403, None, "403"),
            (500, None, "500"),
        ):
            figma.fail("files", status, times=None, retry_after=retry_after)
            result = materialize_assets(defs, instance, ["icon_catalog"], log=lambda _: None)
            figma.heal()  # the next case starts from a healthy server
            assert not result.success, status
            failure = _failure_message(instance, result.runs[-1].run_id)
            assert "source 'figma'" in failure and said in failure, failure
            assert "the catalog keeps its" in failure and "figd_test-token" not in failure
            after = pd.read_parquet(catalog_file)
            assert set(after["icon_id"]) == set(before["icon_id"]), status
            assert set(instance.get_dynamic_partitions(icon_batches.name)) == partitions

        # Keep the last good rows, by an explicit setting, when the source cannot be read.
        figma.fail("files", 500, times=None)
        (pipeline_env / "icon_pipeline.yaml").write_text(config + "    on_failure: keep\n")
        kept = materialize_assets(defs, instance, ["icon_catalog"], log=lambda _: None)
        assert kept.success
        after = pd.read_parquet(catalog_file)
        assert set(after["icon_id"]) == set(before["icon_id"])
        assert set(after.loc[after["stale"], "source"]) == {"figma"}

    # A local folder that disappeared: the same, with the folder named.
    shutil.rmtree(mine)
    (pipeline_env / "icon_pipeline.yaml").write_text(
        f"sources:\n  - kind: local\n    path: {mine}\n    name: mine\n"
    )
    result = materialize_assets(defs, instance, ["icon_catalog"], log=lambda _: None)
    assert not result.success
    assert f"the folder {mine} does not exist" in _failure_message(instance, result.runs[-1].run_id)
    assert set(pd.read_parquet(catalog_file)["icon_id"]) == set(before["icon_id"])

    # The folder is there but empty (an unmounted share): a failure too, never a library of nothing.
    mine.mkdir()
    result = materialize_assets(defs, instance, ["icon_catalog"], log=lambda _: None)
    assert not result.success
    failure = _failure_message(instance, result.runs[-1].run_id)
    assert "source 'mine': yielded no icons where the last good scan had 3" in failure, failure
    assert set(pd.read_parquet(catalog_file)["icon_id"]) == set(before["icon_id"])
    assert set(instance.get_dynamic_partitions(icon_batches.name)) == partitions


def _failure_message(instance: DagsterInstance, run_id: str) -> str:
    from dagster import DagsterEventType

    events = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    return " ".join(str(e.dagster_event.step_failure_data.error.message) for e in events)


def test_two_data_roots_never_share_runs_or_the_index(
    postgres, project_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the embedded server each data root has a database of its own (runs, events, index)."""
    import psycopg

    from icon_pipeline.core.database import DatabaseInfo, data_root_database
    from icon_pipeline.core.paths import ENV_DAGSTER_ARTIFACTS
    from icon_pipeline.search.index import list_models, write_embeddings

    assert isinstance(postgres, DatabaseInfo)
    monkeypatch.delenv("ICON_PIPELINE_DATABASE_URL", raising=False)
    monkeypatch.setenv("ICON_PIPELINE_PGDATA", str(postgres.pgdata))
    urls = {}
    for root in ("first", "second"):
        monkeypatch.setenv("ICON_PIPELINE_DATA", str(project_tmp / f"root-{root}" / "data"))
        info = ensure_database()
        urls[root] = info.libpq_url
        assert f"/{data_root_database(project_tmp / f'root-{root}' / 'data')}?" in info.url
        assert str(project_tmp / f"root-{root}" / "data" / "dagster") == os.environ[ENV_DAGSTER_ARTIFACTS]
    assert urls["first"] != urls["second"]
    with psycopg.connect(urls["first"], autocommit=True) as conn:
        write_embeddings(conn, "m", ["a"], ["g"], [[1.0, 0.0]])
    with psycopg.connect(urls["second"], autocommit=True) as conn:
        assert list_models(conn) == []  # the other data root's index is not here
    with psycopg.connect(urls["first"], autocommit=True) as conn:
        assert [m.model_id for m in list_models(conn)] == ["m"]

    # A copy of a data root is the same root moved: it carries its id, so its database (index and
    # run history) comes along and search keeps working there without re-running anything.
    shutil.copytree(project_tmp / "root-first" / "data", project_tmp / "root-copy" / "data")
    monkeypatch.setenv("ICON_PIPELINE_DATA", str(project_tmp / "root-copy" / "data"))
    with psycopg.connect(ensure_database().libpq_url, autocommit=True) as conn:
        assert [m.model_id for m in list_models(conn)] == ["m"]
