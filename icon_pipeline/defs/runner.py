"""Materialize the asset graph in dependency order on a real Dagster instance.

Unpartitioned stages run once; partitioned stages run once per `icon_batches` partition. This is
what `icon-pipeline demo` and `icon-pipeline materialize` call; runs land in the instance's
PostgreSQL storage exactly as UI-launched runs do, with the origin of the code location that
`icon-pipeline ui` serves, so the UI lists them under their jobs and on the Overview timeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterInvalidConfigError,
    Definitions,
    JobDefinition,
    validate_run_config,
)

from icon_pipeline.defs.partitions import corpus_sets, icon_batches
from icon_pipeline.defs.run_health import (
    DatabaseLost,
    database_error,
    database_watch,
    fail_abandoned_runs,
    lost_message,
)
from icon_pipeline.defs.run_origin import IN_PROCESS, code_location, execute_in_location


@dataclass(frozen=True)
class FailedCheck:
    """An asset check that did not pass, in words a person reads in the terminal."""

    asset: str
    check: str
    severity: str  # ERROR or WARN
    partition: str | None
    description: str

    def line(self) -> str:
        where = f" [batch {self.partition}]" if self.partition else ""
        # Per-batch checks name their batch in the description (for the UI); said once here.
        description = (
            self.description.removeprefix(f"batch {self.partition}: ") if self.partition else self.description
        )
        return f"{self.severity:5} {self.asset}.{self.check}{where}: {description}"


@dataclass
class StageRun:
    assets: list[str]
    partition: str | None
    run_id: str
    success: bool
    seconds: float
    failed_checks: list[FailedCheck] = field(default_factory=list)


@dataclass
class RunSummary:
    runs: list[StageRun] = field(default_factory=list)

    @property
    def success(self) -> bool:
        """Every run succeeded (checks aside: see `failed_checks`)."""
        return all(r.success for r in self.runs)

    @property
    def failed_checks(self) -> list[FailedCheck]:
        return [check for run in self.runs for check in run.failed_checks]

    @property
    def error_checks(self) -> list[FailedCheck]:
        """Failed checks of ERROR severity: the data they guard is not fit to use."""
        return [check for check in self.failed_checks if check.severity == "ERROR"]


def _stages(graph: Any, keys: set[AssetKey]) -> list[tuple[list[AssetKey], bool]]:
    """Group `keys` into runnable stages: (assets, partitioned) in dependency order."""
    done: set[AssetKey] = set()
    stages: list[tuple[list[AssetKey], bool]] = []

    def ready(key: AssetKey, also: set[AssetKey]) -> bool:
        parents = {p for p in graph.get(key).parent_keys if p in keys}
        return parents <= done | also

    remaining = set(keys)
    while remaining:
        unpartitioned = {k for k in remaining if not graph.get(k).is_partitioned and ready(k, set())}
        if unpartitioned:
            stage = set(unpartitioned)
        else:
            stage = {k for k in remaining if graph.get(k).is_partitioned and ready(k, set())}
            if not stage:
                raise RuntimeError(f"cannot order assets: {sorted(k.to_user_string() for k in remaining)}")
        # Pull in every asset of the same kind whose parents are done or in this stage.
        grown = True
        partitioned = graph.get(next(iter(stage))).is_partitioned
        while grown:
            extra = {
                k for k in remaining - stage if graph.get(k).is_partitioned == partitioned and ready(k, stage)
            }
            grown = bool(extra)
            stage |= extra
        stages.append((sorted(stage, key=lambda k: k.to_user_string()), partitioned))
        done |= stage
        remaining -= stage
    return stages


# The terminal shows progress and warnings; every DEBUG event is still in the run's log.
TERMINAL_LOGGING: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


class RunConfigError(ValueError):
    """Run config (as the launchpad takes it) that does not fit the job; Dagster's words say why."""


def open_instance() -> tuple[DagsterInstance, list[str]]:
    """The Dagster instance of DAGSTER_HOME, and the ids of abandoned runs it just marked failed."""
    instance = DagsterInstance.get()
    return instance, fail_abandoned_runs(instance)


def _named_jobs(defs: Definitions) -> list[tuple[JobDefinition, set[AssetKey]]]:
    """The Definitions' own asset jobs (ingest_job, train_job, index_job) with their assets."""
    jobs = []
    for job in defs.get_repository_def().get_all_jobs():
        if job.name.startswith("__") or not job.asset_layer:
            continue  # the implicit global job, and the anonymous jobs of schedules and sensors
        keys = set(job.asset_layer.executable_asset_keys)
        if keys:
            jobs.append((job, keys))
    return jobs


def _split_by_job(
    graph: Any,
    stage: list[AssetKey],
    named_jobs: list[tuple[JobDefinition, set[AssetKey]]],
    fallback: JobDefinition,
) -> list[tuple[list[AssetKey], JobDefinition]]:
    """`stage` as runs of the named jobs holding its assets (so each run is listed under its job in
    the UI), in dependency order; assets no named job holds run in the implicit asset job."""
    parts: dict[str, tuple[list[AssetKey], JobDefinition]] = {}
    for key in stage:
        job = next((job for job, keys in named_jobs if key in keys), fallback)
        parts.setdefault(job.name, ([], job))[0].append(key)
    ordered: list[tuple[list[AssetKey], JobDefinition]] = []
    done: set[AssetKey] = set()
    pending = list(parts.values())
    while pending:
        for part in pending:
            others = set(stage) - done - set(part[0])
            if not any(p in others for key in part[0] for p in graph.get(key).parent_keys):
                break
        else:  # a cycle between jobs: run the stage as one run of the implicit job
            return [(stage, fallback)]
        pending.remove(part)
        ordered.append(part)
        done |= set(part[0])
    return ordered


