"""Materialize the asset graph in dependency order on a real Dagster instance.

Unpartitioned stages run once; partitioned stages run once per `icon_batches` partition. This is
what `icon-pipeline demo` and `icon-pipeline materialize` call; runs land in the instance's
PostgreSQL storage exactly as UI-launched runs do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetKey, DagsterInstance, Definitions, validate_run_config
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph

from icon_pipeline.automation.partitions import icon_batches


@dataclass
class StageRun:
    assets: list[str]
    partition: str | None
    run_id: str
    success: bool
    seconds: float


@dataclass
class RunSummary:
    runs: list[StageRun] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(r.success for r in self.runs)


def _stages(graph: AssetGraph, keys: set[AssetKey]) -> list[tuple[list[AssetKey], bool]]:
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


def materialize_assets(
    defs: Definitions,
    instance: DagsterInstance,
    selection: Iterable[str] | None = None,
    partitions: list[str] | None = None,
    log: Callable[[str], None] = print,
    run_config: dict[str, Any] | None = None,
) -> RunSummary:
    """Materialize `selection` (asset key strings; all assets if None) stage by stage.

    `run_config` is Dagster run config as the launchpad takes it, e.g. resource config
    `{"resources": {"torchrun": {"config": {"nproc_per_node": 8}}}}`; it applies to every stage.
    """
    graph = defs.resolve_asset_graph()
    all_keys = {k for k in graph.materializable_asset_keys}
    if selection is None:
        keys = all_keys
    else:
        keys = {AssetKey.from_user_string(s) for s in selection}
        unknown = keys - all_keys
        if unknown:
            names = ", ".join(sorted(k.to_user_string() for k in all_keys))
            raise ValueError(
                f"unknown asset(s): {', '.join(sorted(k.to_user_string() for k in unknown))}; known: {names}"
            )
    job = defs.resolve_implicit_global_asset_job_def()
    run_config = {**TERMINAL_LOGGING, **(run_config or {})}
    # Against the whole job, before any stage: a stage's subset ignores config for resources it
    # does not use, so a misspelt `torchrun` field would otherwise pass unnoticed.
    validate_run_config(job, run_config)
    summary = RunSummary()
    for stage, partitioned in _stages(graph, keys):
        names = [k.to_user_string() for k in stage]
        keys_for_stage = partitions if partitioned and partitions else None
        if partitioned and keys_for_stage is None:
            keys_for_stage = instance.get_dynamic_partitions(icon_batches.name)
            if not keys_for_stage:
                log(f"no icon batches registered yet; skipping {', '.join(names)}")
                continue
        for partition in keys_for_stage if partitioned else [None]:
            label = f"{', '.join(names)}" + (f" [batch {partition}]" if partition else "")
            log(f"materializing {label}")
            started = time.monotonic()
            result = job.execute_in_process(
                instance=instance,
                asset_selection=stage,
                partition_key=partition,
                raise_on_error=False,
                run_config=run_config,
            )
            elapsed = time.monotonic() - started
            summary.runs.append(StageRun(names, partition, result.run_id, result.success, elapsed))
            status = "ok" if result.success else "FAILED"
            log(f"  {status} in {elapsed:.1f}s (run {result.run_id[:8]})")
            if not result.success:
                return summary
    return summary
