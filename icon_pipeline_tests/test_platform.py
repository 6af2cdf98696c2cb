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
from icon_pipeline.settings import REPO_ROOT

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
