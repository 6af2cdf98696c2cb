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

from icon_pipeline.core.database import (
    DatabaseError,
    check_connection,
    describe_url,
    embedded_status,
    start_embedded,
    stop_embedded,
    to_psycopg2_url,
)
from icon_pipeline.core.paths import REPO_ROOT


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


MALFORMED_URLS = {
    # An unclosed IPv6 bracket: urllib's own error would carry the password into a traceback.
    "postgresql://alice:Pw-Kept-Secret@[::1:5432/icons": "a '[' around an IPv6 host is not closed",
    "postgresql://alice:Pw-Kept-Secret@localhost:abc/icons": "the port is not a number",
    "postgresql://alice:Pw-Kept-Secret@localhost:99999/icons": "the port is not between 1 and 65535",
    # No @host: the password is where the port should be, so the port must never be quoted.
    "postgresql://alice:Pw-Kept-Secret/icons": "the port is not a number",
    "host=db password=Pw-Kept-Secret": "it does not start with postgresql://",
}


@pytest.mark.parametrize("url", list(MALFORMED_URLS))
def test_a_malformed_url_is_one_line_that_names_the_problem_never_the_password(url: str) -> None:
    for describe in (describe_url, check_connection):
        with pytest.raises(DatabaseError) as caught:
            describe(url)
        message = str(caught.value)
        assert MALFORMED_URLS[url] in message and "Pw-Kept-Secret" not in message
        # No chained urllib error under it: a traceback would print that one's message too.
        error = caught.value
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


@pytest.mark.parametrize("action", ["status", "url", "start"])
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:Pw-Kept-Secret@[::1:5432/icons",
        "postgresql://alice:Pw-Kept-Secret@localhost:abc/icons",
    ],
)
def test_cli_with_a_malformed_database_url_says_why_in_one_line(url: str, action: str) -> None:
    result = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "icon-pipeline"), "db", action],
        env=dict(os.environ, ICON_PIPELINE_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Pw-Kept-Secret" not in output and "Traceback" not in output
    assert result.stderr.strip().splitlines() == [
        "icon-pipeline: error: ICON_PIPELINE_DATABASE_URL is not a valid PostgreSQL URL: "
        f"{MALFORMED_URLS[url]} (expected postgresql://user:password@host:5432/database)"
    ]


def test_a_password_libpq_quotes_back_is_hidden() -> None:
    # libpq quotes an invalid percent-encoding back, here the password itself.
    with pytest.raises(DatabaseError) as caught:
        check_connection("postgresql://alice:Pw%zzSecret@127.0.0.1:1/icons")
    assert "Pw%zzSecret" not in str(caught.value) and "host 127.0.0.1:1, database icons" in str(caught.value)


def test_describe_url_of_several_hosts_and_ipv6() -> None:
    assert describe_url("postgresql://u:pw@h1:5432,h2/icons") == "hosts h1:5432,h2, database icons"
    assert describe_url("postgresql://u:pw@[::1]:5433/icons") == "host ::1:5433, database icons"
    assert describe_url("postgresql+psycopg://u@db.example/") == "host db.example, database postgres"
