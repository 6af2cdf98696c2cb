"""Where things live: repo root, data root, Dagster home, config file.

Every location can be moved with an environment variable (documented in the README); nothing
here imports Dagster so domain code and the CLI can use it cheaply.
"""

from __future__ import annotations

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
    dagster_home = Path(os.environ.get("DAGSTER_HOME", REPO_ROOT / "dagster_home")).resolve()
    return Paths(
        repo_root=REPO_ROOT,
        config_file=Path(os.environ.get(ENV_CONFIG, REPO_ROOT / "icon_pipeline.yaml")).resolve(),
        data_dir=Path(os.environ.get(ENV_DATA, REPO_ROOT / "data")).resolve(),
        dagster_home=dagster_home,
        pgdata=Path(os.environ.get(ENV_PGDATA, REPO_ROOT / "dagster_home" / "pgdata")).resolve(),
    )
