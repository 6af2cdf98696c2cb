"""The assets through a real Dagster instance on the embedded PostgreSQL, with real files and
real HTTP servers on 127.0.0.1 (Figma-shaped and OpenAI-compatible), like `project_fully_featured`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    EvaluateAutomationConditionsResult,
    SensorResult,
    build_asset_check_context,
    build_sensor_context,
    evaluate_automation_conditions,
)

from icon_pipeline.core.config import library_id, load_config
from icon_pipeline.core.database import ensure_database
from icon_pipeline.core.paths import REPO_ROOT
from icon_pipeline.definitions import defs
from icon_pipeline.defs.dataset import eval_set_frozen_hash
from icon_pipeline.defs.resources.postgres import PostgresResource
from icon_pipeline.defs.runner import materialize_assets
from icon_pipeline.defs.search import index_complete
from icon_pipeline_tests.figma_server import FigmaTestServer, tabler_figma_file
from icon_pipeline_tests.icon_set_packages import write_fontawesome, write_iconoir, write_mdi, write_phosphor
from icon_pipeline_tests.openai_server import OpenAITestServer

CLI = str(REPO_ROOT / ".venv" / "bin" / "icon-pipeline")
NAMES = ["bell", "bell-off", "folder", "folder-plus", "trash", "user", "settings", "search", "home", "lock"]


def _instance() -> DagsterInstance:
    ensure_database()  # exports the storage URL the instance's dagster.yaml reads
    return DagsterInstance.get()


def _library(folder: Path, tabler: Path, names: list[str], style: str = "outline") -> Path:
    """A designer's folder: Tabler SVGs plus a metadata.json with their tags and category."""
    folder.mkdir(parents=True, exist_ok=True)
    known = json.loads((tabler / "icons.json").read_text())
    metadata_file = folder / "metadata.json"
    metadata = json.loads(metadata_file.read_text()) if metadata_file.exists() else {}
    for name in names:
        shutil.copy(tabler / "icons" / style / f"{name}.svg", folder / f"{name}.svg")
        metadata[name] = {
            "tags": [str(t) for t in known[name]["tags"] or []],
            "category": known[name]["category"],
        }
    metadata_file.write_text(json.dumps(metadata))
    return folder


def _config(env: Path, body: str) -> None:
    (env / "icon_pipeline.yaml").write_text(body)


def _run(instance: DagsterInstance, *assets: str, partitions: list[str] | None = None) -> None:
    summary = materialize_assets(defs, instance, list(assets), partitions, log=lambda _: None)
    assert summary.runs and summary.success, [r for r in summary.runs if not r.success]


def _metadata(instance: DagsterInstance, asset: str, partition: str | None = None) -> dict:
    from dagster import AssetKey

    event = instance.get_latest_materialization_event(AssetKey(asset))
    if partition:
        records = instance.fetch_materializations(AssetKey(asset), limit=100).records
        event = next(r.event_log_entry for r in records if r.partition_key == partition)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_local_folder_batches_and_the_sensor_registers_exactly_the_new_batch(
    pipeline_env: Path, tabler_package: Path
) -> None:
    icons = _library(pipeline_env / "icons", tabler_package, NAMES[:5])
    _config(
        pipeline_env,
        f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\nbatching:\n  icons_per_batch: 3\n",
    )
    instance = _instance()
    _run(instance, "icon_catalog", "rendered_icons")
    assert sorted(instance.get_dynamic_partitions("icon_batches")) == ["mine-all-0001", "mine-all-0002"]
    meta = _metadata(instance, "rendered_icons", "mine-all-0001")
    assert meta["rendered"] == 3 and meta["failed"] == 0 and "data:image/png;base64" in meta["preview"]
    check = _check_evaluation(instance, "rendered_icons", "render_failure_rate")
    assert check.passed and check.description.startswith("batch mine-all-000")  # names its batch
    assert check.metadata["batch"].value in ("mine-all-0001", "mine-all-0002")

    sensor = defs.resolve_sensor_def("icon_source_sensor")
    resources = {"figma": defs.resources["figma"]}
    first = sensor(build_sensor_context(instance=instance, resources=resources))
    assert isinstance(first, SensorResult) and not first.dynamic_partitions_requests  # nothing new yet
    quiet = sensor(build_sensor_context(instance=instance, cursor=first.cursor, resources=resources))
    assert not isinstance(quiet, SensorResult) or not quiet.run_requests

    _library(icons, tabler_package, NAMES[5:7])  # two new files in the folder
    tick = sensor(build_sensor_context(instance=instance, cursor=first.cursor, resources=resources))
    assert isinstance(tick, SensorResult)
    (request,) = tick.dynamic_partitions_requests
    assert list(request.partition_keys) == ["mine-all-0003"]
    assert len(tick.run_requests) == 1  # targets icon_catalog (the sensor's asset_selection)


