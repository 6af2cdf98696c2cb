"""The platform end to end: definitions load, the CLI answers, runs land in PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from dagster import Definitions

from icon_pipeline.cli import build_parser
from icon_pipeline.core.paths import REPO_ROOT

CLI = str(REPO_ROOT / ".venv" / "bin" / "icon-pipeline")


def test_definitions_load_with_every_stage() -> None:
    from icon_pipeline.definitions import defs

    Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().materializable_asset_keys}
    assert {"icon_catalog", "rendered_icons"} <= keys


@pytest.mark.parametrize(
    "command", [[], *[[name] for name in ("demo", "ui", "materialize", "db", "lexicon")]]
)
def test_cli_answers_help_for_each_subcommand(command: list[str]) -> None:
    result = subprocess.run([CLI, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: icon-pipeline" in result.stdout


def test_every_subcommand_is_documented_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    for name in commands:
        assert f"icon-pipeline {name}" in readme, f"README does not mention `icon-pipeline {name}`"


def _write_local_library(folder: Path, tabler_package: Path, names: list[str]) -> None:
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(tabler_package / "icons" / "outline" / f"{name}.svg", folder / f"{name}.svg")


def test_materialize_through_the_configured_instance_is_recorded_in_postgres(
    pipeline_env: Path, tabler_package: Path
) -> None:
    icons = pipeline_env / "icons"
    _write_local_library(icons, tabler_package, ["bell", "bell-off", "folder", "trash", "user"])
    (pipeline_env / "icon_pipeline.yaml").write_text(
        f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\n"
    )

    result = subprocess.run(
        [CLI, "materialize", "icon_catalog", "rendered_icons"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stdout + result.stderr

    url = os.environ["ICON_PIPELINE_DATABASE_URL"]
    with psycopg.connect(url) as conn:
        statuses = [row[0] for row in conn.execute("SELECT status FROM runs")]
        partitions = [row[0] for row in conn.execute("SELECT partition FROM dynamic_partitions")]
        events = conn.execute(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        ).fetchone()[0]
    assert statuses and set(statuses) == {"SUCCESS"}
    assert partitions == ["mine-all-0001"]
    assert events == 2  # icon_catalog once, rendered_icons for the one batch
    rendered = list((pipeline_env / "data" / "rendered" / "store").rglob("*.png"))
    assert len(rendered) == 5


def test_lexicon_command_prints_one_json_object_per_name(tmp_path: Path) -> None:
    import json

    affixed = [
        f"SDC_{word}_18_N-SDC___Icons_Acrobat_Desktop_Web_Mobile" for word in ("Print", "ZoomIn", "Stamp")
    ]
    names = tmp_path / "names.txt"
    names.write_text(
        "\n".join(
            [*affixed, "SDC_MarkForRedaction_18_N-SDC___Icons_Acrobat_Desktop_Web_Mobile\tredact, hide"]
        )
    )
    result = subprocess.run([CLI, "lexicon", str(names)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    assert lines[-1]["terms"] == ["mark for redaction", "mark", "for", "redaction"]
    assert "redact" in lines[-1]["tags"]


def test_an_unknown_asset_is_one_clear_line_listing_the_known_ones(pipeline_env: Path) -> None:
    (pipeline_env / "icon_pipeline.yaml").write_text("sources:\n  - kind: tabler\n")
    result = subprocess.run(
        [CLI, "materialize", "no_such_asset"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "no_such_asset" in result.stderr and "icon_catalog" in result.stderr


def test_a_misspelt_resource_field_in_the_run_config_is_named(pipeline_env: Path) -> None:
    (pipeline_env / "icon_pipeline.yaml").write_text("sources:\n  - kind: tabler\n")
    run_config = pipeline_env / "gpus.yaml"
    run_config.write_text("resources:\n  torchrun:\n    config:\n      nproc_per_nodes: 8\n")
    result = subprocess.run(
        [CLI, "materialize", "icon_catalog", "--run-config", str(run_config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(run_config) in result.stderr and "nproc_per_nodes" in result.stderr
    assert "Traceback" not in result.stderr

    missing = pipeline_env / "missing.yaml"
    result = subprocess.run(
        [CLI, "materialize", "icon_catalog", "--run-config", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "cannot read run config" in result.stderr


def test_failed_checks_are_listed_and_an_error_one_fails_the_command(
    pipeline_env: Path, tabler_package: Path
) -> None:
    """Renders that fail beyond render.max_failure_rate: the runs succeed, but the summary lists the
    failed check with its count and the command exits 1, unless --allow-failed-checks."""
    icons = pipeline_env / "icons"
    _write_local_library(icons, tabler_package, ["bell", "folder", "trash"])
    for name in ("broken-one", "broken-two"):
        (icons / f"{name}.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><path d='M0 0 L")
    (pipeline_env / "icon_pipeline.yaml").write_text(
        f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\n"
    )
    command = [CLI, "materialize", "icon_catalog", "rendered_icons"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all succeeded, but 1 check(s) FAILED" in result.stdout
    assert (
        "ERROR rendered_icons.render_failure_rate [batch mine-all-0001]: 2 of 5 icons failed to render"
        in result.stdout
    )
    allowed = subprocess.run([*command, "--allow-failed-checks"], capture_output=True, text=True, timeout=300)
    assert allowed.returncode == 0 and "render_failure_rate" in allowed.stdout


def test_a_database_that_dies_mid_run_is_one_line_and_the_run_is_failed_later(
    pipeline_env: Path, tabler_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded server killed while icon_embeddings runs: one line naming the database, no
    traceback; the index keeps what it had; the next start marks the run failed."""
    import signal
    import time

    from icon_pipeline.core.database import _postgres_alive

    pgdata = pipeline_env / "pgdata"
    monkeypatch.delenv("ICON_PIPELINE_DATABASE_URL")
    monkeypatch.setenv("ICON_PIPELINE_PGDATA", str(pgdata))
    icons = pipeline_env / "icons"
    _write_local_library(icons, tabler_package, ["bell", "bell-off", "folder", "trash", "user", "home"])
    (pipeline_env / "icon_pipeline.yaml").write_text(
        f"sources:\n  - kind: local\n    path: {icons}\n    name: mine\ntraining:\n  max_steps: 2\n"
    )
    try:
        everything = subprocess.run([CLI, "materialize", "*"], capture_output=True, text=True, timeout=600)
        assert everything.returncode == 0, everything.stdout[-3000:] + everything.stderr[-3000:]
        database = subprocess.run([CLI, "db", "url"], capture_output=True, text=True).stdout.strip()
        with psycopg.connect(database, autocommit=True) as conn:
            rows_before = conn.execute(
                "SELECT model_id, rows, table_name FROM icon_index_models ORDER BY 1"
            ).fetchall()

        run = subprocess.Popen(
            [CLI, "materialize", "icon_embeddings"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert run.stdout is not None
        for line in run.stdout:
            if "embedding 6 icons with" in line:  # the step has begun its work
                os.kill(_postgres_alive(pgdata), signal.SIGKILL)
                break
        output = line + run.stdout.read()
        assert run.wait(timeout=120) == 2, output[-3000:]
        message = [m for m in output.splitlines() if m.startswith("icon-pipeline: error:")]
        assert len(message) == 1 and "stopped answering during icon_embeddings" in message[0]
        # Not Dagster's retries of every event write (hundreds of lines): the watcher stops it.
        assert len(output.splitlines()) < 40, output[-3000:]
        assert (
            "database icons_" in message[0] and "Traceback" not in output.split("icon-pipeline: error:")[-1]
        )

        time.sleep(1)
        status = subprocess.run([CLI, "db", "status"], capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        marked = subprocess.run(
            [CLI, "materialize", "icon_catalog"], capture_output=True, text=True, timeout=300
        )
        assert "ended without recording an end" in marked.stdout, marked.stdout[-2000:]
        with psycopg.connect(database, autocommit=True) as conn:
            statuses = [r[0] for r in conn.execute("SELECT status FROM runs ORDER BY create_timestamp")]
            rows_after = conn.execute(
                "SELECT model_id, rows, table_name FROM icon_index_models ORDER BY 1"
            ).fetchall()
        assert "STARTED" not in statuses and statuses.count("FAILURE") == 1
        assert rows_after == rows_before  # the index was swapped in whole or not at all
    finally:
        subprocess.run([CLI, "db", "stop"], capture_output=True, text=True, timeout=120)


def test_nothing_outside_the_dagster_layer_imports_dagster() -> None:
    """Domain code is plain Python: only icon_pipeline/defs/ (and definitions.py) import dagster
    (the training job's dagster-pipes is another, small package)."""
    import ast

    package = REPO_ROOT / "icon_pipeline"
    offenders = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        if relative.parts[0] == "defs" or relative.name == "definitions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{relative}: {n}" for n in names if n == "dagster" or n.startswith("dagster.")]
    assert offenders == []
