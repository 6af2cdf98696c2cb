"""The embedded server: starts, serves pgvector, stops, recovers from a crash, hides secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from icon_pipeline.database import (
    DatabaseError,
    check_connection,
    describe_url,
    embedded_status,
    start_embedded,
    stop_embedded,
    to_psycopg2_url,
)
from icon_pipeline.settings import REPO_ROOT


def _postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_embedded_server_starts_serves_vector_and_stops_cleanly(fresh_dir: Path) -> None:
    pgdata = fresh_dir / "pgdata"
    info = start_embedded(pgdata)
    try:
        assert info.embedded and "running" in embedded_status(pgdata)
        with psycopg.connect(info.libpq_url) as conn:
            distance = conn.execute("SELECT '[1,0,0]'::vector <=> '[0,1,0]'::vector").fetchone()[0]
        assert distance == pytest.approx(1.0)
        # A second start reuses the running server instead of starting another.
        again = start_embedded(pgdata)
        assert again.url == info.url
    finally:
        assert stop_embedded(pgdata)
    assert "stopped" in embedded_status(pgdata)
    assert _postgres_processes(pgdata) == []


def test_start_recovers_after_the_server_was_killed(fresh_dir: Path) -> None:
    pgdata = fresh_dir / "pgdata"
    start_embedded(pgdata)
    pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _postgres_processes(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (pgdata / "postmaster.pid").exists(), "a killed server leaves its lock file behind"
    info = start_embedded(pgdata)
    try:
        with psycopg.connect(info.libpq_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop_embedded(pgdata)
    assert _postgres_processes(pgdata) == []


def test_a_garbage_lock_file_is_cleared(fresh_dir: Path) -> None:
    pgdata = fresh_dir / "pgdata"
    start_embedded(pgdata)
    stop_embedded(pgdata)
    (pgdata / "postmaster.pid").write_text("999999\n")  # a crash mid-write, or a reused pid
    info = start_embedded(pgdata)
    stop_embedded(pgdata)
    assert info.embedded


def test_unreachable_database_url_names_host_and_database_never_the_password() -> None:
    url = "postgresql://icons:s3cr3t-pw@127.0.0.1:1/icon_index"
    with pytest.raises(DatabaseError) as excinfo:
        check_connection(url)
    message = str(excinfo.value)
    assert "127.0.0.1" in message and "icon_index" in message
    assert "s3cr3t-pw" not in message


def test_cli_with_a_bad_database_url_exits_non_zero_with_one_line() -> None:
    env = dict(os.environ, ICON_PIPELINE_DATABASE_URL="postgresql://icons:s3cr3t-pw@127.0.0.1:1/icon_index")
    result = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "icon-pipeline"), "db", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "icon_index" in result.stderr and "127.0.0.1" in result.stderr
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_url_helpers() -> None:
    assert to_psycopg2_url("postgresql://u:p@h/db").startswith("postgresql+psycopg2://")
    assert (
        describe_url("postgresql://postgres:@/postgres?host=/x/pg&port=5432")
        == "host /x/pg, database postgres"
    )
    assert describe_url("postgresql://u:pw@db.example:6543/icons") == "host db.example:6543, database icons"