def _requested(result: EvaluateAutomationConditionsResult) -> dict[str, list[str]]:
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    return {
        key.to_user_string(): sorted(result.get_requested_partitions(key))
        for key in keys
        if result.get_num_requested(key)
    }


def test_the_automation_sensor_renders_and_captions_a_new_batch_and_is_quiet_otherwise(
    pipeline_env: Path, tabler_package: Path
) -> None:
    """What `icon_automation_sensor` does on each daemon tick, evaluated on the real instance."""
    icons = _library(pipeline_env / "icons", tabler_package, NAMES[:3])
    _config(
        pipeline_env,
        f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\nbatching:\n  icons_per_batch: 3\n",
    )
    instance = _instance()
    _run(instance, "icon_catalog", "icon_lexicon", "rendered_icons", "icon_captions")
    tick = evaluate_automation_conditions(defs, instance)
    assert tick.total_requested == 0  # everything is up to date: no run storm on the first tick

    _library(icons, tabler_package, NAMES[3:5])  # a designer adds two icons
    _run(instance, "icon_catalog")  # what icon_source_sensor's run does: registers mine-all-0002
    tick = evaluate_automation_conditions(defs, instance, cursor=tick.cursor)
    requested = _requested(tick)
    # The lexicon (new names), and the new batch rendered and captioned. The old batch is
    # requested too, as its upstream catalog changed; the content-addressed render store and the
    # caption cache serve it. More than one partition: the sensor emits one backfill, which
    # runs the lexicon before the captions that read it.
    assert requested.pop("icon_lexicon") == [None]
    assert set(requested) == {"rendered_icons", "icon_captions"}
    assert all("mine-all-0002" in partitions for partitions in requested.values())

    _run(instance, "icon_lexicon")
    for batch in requested["rendered_icons"]:
        _run(instance, "rendered_icons", "icon_captions", partitions=[batch])
    assert _metadata(instance, "rendered_icons", "mine-all-0001")["rendered"] == 0
    assert _metadata(instance, "rendered_icons", "mine-all-0002")["rendered"] == 2
    tick = evaluate_automation_conditions(defs, instance, cursor=tick.cursor)
    assert tick.total_requested == 0


