"""Shared fixtures: a real embedded PostgreSQL, a real Dagster instance, real data dirs."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from icon_pipeline.core.database import DatabaseInfo, start_embedded, stop_embedded
from icon_pipeline.core.paths import REPO_ROOT

# Embedded PostgreSQL opens the permissions of its data dir's parents when run as root: keep
# every test server inside the project, never under /tmp or $HOME.
TEST_ROOT = REPO_ROOT / ".test_tmp"
TABLER_PACKAGE = REPO_ROOT / "data" / "sources" / "tabler" / "3.51.0" / "package"


@pytest.fixture(scope="session")
def project_tmp() -> Iterator[Path]:
    path = TEST_ROOT / f"run-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(project_tmp: Path) -> Iterator[DatabaseInfo]:
    """One embedded server for the session, stopped at the end."""
    pgdata = project_tmp / "pgdata"
    info = start_embedded(pgdata)
    yield info
    stop_embedded(pgdata)


@pytest.fixture
def fresh_dir(project_tmp: Path) -> Path:
    path = project_tmp / uuid.uuid4().hex[:8]
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def tabler_package() -> Path:
    if not (TABLER_PACKAGE / "icons.json").exists():
        pytest.skip(f"Tabler icons not fetched at {TABLER_PACKAGE}: run `make data`")
    return TABLER_PACKAGE


@pytest.fixture
def pipeline_env(fresh_dir: Path, postgres: DatabaseInfo, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private data dir, config file and DAGSTER_HOME (with the project's dagster.yaml) on the
    session's PostgreSQL, in a database of its own so runs of different tests don't mix."""
    import psycopg

    database = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.libpq_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = postgres.url.replace("/postgres?", f"/{database}?")
    home = fresh_dir / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ICON_PIPELINE_DATA", str(fresh_dir / "data"))
    monkeypatch.setenv("ICON_PIPELINE_CONFIG", str(fresh_dir / "icon_pipeline.yaml"))
    monkeypatch.setenv("ICON_PIPELINE_DATABASE_URL", url)
    # The Tabler package is shared read-only: link it instead of fetching it per test.
    if (TABLER_PACKAGE / "icons.json").exists():
        target = fresh_dir / "data" / "sources" / "tabler" / "3.51.0"
        target.mkdir(parents=True)
        (target / "package").symlink_to(TABLER_PACKAGE)
    return fresh_dir
