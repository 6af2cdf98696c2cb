"""`icon-pipeline demo --run-config FILE`: the same Dagster run config as `materialize` takes,
checked before the demo fetches, starts or runs anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from icon_pipeline.cli import build_parser, cmd_demo
from icon_pipeline.core.paths import REPO_ROOT


def test_demo_accepts_a_run_config_file() -> None:
    args = build_parser().parse_args(["demo", "--run-config", "gpus.yaml", "--allow-failed-checks"])
    assert args.func is cmd_demo
    assert args.run_config == Path("gpus.yaml") and args.allow_failed_checks
    assert build_parser().parse_args(["demo"]).run_config is None


def _demo(tmp_path: Path, run_config: Path) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own, every location it could touch under tmp_path."""
    config = tmp_path / "icon_pipeline.yaml"
    config.write_text("sources:\n  - kind: local\n    path: icons\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "ICON_PIPELINE_CONFIG": str(config),
        "ICON_PIPELINE_DATA": str(tmp_path / "data"),
        "ICON_PIPELINE_PGDATA": str(tmp_path / "pgdata"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    env.pop("ICON_PIPELINE_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "icon_pipeline.cli", "demo", "--run-config", str(run_config)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )


def test_a_demo_run_config_that_does_not_fit_the_jobs_stops_the_demo_before_anything_runs(
    tmp_path: Path,
) -> None:
    run_config = tmp_path / "gpus.yaml"
    run_config.write_text("resources:\n  torchrun:\n    config:\n      nproc_per_nodes: 8\n")
    result = _demo(tmp_path, run_config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"icon-pipeline: error: {run_config}: ")
    assert "nproc_per_nodes" in result.stderr and "Traceback" not in result.stderr
    # Nothing fetched, no database started, no Dagster instance made, not even the banner printed.
    assert result.stdout == ""
    assert not any((tmp_path / name).exists() for name in ("data", "pgdata", "dagster_home"))


def test_a_demo_run_config_with_a_duplicate_key_names_the_file_and_line(tmp_path: Path) -> None:
    run_config = tmp_path / "gpus.yaml"
    run_config.write_text(
        "resources:\n  torchrun:\n    config:\n      nproc_per_node: 2\n      nproc_per_node: 8\n"
    )
    result = _demo(tmp_path, run_config)
    assert result.returncode == 2, result.stdout + result.stderr
    where = f"{run_config}:5: not valid YAML"
    assert f"{where}: duplicate key 'nproc_per_node' (first at line 4)" in result.stderr
    assert result.stdout == "" and not (tmp_path / "dagster_home").exists()