def test_figma_and_local_sources_go_through_the_same_assets(
    pipeline_env: Path, tabler_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    icons = _library(pipeline_env / "icons", tabler_package, NAMES[:3])
    with FigmaTestServer({"TablerKit": tabler_figma_file(tabler_package)}, max_ids_per_request=100) as figma:
        monkeypatch.setenv("FIGMA_TOKEN", "figd_test-token")
        _config(
            pipeline_env,
            f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\n"
            f"  - kind: figma\n    file_keys: [TablerKit]\n    api_url: {figma.url}\n",
        )
        instance = _instance()
        _run(instance, "icon_catalog", "rendered_icons")
    batches = sorted(instance.get_dynamic_partitions("icon_batches"))
    # Figma icons are batched per page; the local folder per source.
    assert batches == ["figma-icons-0001", "figma-variants-0001", "mine-all-0001"]
    catalog = pd.read_parquet(pipeline_env / "data" / "catalog" / "icon_catalog.parquet")
    assert set(catalog["source"]) == {"figma", "mine"}
    per_batch = [_metadata(instance, "rendered_icons", b) for b in batches]
    # Every icon of both sources has a PNG; the Figma "bell" is the local bell's bytes, so the
    # content-addressed store serves it instead of rendering it again.
    assert sum(m["rendered"] + m["cached"] for m in per_batch) == len(catalog)
    assert sum(m["failed"] for m in per_batch) == 0 and sum(m["cached"] for m in per_batch) >= 1
    assert "figd_test-token" not in repr(_metadata(instance, "icon_catalog"))


def test_openai_captions_are_cached_and_a_changed_icon_costs_one_call(
    pipeline_env: Path, tabler_package: Path
) -> None:
    icons = _library(pipeline_env / "icons", tabler_package, NAMES[:6])
    with OpenAITestServer() as llm:
        _config(
            pipeline_env,
            f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\n"
            f"captions:\n  captioner: openai\n  base_url: {llm.url}\n  timeout_s: 10\n",
        )
        instance = _instance()
        _run(instance, "icon_catalog", "rendered_icons", "icon_lexicon", "icon_captions")
        first_calls = llm.call_count
        assert first_calls == 6
        meta = _metadata(instance, "icon_captions", "mine-all-0001")
        assert meta["model_calls"] == 6 and meta["cache_hits"] == 0 and meta["failed"] == 0

        _run(instance, "icon_captions")  # the nightly re-caption with nothing changed
        assert llm.call_count == first_calls
        assert _metadata(instance, "icon_captions", "mine-all-0001")["cache_hits"] == 6

        shutil.copy(tabler_package / "icons" / "filled" / "bell.svg", icons / "bell.svg")  # edit one icon
        _run(instance, "icon_catalog", "rendered_icons", "icon_lexicon", "icon_captions")
        assert llm.call_count == first_calls + 1
        captions = pd.read_parquet(pipeline_env / "data" / "captions" / "batches" / "mine-all-0001.parquet")
        assert (captions["phrases"].map(len) >= 5).all()
        routes = set(captions["route"])
        assert routes <= {"text", "vision"} and llm.models  # the server saw the configured models


def test_nightly_schedule_requests_every_batch(pipeline_env: Path, tabler_package: Path) -> None:
    from dagster import build_schedule_context

    icons = _library(pipeline_env / "icons", tabler_package, NAMES[:4])
    _config(
        pipeline_env,
        f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\nbatching:\n  icons_per_batch: 2\n",
    )
    instance = _instance()
    _run(instance, "icon_catalog")
    schedule = defs.resolve_schedule_def("nightly_recaption")
    night = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    context = build_schedule_context(
        instance=instance, scheduled_execution_time=night, repository_def=defs.get_repository_def()
    )
    requests = schedule.evaluate_tick(context).run_requests
    assert sorted(r.partition_key for r in requests) == ["mine-all-0001", "mine-all-0002"]
    assert {r.run_key for r in requests} == {
        "recaption-2026-11-23-mine-all-0001",
        "recaption-2026-11-23-mine-all-0002",
    }


def test_pairs_eval_set_and_queries_are_frozen_and_checked(pipeline_env: Path, tabler_package: Path) -> None:
    icons = _library(pipeline_env / "icons", tabler_package, NAMES)
    _library(icons / "filled", tabler_package, ["bell", "folder", "trash"], style="filled")
    _config(
        pipeline_env,
        f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\n"
        "eval:\n  n_groups: 6\nqueries:\n  total: 12\n"
        "pairs:\n  heldout_share: 0.2\n",
    )
    instance = _instance()
    _run(instance, "icon_catalog", "rendered_icons", "icon_lexicon", "icon_captions")
    _run(instance, "training_pairs", "eval_set", "benchmark_queries")
    pairs = pd.read_parquet(pipeline_env / "data" / "pairs" / "training_pairs.parquet")
    bell = pairs[pairs["names"].map(lambda n: "bell" in list(n))]
    assert len(bell) == 1 and len(bell.iloc[0]["members"]) == 2  # outline and filled bell: one group
    assert not pairs["names"].map(lambda n: {"bell", "bell-off"} <= set(n)).any()

    library = library_id(load_config())
    eval_file = pipeline_env / "data" / "eval" / library / "eval_t2i_i2t.v1.jsonl"
    before = eval_file.read_bytes()
    _run(instance, "eval_set")
    assert eval_file.read_bytes() == before
    assert _metadata(instance, "eval_set")["reused"] is True
    assert _metadata(instance, "eval_set")["library"] == library

    eval_file.write_bytes(before.replace(b'"caption":"', b'"caption":"x', 1))  # a hand edit
    result = materialize_assets(defs, instance, ["eval_set"], log=lambda _: None)
    assert not result.success  # the asset refuses to reuse a tampered file
    check = eval_set_frozen_hash(build_asset_check_context(instance=instance))
    assert not check.passed
    assert "version 1" in check.description and "recorded sha256" in check.description

    # The same edit with its sidecar regenerated: the hash Dagster recorded when the version was
    # first written still tells.
    sidecar = eval_file.with_name("eval_t2i_i2t.v1.sha256")
    sidecar.write_text(f"{hashlib.sha256(eval_file.read_bytes()).hexdigest()}  {eval_file.name}\n")
    result = materialize_assets(defs, instance, ["eval_set"], log=lambda _: None)
    assert not result.success
    check = eval_set_frozen_hash(build_asset_check_context(instance=instance))
    assert (
        not check.passed
        and "differs from what eval_set recorded when it was first written" in check.description
    )
    eval_file.write_bytes(before)
    sidecar.write_text(f"{hashlib.sha256(before).hexdigest()}  {eval_file.name}\n")
    assert eval_set_frozen_hash(build_asset_check_context(instance=instance)).passed


def test_the_whole_graph_end_to_end_then_search_then_scale_out_training(
    pipeline_env: Path, tabler_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `make demo` does, on a small library: every asset, then the search designers use,
    then the data root moved elsewhere (search, apps and evaluate still work, nothing re-run),
    then the same training asset, on the moved root, on two processes with only the resource
    config changed."""
    from icon_pipeline.search.service import SearchService

    icons = _library(pipeline_env / "icons", tabler_package, NAMES)
    _library(icons / "filled", tabler_package, ["bell", "folder", "trash", "user"], style="filled")
    _open_icon_sets(pipeline_env / "data" / "sources", tabler_package)
    _config(
        pipeline_env,
        f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\n"
        "eval:\n  n_groups: 6\nqueries:\n  total: 12\n"
        "pairs:\n  heldout_share: 0.2\n"
        "corpus:\n  sets: [iconoir, mdi, remixicon]\n  fit_share: 0.3\n"
        "external:\n  sets: [phosphor, fontawesome]\n  min_matches: 2\n  max_queries: 20\n"
        "training:\n  max_steps: 4\n  per_device_batch_size: 4\n"
        "  eval_every_steps: 2\n  save_every_steps: 2\n",
    )
    instance = _instance()
    summary = materialize_assets(defs, instance, None, log=lambda _: None)
    failed = [r for r in summary.runs if not r.success]
    # remixicon was never fetched here: its partition fails with the reason, the rest goes on.
    assert [(r.assets, r.partition) for r in failed] == [(["icon_corpus"], "remixicon")]
    graph_keys = {k.to_user_string() for k in defs.resolve_asset_graph().materializable_asset_keys}
    assert {name for run in summary.runs for name in run.assets} == graph_keys
    _corpus_and_external_benchmark(instance, pipeline_env / "data")

    training = _metadata(instance, "finetuned_checkpoint")
    assert training["steps"] == 4 and "tensorboard_dir" in training  # reported by rank 0 through Pipes
    assert training["world_size"] == 1 and training["global_batch_size"] == 4
    report = json.loads((pipeline_env / "data" / "reports" / "benchmark.json").read_text())
    tasks = report["results"]
    assert set(tasks) == {"text2img", "semantic2img", "img2img", "names"}
    # The names set: every library name a query, R@1 against that very icon; every channel a row.
    assert {"hybrid", "bm25", "captions"} <= set(tasks["names"])
    assert report["query_counts"]["names"] >= len(NAMES)
    names_r1 = _metadata(instance, "benchmark_report")["hybrid/names/R@1"]
    assert names_r1 > 0.5  # a name query finds its icon first
    assert {"hybrid", "captions", "base", "finetuned"} <= set(tasks["text2img"]) and "bm25" in tasks[
        "text2img"
    ]
    assert {"hybrid", "pixels", "raw-pixels-16x16"} <= set(tasks["img2img"])
    benchmark = _metadata(instance, "benchmark_report")
    assert "R@1" in benchmark["report"] and isinstance(benchmark["hybrid/text2img/R@1"], float)
    assert report["warnings"]  # 4 queries a task: flagged as too few to mean anything
    fusion = _metadata(instance, "search_fusion")
    assert "weights" in fusion and isinstance(fusion["fold_variants"], bool)
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey("benchmark_report"), "fine_tuning_improves_on_the_base_model")]
    )
    assert checks  # the WARN check ran beside the report
    first = _check_evaluation(instance, "benchmark_report", "no_regression_since_previous")
    assert first.passed and "first materialization" in first.description
    index_check = _check_evaluation(instance, "icon_embeddings", "index_complete")
    assert index_check.passed, index_check.description
    # Each stage ran through its named job, so the UI lists the runs under it.
    assert {"ingest_job", "train_job", "index_job"} <= {run.job_name for run in instance.get_runs()}
    assert "data:image/png;base64" in training["loss_plot"]  # the loss curve, drawn
    assert (
        f"tensorboard --logdir {pipeline_env / 'data' / 'models' / 'finetuned'}"
        in (training["tensorboard_command"])
    )
    preview = _metadata(instance, "rendered_icons", "mine-all-0001")
    assert preview["preview_icons"] == min(60, preview["icons"] - preview["failed"])

    service = SearchService.open()
    try:
        assert service.models() == ["hybrid", "bm25", "captions", "finetuned", "base", "pixels", "exemplars"]
        hits = service.text("hide layer", k=5)
        assert len(hits) == 5 and all(h.name for h in hits) and hits[0].channel_scores
        keyword_hits = service.text("bell", "BM25", k=3)  # any case
        assert keyword_hits and all("bell" in h.name for h in keyword_hits)
        screenshot = _screenshot(pipeline_env / "shot.png", pipeline_env / "data")
        hits = service.image(screenshot, k=3)
        assert len(hits) == 3
    finally:
        service.close()
    unknown = subprocess.run(
        [CLI, "search", "bell", "--model", "nope"], capture_output=True, text=True, timeout=120
    )
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert (
        "unknown model 'nope'; choose one of: hybrid, bm25, captions, finetuned, base, pixels"
        in unknown.stderr
    )
    as_json = subprocess.run(
        [CLI, "search", "ring the bell", "--json", "-k", "3"], capture_output=True, text=True, timeout=120
    )
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["model"] == "hybrid" and len(answer["results"]) == 3
    assert {"icon_id", "name", "group_id", "score", "channels", "svg_url"} <= set(answer["results"][0])
    assert answer["results"][0]["channels"]  # every channel's own score for the hit

    # A team's own queries: names or ids, a screenshot, and lines that cannot be used.
    queries = pipeline_env / "my_queries.jsonl"
    queries.write_text(
        '{"text": "notification bell", "relevant": ["bell"]}\n'
        "\n"
        '{"text": "delete", "relevant": ["trash", "no-such-icon"]}\n'
        '{"relevant": ["bell"]}\n'
        "not json\n"
        f'{{"image": "{screenshot.name}", "relevant": ["folder"]}}\n'
    )
    evaluated = subprocess.run(
        [CLI, "evaluate", str(queries), "--json"], capture_output=True, text=True, timeout=300
    )
    assert evaluated.returncode == 0, evaluated.stderr
    scores = json.loads(evaluated.stdout)
    assert scores["queries"] == 2
    assert [(p["line"], p["reason"].split(":")[0]) for p in scores["skipped"]] == [
        (3, 'unknown icon(s) in "relevant"'),
        (4, 'needs exactly one of "text" or "image"'),
        (5, "not a JSON object (Expecting value)"),
    ]
    channels = {(r["channel"], r["kind"]) for r in scores["results"]}
    assert {("hybrid", "text"), ("hybrid", "image"), ("bm25", "text"), ("pixels", "image")} <= channels
    assert all(0 <= r["recall@10"] <= 1 for r in scores["results"])

    _move_the_data_root_and_search_again(pipeline_env, monkeypatch, queries)

    # Scale out as a data engineer would in the launchpad: only the `torchrun` resource changes
    # (gloo on this CPU, NCCL where GPUs are). The global batch doubles, so it is a new run dir.
    # The default model's frozen trunk trains its heads in one process; a ViT-style model (here
    # the earlier CPU default) trains on every rank.
    config_file = pipeline_env / "icon_pipeline.yaml"
    config_file.write_text(config_file.read_text() + "model:\n  size: whole-icon-32\n")
    two_processes = pipeline_env / "two_processes.yaml"
    two_processes.write_text("resources:\n  torchrun:\n    config:\n      nproc_per_node: 2\n")
    result = subprocess.run(
        [CLI, "materialize", "base_checkpoint", "finetuned_checkpoint", "--run-config", str(two_processes)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    scaled = _metadata(instance, "finetuned_checkpoint")
    assert scaled["world_size"] == 2 and scaled["global_batch_size"] == 8 and scaled["steps"] == 4
    assert scaled["checkpoint_path"] != training["checkpoint_path"]
    assert "eval/image2text/R@1" in scaled  # rank 0 alone reported, through Pipes

    # The benchmark against its previous materialization: recorded figures made better than
    # today's (a real materialization event with altered numbers), so today's run is a drop.
    figures = {k: v for k, v in benchmark.items() if k.count("/") == 2 and "/R@" in k}
    better = {k: round(v + 0.3, 3) for k, v in figures.items()}
    instance.report_runless_asset_event(
        AssetMaterialization(
            "benchmark_report", metadata={**better, "queries_file": benchmark["queries_file"]}
        )
    )
    rerun = materialize_assets(defs, instance, ["benchmark_report"], log=lambda _: None)
    assert rerun.success
    (warning,) = [c for c in rerun.failed_checks if c.check == "no_regression_since_previous"]
    now = _metadata(instance, "benchmark_report")
    assert warning.severity == "WARN"
    expected = (
        f"text2img hybrid R@10 {better['hybrid/text2img/R@10']:.3f} -> {now['hybrid/text2img/R@10']:.3f}"
    )
    assert expected in warning.description

    # The index completeness check counts rows in the database: one row gone fails it.
    with psycopg.connect(os.environ["ICON_PIPELINE_DATABASE_URL"], autocommit=True) as conn:
        (table_name,) = conn.execute(
            "SELECT table_name FROM icon_index_models WHERE model_id = 'finetuned'"
        ).fetchone()
        conn.execute(f'DELETE FROM "{table_name}" WHERE icon_id = (SELECT min(icon_id) FROM "{table_name}")')
    result = index_complete(
        build_asset_check_context(instance=instance, resources={"postgres": PostgresResource()})
    )
    assert not result.passed and "finetuned:" in result.description and "1 missing" in result.description


def _open_icon_sets(sources: Path, tabler: Path) -> None:
    """Corpus sets drawn in another style (Tabler's filled drawings under their names) and benchmark
    sets whose icons name some of the library's, in the packages' real layouts; remixicon missing."""
    filled = {
        n: (tabler / "icons" / "filled" / f"{n}.svg").read_text() for n in ("bell", "folder", "trash", "user")
    }
    write_iconoir(sources, ["bell", "folder", "trash", "rocket"], filled)
    write_mdi(
        sources,
        {"bell": ["notification"], "user": ["account", "person"], "cog": ["settings", "gear"]},
        filled,
    )
    write_phosphor(
        sources, {"bell": ["alarm", "ring"], "folder": ["directory"], "lock": ["secure", "padlock"]}
    )
    write_fontawesome(
        sources,
        {
            "house": {"terms": ["abode", "dwelling"], "aliases": ["home"]},
            "gear": {"terms": ["cog", "sprocket"], "aliases": ["settings"]},
            "trash-can": {"terms": ["garbage", "delete"], "aliases": ["trash"]},
        },
    )


def _corpus_and_external_benchmark(instance: DagsterInstance, data: Path) -> None:
    corpus = _metadata(instance, "icon_corpus", "iconoir")
    assert corpus["drawings"] == 8 and corpus["licence"] == "MIT" and "data:image/png" in corpus["preview"]
    pairs = _metadata(instance, "corpus_pairs")
    assert pairs["sets"] == ["iconoir", "mdi"] and pairs["sets_missing"] == ["remixicon"]
    assert pairs["groups_joining_library_groups"] + pairs["fitting_image_queries"] > 0
    leak = _check_evaluation(instance, "corpus_pairs", "no_benchmark_or_banned_set_in_training")
    assert leak.passed, leak.description
    trained = pd.read_parquet(data / "corpus" / "corpus_pairs.parquet")
    assert set(trained["sets"].explode()) <= {"iconoir", "mdi"}  # nothing of phosphor or fontawesome
    assert "corpus:rocket" in set(trained["group_id"])  # a concept the library lacks still trains
    fitting = _metadata(instance, "search_fusion")["fitting_queries_by_source"]
    assert {"eval_set", "corpus"} <= {row.data["source"] for row in fitting.records}
    # Other sets' drawings of the library's concepts are searchable exemplars, never a fitting query's own.
    exemplars = pd.read_parquet(data / "corpus" / "exemplars.parquet")
    queries = pd.read_parquet(data / "corpus" / "fitting_queries.parquet")
    assert len(exemplars) and set(exemplars["set"]) <= {"iconoir", "mdi"}
    assert set(exemplars["png_path"]).isdisjoint(set(queries["image_path"].dropna()))
    indexed = _metadata(instance, "exemplar_embeddings")
    assert indexed["drawings"] == len(exemplars) and "data:image/png" in indexed["preview"]

    external = _metadata(instance, "external_benchmark")
    assert {row.data["set"] for row in external["sets"].records} == {"phosphor", "fontawesome"}
    for task in ("tags-all", "drawings"):
        for model in ("hybrid", "finetuned"):
            assert 0.0 <= external[f"pooled/{task}/{model}/R@10"] <= 1.0
    assert isinstance(external["pooled/tags-all/bm25/R@1"], float)
    assert isinstance(external["pooled/drawings/raw-pixels-16x16/R@10"], float)
    assert 0.0 <= external["pooled/drawings/exemplars/R@10"] <= 1.0  # its own row, so its share shows
    markdown = (data / "reports" / "benchmark.md").read_text()
    assert markdown.index("External benchmark") < markdown.index("Internal benchmark")
    assert "Font Awesome Free 7.3.1 by Fonticons" in markdown  # CC BY 4.0: credited
    queries = pd.read_parquet(data / "external" / "fontawesome.parquet")
    assert set(queries[queries["task"] == "tags-novel"]["text"]) >= {"abode", "sprocket"}


def _check_evaluation(instance: DagsterInstance, asset: str, check: str):
    record = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(AssetKey(asset), check))
    assert record is not None and record.event is not None, f"{asset}.{check} never ran"
    return record.event.dagster_event.event_specific_data


def _move_the_data_root_and_search_again(
    env: Path, monkeypatch: pytest.MonkeyPatch, user_queries: Path
) -> None:
    """Copy the data root, point ICON_PIPELINE_DATA at the copy (same database), rename the
    original away; every persisted path is relative, so search works without re-running anything."""
    from icon_pipeline.apps import search as search_app
    from icon_pipeline.benchmark.evaluate import evaluate_file
    from icon_pipeline.core.frozen import read_frozen_jsonl
    from icon_pipeline.core.storage import (
        EVAL_NAME,
        QUERIES_NAME,
        asset_path,
        frozen_file,
        read_checkpoint_pointer,
        resolved_rows,
    )
    from icon_pipeline.defs.model import finetune_run_key, finetune_train_config
    from icon_pipeline.model.training.data import sha256_file
    from icon_pipeline.search.service import SearchService, model_checkpoint

    def run_key() -> str:
        config = load_config()
        eval_path = frozen_file(EVAL_NAME, config)
        base = read_checkpoint_pointer("base", "base_checkpoint")["path"]
        return finetune_run_key(finetune_train_config(config, base, eval_path, sha256_file(eval_path)), 1)

    old, new = env / "data", env / "moved" / "root"
    key_before = run_key()
    shutil.copytree(old, new, symlinks=True)
    old.rename(env / "data.gone")  # nothing may still read the old root
    monkeypatch.setenv("ICON_PIPELINE_DATA", str(new))

    # What is on disk is relative: no file names the old root, in any table, pointer, checkpoint's
    # metadata (a fine-tune's base) or the fine-tune run's records (its config and report).
    tables = [*new.rglob("*.parquet")]
    assert {asset_path("training_pairs"), asset_path("icon_images")} <= set(tables)
    for table in tables:
        assert str(old) not in pd.read_parquet(table).to_json(), table
    records = [
        *new.glob("models/*.json"),
        *new.rglob("icon_pipeline.json"),
        *new.rglob("train_config.json"),
        *new.rglob("training_report.json"),
    ]
    assert {"train_config.json", "training_report.json"} <= {record.name for record in records}
    for record in records:
        assert str(old) not in record.read_text(), record
    queries_file = frozen_file(QUERIES_NAME, load_config())
    frozen = read_frozen_jsonl(queries_file)
    assert str(old) not in queries_file.read_text()
    img2img = [row for row in resolved_rows(frozen) if row["task"] == "img2img"]
    assert img2img and all(Path(row["image_path"]).is_file() for row in img2img)
    # The fine-tune run key hashes relative values: a re-run would resume the same run directory.
    assert run_key() == key_before == Path(read_checkpoint_pointer("finetuned", "f")["run_dir"]).name

    screenshot = new.parent / "shot.png"
    shutil.copy(env / "shot.png", screenshot)
    service = SearchService.open()
    try:
        assert model_checkpoint(service.conn, "finetuned").startswith(str(new))
        hits = service.text("notification bell", k=5)
        assert hits and all(h.png_path and Path(h.png_path).is_file() for h in hits)
        assert str(new) in hits[0].png_path
        for model in ("hybrid", "finetuned", "pixels"):
            hits = service.image(screenshot, model, k=3)
            assert len(hits) == 3 and all(Path(h.png_path).is_file() for h in hits), model
        frozen_query = service.image(Path(img2img[0]["image_path"]), "finetuned", k=3)
        assert frozen_query
        # The benchmark's evaluate path, on the copied query file (its image is relative to it).
        moved_queries = new.parent / user_queries.name
        moved_queries.write_text(user_queries.read_text())  # its image line names shot.png, beside it
        scores = evaluate_file(moved_queries, service, k=30)
        assert scores.scored == 2 and {("hybrid", "text"), ("hybrid", "image")} <= set(scores.scores)
    finally:
        service.close()

    # The search app (same service, its own connection and model cache).
    # The page's own search function (both panels), as its buttons call it.
    first, compared, message, _, shown = search_app._search(
        {"kind": "text", "text": "bell"}, "hybrid", "finetuned", True, [], [], 1
    )
    assert first and compared["visible"] and "Error" not in message, message
    assert shown and all(Path(i["png_path"]).is_file() and str(new) in i["png_path"] for i in shown.values())
    _, state = search_app.prepare_image(str(screenshot), None)
    first, _, message, _, shown = search_app._search(state, "finetuned", None, True, [], [], 1)
    assert shown and "Error" not in message, message


def _screenshot(path: Path, data_dir: Path) -> Path:
    """A crop of a rendered icon on a wide canvas, like a screenshot a designer would paste."""
    from PIL import Image

    rendered = next((data_dir / "rendered" / "store").rglob("*.png"))
    canvas = Image.new("RGB", (500, 180), "white")
    canvas.paste(Image.open(rendered).crop((20, 20, 204, 204)), (150, 0))
    canvas.save(path)
    return path
