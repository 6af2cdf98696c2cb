"""Frozen files (the eval set, the benchmark queries) against what Dagster recorded when each was
first written: shared by the dataset assets that freeze them and the training that reads them."""

from pathlib import Path

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    DagsterInstance,
    Failure,
)

from icon_pipeline.core.config import load_config
from icon_pipeline.core.frozen import verify_frozen
from icon_pipeline.core.storage import frozen_file, same_location
from icon_pipeline.model.training.data import sha256_file


def first_recorded_sha256(instance: DagsterInstance, asset: str, path: Path) -> str | None:
    """The sha256 Dagster recorded when this frozen file (this library and version) was first
    written: the sidecar beside the file can be regenerated after an edit, the event log cannot."""
    records = instance.fetch_materializations(AssetKey(asset), limit=10_000, ascending=True).records
    for record in records:
        materialization = record.asset_materialization
        metadata = materialization.metadata if materialization else {}
        recorded_path = metadata.get("path")
        # The recorded path may be from before the data root moved: compare where it points.
        if recorded_path is not None and same_location(str(recorded_path.value), path):
            sha = metadata.get("sha256")
            return str(sha.value) if sha is not None else None
    return None


def check_frozen(instance: DagsterInstance, asset: str, path: Path) -> tuple[bool, str]:
    """verify_frozen (file against its sidecar), then the file against the hash Dagster recorded."""
    ok, message = verify_frozen(path)
    if not ok:
        return ok, message
    recorded = first_recorded_sha256(instance, asset, path)
    actual = sha256_file(path)
    if recorded is not None and recorded != actual:
        return False, (
            f"{path.name}: content differs from what {asset} recorded when it was first written "
            f"(recorded sha256 {recorded}, now {actual}); restore the file or freeze a new version "
            "(raise its version in icon_pipeline.yaml)"
        )
    return True, message


def refuse_changed(context: AssetExecutionContext, asset: str, path: Path) -> None:
    ok, message = check_frozen(context.instance, asset, path)
    if not ok:
        raise Failure(description=message)


def frozen_hash_check(context: AssetCheckExecutionContext, asset: str, name: str) -> AssetCheckResult:
    config = load_config()
    path = frozen_file(name, config)
    ok, message = check_frozen(context.instance, asset, path)
    return AssetCheckResult(passed=ok, description=message, metadata={"path": str(path)})