PARTIAL_OK_TAG = "icon_pipeline/partial_ok"


def partition_keys(
    partitions_def: Any, instance: DagsterInstance, requested: list[str] | None = None
) -> list[str]:
    """The partitions a stage runs: `requested` when given (those the asset has), else every icon
    batch registered, or the open icon sets `corpus.sets` configures."""
    from icon_pipeline.core.config import load_config

    if partitions_def is None:
        return []
    if partitions_def == icon_batches:
        known = instance.get_dynamic_partitions(icon_batches.name)
    elif partitions_def == corpus_sets:
        configured = load_config().corpus.sets
        known = [key for key in corpus_sets.get_partition_keys() if key in configured]
        if requested:
            known = corpus_sets.get_partition_keys()
    else:
        known = list(partitions_def.get_partition_keys(dynamic_partitions_store=instance))
    return [key for key in requested if key in known] if requested else known


def selected_keys(defs: Definitions, selection: Iterable[str] | None) -> set[AssetKey]:
    """The asset keys of `selection` (every materializable asset if None); ValueError naming the
    unknown ones and listing the known ones."""
    all_keys = set(defs.resolve_asset_graph().materializable_asset_keys)
    if selection is None:
        return all_keys
    keys = {AssetKey.from_user_string(s) for s in selection}
    unknown = keys - all_keys
    if unknown:
        names = ", ".join(sorted(k.to_user_string() for k in all_keys))
        raise ValueError(
            f"unknown asset(s): {', '.join(sorted(k.to_user_string() for k in unknown))}; known: {names}"
        )
    return keys


def checked_run_config(defs: Definitions, run_config: dict[str, Any] | None) -> dict[str, Any]:
    """`run_config` with the terminal logging added, checked against the whole asset job (a stage's
    subset ignores config for resources it does not use, so a misspelt `torchrun` field would
    otherwise pass unnoticed); RunConfigError with Dagster's words otherwise. The CLI calls it before
    it fetches or starts anything."""
    run_config = {**TERMINAL_LOGGING, **(run_config or {})}
    try:
        validate_run_config(defs.resolve_implicit_global_asset_job_def(), run_config)
    except DagsterInvalidConfigError as exc:
        raise RunConfigError(str(exc)) from None
    return run_config


def materialize_assets(
    defs: Definitions,
    instance: DagsterInstance,
    selection: Iterable[str] | None = None,
    partitions: list[str] | None = None,
    log: Callable[[str], None] = print,
    run_config: dict[str, Any] | None = None,
    on_database_loss: Callable[[str], None] | None = None,
) -> RunSummary:
    """Materialize `selection` (asset key strings; all assets if None) stage by stage.

    `run_config` is Dagster run config as the launchpad takes it, e.g. resource config
    `{"resources": {"torchrun": {"config": {"nproc_per_node": 8}}}}`; it applies to every stage.
    `on_database_loss(message)`: called from a watcher thread as soon as Dagster's database stops
    answering mid-run (the CLI prints the message and exits, rather than wait out Dagster's retries).
    """
    graph = defs.resolve_asset_graph()
    keys = selected_keys(defs, selection)
    job = defs.resolve_implicit_global_asset_job_def()
    named_jobs = _named_jobs(defs)
    run_config = {**IN_PROCESS, **checked_run_config(defs, run_config)}
    location = code_location(defs)
    summary = RunSummary()
    runs = [
        (part, job_for_part, partitioned)
        for stage, partitioned in _stages(graph, keys)
        for part, job_for_part in _split_by_job(graph, stage, named_jobs, job)
    ]
    for stage, stage_job, partitioned in runs:
        names = [k.to_user_string() for k in stage]
        keys_for_stage = None
        if partitioned:
            keys_for_stage = partition_keys(graph.get(stage[0]).partitions_def, instance, partitions)
            if not keys_for_stage:
                log(f"no partitions to run (none registered or configured); skipping {', '.join(names)}")
                continue
        # A stage whose assets say so (icon_corpus: one open icon set each) goes on past a failed
        # partition: later stages use the partitions that succeeded.
        partial_ok = all(graph.get(k).tags.get(PARTIAL_OK_TAG) == "true" for k in stage)
        for partition in keys_for_stage if partitioned else [None]:
            unit = "batch" if graph.get(stage[0]).partitions_def == icon_batches else "partition"
            label = f"{', '.join(names)}" + (f" [{unit} {partition}]" if partition else "")
            log(
                f"materializing {label}" + ("" if stage_job.name.startswith("__") else f" ({stage_job.name})")
            )
            started = time.monotonic()
            try:
                with database_watch(label, on_database_loss):
                    result = execute_in_location(location, stage_job, stage, partition, run_config, instance)
            except Exception as exc:
                if not database_error(exc):
                    raise
                raise DatabaseLost(lost_message(label)) from None
            elapsed = time.monotonic() - started
            failed = [
                FailedCheck(
                    evaluation.asset_key.to_user_string(),
                    evaluation.check_name,
                    evaluation.severity.value,
                    partition,
                    evaluation.description or "failed",
                )
                for evaluation in result.get_asset_check_evaluations()
                if not evaluation.passed
            ]
            summary.runs.append(StageRun(names, partition, result.run_id, result.success, elapsed, failed))
            status = "ok" if result.success else "FAILED"
            checks = f", {len(failed)} check(s) failed" if failed else ""
            log(f"  {status} in {elapsed:.1f}s (run {result.run_id[:8]}){checks}")
            if not result.success and partial_ok:
                log(f"  {label} failed: the pipeline goes on without it")
            elif not result.success:
                return summary
    return summary
