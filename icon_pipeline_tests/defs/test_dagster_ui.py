"""What a Dagster user sees: owners, tags and descriptions everywhere, named jobs, `icon-pipeline ui`
stopping with every process it started, and `icon-pipeline db status` saying what is stored."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import psycopg
import pytest

from icon_pipeline.core.paths import REPO_ROOT
from icon_pipeline.definitions import defs


def _cli(*args: str) -> list[str]:
    # `python -m` from this checkout: the console script may belong to another checkout's install.
    return [sys.executable, "-m", "icon_pipeline.cli", *args]


def test_every_asset_has_owners_and_tags_and_every_check_sensor_schedule_a_description() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        assert node.owners, f"{key.to_user_string()} has no owner"
        assert {"domain", "layer"} <= set(node.tags), f"{key.to_user_string()} lacks domain/layer tags"
    checks = list(graph.asset_check_keys)
    assert len(checks) >= 11
    for check in checks:
        assert (graph.get_check_spec(check).description or "").strip(), f"{check} has no description"
    repository = defs.get_repository_def()
    for definition in [*repository.sensor_defs, *repository.schedule_defs]:
        assert (definition.description or "").strip(), f"{definition.name} has no description"
    jobs = {job.name: job for job in repository.get_all_jobs()}
    assert {"ingest_job", "train_job", "index_job"} <= set(jobs)
    covered = set()
    for name in ("ingest_job", "corpus_job", "train_job", "index_job"):
        assert jobs[name].description
        covered |= set(jobs[name].asset_layer.executable_asset_keys)
    assert covered == set(graph.materializable_asset_keys)  # every asset belongs to a named job


def test_metadata_helpers_sample_the_whole_batch_round_floats_and_draw_plots() -> None:
    from dagster import MetadataValue

    from icon_pipeline.defs.metadata import line_plot_markdown, rounded, spread

    assert spread(100, 5) == [0, 25, 50, 74, 99] and spread(3, 60) == [0, 1, 2]
    assert rounded({"a": 0.123456, "b": MetadataValue.float(2.30258), "c": 3, "d": "x"}) == {
        "a": 0.123,
        "b": MetadataValue.float(2.303),
        "c": 3,
        "d": "x",
    }
    plot = line_plot_markdown([(1, 2.3), (2, 1.9), (3, 1.2)], "training loss", "loss")
    assert plot is not None and plot.value.startswith("![training loss](data:image/png;base64,")
    assert line_plot_markdown([], "training loss", "loss") is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "icon-pipeline ui exited before serving"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the webserver did not listen on port {port} within {timeout:.0f}s")


def _alive(pids: set[int]) -> list[str]:
    left = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(proc.cmdline())[:150]}")
        except psutil.NoSuchProcess:
            continue
    return left


def test_ui_stops_with_every_process_it_started_on_sigterm(pipeline_env: Path) -> None:
    (pipeline_env / "icon_pipeline.yaml").write_text("sources: []\n")
    port = _free_port()
    log = pipeline_env / "ui.log"
    with log.open("w") as out:
        ui = subprocess.Popen(
            _cli("ui", "--port", str(port)), cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_port(port, ui, timeout=300)
        started = {p.pid for p in psutil.Process(ui.pid).children(recursive=True)}
        assert len(started) >= 3  # code server (and the server it spawned), webserver, daemon
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 0
        started |= {
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if f"-p {port}" in " ".join(p.info["cmdline"] or [])
        }
        time.sleep(0.5)
        assert _alive(started) == []
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
    output = log.read_text()
    assert "Serving dagster-webserver" in output
    # Nothing we cause warns on start (dagster dev is superseded and said so on every start).
    assert "Warning" not in output and "deprecat" not in output.lower(), output[-3000:]


def test_db_status_lists_models_rows_hnsw_indexes_and_runs(pipeline_env: Path) -> None:
    from icon_pipeline.core.database import ensure_database
    from icon_pipeline.search.index import write_embeddings

    url = os.environ["ICON_PIPELINE_DATABASE_URL"]
    info = ensure_database()
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        vectors = rng.normal(size=(n, 8)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    with psycopg.connect(info.libpq_url, autocommit=True) as conn:
        write_embeddings(conn, "finetuned", [f"i{k}" for k in range(5)], ["g"] * 5, unit(5))
        write_embeddings(conn, "base", [f"i{k}" for k in range(4)], ["g"] * 4, unit(4))
        write_embeddings(
            conn, "captions", ["i0", "i0", "i1"], ["g"] * 3, unit(3), texts=["bell", "ring", "bell"]
        )
    from dagster import DagsterInstance, asset, materialize

    @asset
    def probe():  # no annotation: this module's annotations are strings Dagster cannot resolve here
        return None

    assert materialize([probe], instance=DagsterInstance.get()).success  # one run in Dagster's storage

    # A password in the URL (this server trusts local users, so it is accepted and unused) is
    # never printed.
    secret_url = url.replace("postgres:@", "postgres:s3cret-pw@", 1)
    assert secret_url != url
    env = {**os.environ, "ICON_PIPELINE_DATABASE_URL": secret_url}
    result = subprocess.run(
        _cli("db", "status"), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "s3cret" not in out + result.stderr
    lines = out.splitlines()
    assert "models indexed: 2" in lines
    row = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert "5 rows" in row["finetuned"] and "4 rows" in row["base"] and "_hnsw" in row["base"]
    assert any(line.startswith("caption embeddings: 2 rows") for line in lines)  # distinct texts
    assert "exemplar drawings: none (materialize exemplar_embeddings)" in lines
    assert "HNSW indexes present: 3 of 3 tables" in lines
    assert "Dagster runs: 1 (1 success)" in lines


def test_a_demo_run_shows_under_its_job_and_on_the_overview_timeline(
    pipeline_env: Path, tabler_package: Path
) -> None:
    """`materialize` (as the demo runs it) records runs the served code location owns: the job's
    Runs tab lists the run, and the Overview timeline draws it on the job's row (in Chromium)."""
    from dagster import DagsterInstance

    from icon_pipeline.core.database import ensure_database
    from icon_pipeline.defs.run_origin import LOCATION_NAME
    from icon_pipeline.defs.runner import materialize_assets
    from icon_pipeline_tests.apps.test_apps_browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    icons = pipeline_env / "icons"
    icons.mkdir()
    for name in ("bell", "folder", "trash"):
        (icons / f"{name}.svg").write_bytes(
            (tabler_package / "icons" / "outline" / f"{name}.svg").read_bytes()
        )
    (pipeline_env / "icon_pipeline.yaml").write_text(
        f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\n"
    )
    ensure_database()
    summary = materialize_assets(defs, DagsterInstance.get(), ["icon_catalog"], log=lambda _: None)
    (run,) = summary.runs
    assert run.success

    # The analyst's tables and figures, as benchmark_report writes them, on a report with the
    # longest names (the figures' keys, e.g. finetuned/semantic2img/R@10, set the key column).
    from dagster import AssetMaterialization

    from icon_pipeline.benchmark.checks import headline_figures
    from icon_pipeline.defs.benchmark import benchmark_tables
    from icon_pipeline.defs.metadata import FLOAT_PLACES

    report = _wide_report()
    metadata = {
        **benchmark_tables(report),
        **headline_figures(report, FLOAT_PLACES),
    }
    DagsterInstance.get().report_runless_asset_event(
        AssetMaterialization("benchmark_report", metadata=metadata)
    )

    port = _free_port()
    log = pipeline_env / "ui.log"
    with log.open("w") as out:
        ui = subprocess.Popen(
            _cli("ui", "--port", str(port)), cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    from playwright.sync_api import sync_playwright

    try:
        _wait_for_port(port, ui, timeout=300)
        base = f"http://127.0.0.1:{port}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/locations/{LOCATION_NAME}/jobs/ingest_job/runs")
            # The job's Runs tab lists the run ("No runs found" when its origin is not this location).
            page.locator(f'a[href*="/runs/{run.run_id}"]').first.wait_for()
            page.goto(f"{base}/overview/activity/timeline")
            job_link = page.locator(f'a[href="/locations/{LOCATION_NAME}/jobs/ingest_job"]').first
            job_link.wait_for()
            # The job's row on the timeline holds the run's bar.
            page.wait_for_function(
                """href => {
                    let node = document.querySelector(`a[href="${href}"]`);
                    for (let i = 0; node && i < 8; i++, node = node.parentElement) {
                        if (node.querySelector('[class*="RunTimeline_runChunk_"]')) return true;
                    }
                    return false;
                }""",
                arg=f"/locations/{LOCATION_NAME}/jobs/ingest_job",
            )
            page.screenshot(path=str(pipeline_env / "timeline.png"))

            # Each results table fits the metadata column of a 1400 px wide window.
            page.goto(f"{base}/assets/benchmark_report")
            page.get_by_text("seen_vs_heldout/semantic2img", exact=True).first.wait_for()
            # Against what is in sight: the metadata table's own box (the panel clips what sticks out).
            overflow = page.evaluate(
                """() => [...document.querySelectorAll('td table')].map(inner => {
                    const outer = inner.parentElement.closest('table');
                    const panel = outer.parentElement.getBoundingClientRect();
                    const key = inner.closest('td').closest('tr').querySelector('td').innerText.trim();
                    return [key, Math.round(inner.getBoundingClientRect().right - panel.right)];
                })"""
            )
            keys = {key for key, _ in overflow}
            assert {"results/img2img", "seen_vs_heldout/text2img", "comparisons/img2img"} <= keys, keys
            assert [(key, excess) for key, excess in overflow if excess > 1] == []
            page.screenshot(path=str(pipeline_env / "benchmark_report.png"), full_page=True)
            browser.close()
    finally:
        ui.send_signal(signal.SIGTERM)
        try:
            ui.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)


