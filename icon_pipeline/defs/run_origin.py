"""Where the runner's runs come from, as the webserver knows it: the code location that `icon-pipeline
ui` and workspace.yaml serve. A run recorded with this origin is listed under its job and on the
Overview timeline; one without (as `execute_in_process` makes) shows under no job. Uses Dagster's
internal run API (execute_run, run origins), which a Dagster upgrade may move."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from dagster import AssetKey, DagsterInstance, Definitions, JobDefinition
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from icon_pipeline.core.paths import REPO_ROOT
from icon_pipeline.defs.run_health import HOST_TAG, PID_TAG

# The code location `icon-pipeline ui` and workspace.yaml serve: the module and its Definitions.
LOCATION_NAME = "icon_pipeline"
DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE = "icon_pipeline.definitions", "defs"
# Runs go in this process (as execute_in_process did), not one process per step.
IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}


@dataclass(frozen=True)
class CodeLocation:
    """Where a run's code comes from, as the webserver knows it: the UI lists a job's runs and draws
    the Overview timeline from runs whose origin names this location and repository (a run without
    one, as `execute_in_process` makes, shows under no job)."""

    repository: ReconstructableRepository
    origin: RemoteRepositoryOrigin

    def job(self, name: str) -> ReconstructableJob:
        return self.repository.get_reconstructable_job(name)

    def job_origin(self, name: str) -> RemoteJobOrigin:
        return self.origin.get_job_origin(name)


def code_location(defs: Definitions) -> CodeLocation:
    """The served code location of `defs`, which must be icon_pipeline.definitions.defs (the one
    Definitions the webserver loads; any other would give runs an origin the UI cannot show)."""
    # Looked up, not imported: definitions sits above this layer (it imports defs).
    if getattr(sys.modules.get(DEFINITIONS_MODULE), DEFINITIONS_ATTRIBUTE, None) is not defs:
        raise ValueError(f"materialize_assets runs {DEFINITIONS_MODULE}.{DEFINITIONS_ATTRIBUTE} only")
    target = LoadableTargetOrigin(
        executable_path=sys.executable,
        module_name=DEFINITIONS_MODULE,
        working_directory=str(REPO_ROOT),
    )
    repository = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE, working_directory=str(REPO_ROOT)
    )
    origin = RemoteRepositoryOrigin(
        ManagedGrpcPythonEnvCodeLocationOrigin(target, LOCATION_NAME), defs.get_repository_def().name
    )
    return CodeLocation(repository, origin)


def execute_in_location(
    location: CodeLocation,
    job: JobDefinition,
    assets: list[AssetKey],
    partition: str | None,
    run_config: dict[str, Any],
    instance: DagsterInstance,
) -> Any:
    """One run of `job` for `assets` (and `partition`), in this process, recorded with the served
    code location's origin."""
    tags = {
        **job.run_tags,
        PID_TAG: str(os.getpid()),
        HOST_TAG: socket.gethostname(),
        **({PARTITION_NAME_TAG: partition} if partition is not None else {}),
    }
    recon_job = location.job(job.name)
    run = instance.create_run_for_job(
        job_def=job,
        run_config=run_config,
        tags=tags,
        asset_selection=frozenset(assets),
        remote_job_origin=location.job_origin(job.name),
        job_code_origin=recon_job.get_python_origin(),
    )
    return execute_run(recon_job, run, instance, raise_on_error=False)
