"""Where things live: repo root, data root, Dagster home, config file.

Every location can be moved with an environment variable (documented in the README); nothing
here imports Dagster so domain code and the CLI can use it cheaply.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

ENV_CONFIG = "ICON_PIPELINE_CONFIG"
ENV_DATA = "ICON_PIPELINE_DATA"
ENV_DATABASE_URL = "ICON_PIPELINE_DATABASE_URL"
ENV_PGDATA = "ICON_PIPELINE_PGDATA"
ENV_DAGSTER_STORAGE_URL = "ICON_PIPELINE_DAGSTER_STORAGE_URL"
ENV_DAGSTER_ARTIFACTS = "ICON_PIPELINE_DAGSTER_ARTIFACTS"


@dataclass(frozen=True)
class Paths:
    """Resolved locations for one process; read from the environment at call time."""

    repo_root: Path
    config_file: Path
    data_dir: Path
    dagster_home: Path
    pgdata: Path

    @property
    def sources_dir(self) -> Path:
        return self.data_dir / "sources"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"


def get_paths() -> Paths:
    settings = tuple(os.environ.get(name) for name in ("DAGSTER_HOME", ENV_CONFIG, ENV_DATA, ENV_PGDATA))
    return _resolved_paths(settings, os.getcwd())


@functools.lru_cache(maxsize=64)
def _resolved_paths(settings: tuple[str | None, ...], cwd: str) -> Paths:
    """get_paths() for one set of environment values and working directory: resolving costs four
    realpath walks, and a search server asks for the paths several times per request."""
    dagster_home, config_file, data_dir, pgdata = settings
    return Paths(
        repo_root=REPO_ROOT,
        config_file=Path(config_file or REPO_ROOT / "icon_pipeline.yaml").resolve(),
        data_dir=Path(data_dir or REPO_ROOT / "data").resolve(),
        dagster_home=Path(dagster_home or REPO_ROOT / "dagster_home").resolve(),
        pgdata=Path(pgdata or REPO_ROOT / "dagster_home" / "pgdata").resolve(),
    )