def test_ui_help_says_what_it_serves_and_what_each_option_is() -> None:
    result = subprocess.run(_cli("ui", "--help"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "Serve the Dagster UI" in text and "Overview timeline" in text
    assert "--host HOST address to listen on" in text and "--port PORT port of the webserver" in text


def _wide_report():
    """A benchmark report with every search the demo shows (the longest names) on three tasks."""
    from icon_pipeline.benchmark.report import BenchmarkReport, Comparison, ReportRow

    searches = {
        "text2img": ["hybrid", "bm25", "base", "captions", "finetuned", "hybrid-unfolded"],
        "semantic2img": ["hybrid", "bm25", "base", "captions", "finetuned", "hybrid-unfolded"],
        "img2img": [
            "hybrid",
            "raw-pixels-16x16",
            "base",
            "finetuned",
            "hybrid-concept",
            "hybrid-unfolded",
            "pixels",
        ],
    }
    modes = {"bm25": ["lexical"], "raw-pixels-16x16": ["numpy"]}
    rows = [
        ReportRow(
            task,
            model,
            mode,
            subset,
            99 if subset == "heldout" else 990,
            {1: 0.825, 5: 0.871, 10: 0.882, 30: 0.921},
            0.737,
            1.0,
            2.0,
        )
        for task, models in searches.items()
        for model in models
        for mode in modes.get(model, ["exact", "hnsw"])
        for subset in ("all", "seen", "heldout")
    ]
    comparisons = [
        Comparison("semantic2img", "finetuned", "base", 989, 0.696, 0.028, 0.0002),
        Comparison("img2img", "hybrid", "raw-pixels-16x16", 989, 0.986, 0.171, 0.0002),
    ]
    return BenchmarkReport(
        ks=(1, 5, 10, 30), models=list(searches["img2img"]), rows=rows, comparisons=comparisons
    )
