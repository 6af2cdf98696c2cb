"""The health of in-process runs: a watch on Dagster's database while a stage runs (one clear line
when it stops answering) and the runs a killed process left STARTED, marked failed."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)

from icon_pipeline.core.database import DatabaseError, describe_url
from icon_pipeline.core.paths import ENV_DAGSTER_STORAGE_URL

# Which process runs a run in-process: a run whose process is gone without an end is failed later.
PID_TAG, HOST_TAG = "icon_pipeline/pid", "icon_pipeline/host"
UNFINISHED = (DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED)


class DatabaseLost(DatabaseError):
    """The database stopped answering in the middle of a run; the message says what now."""


def database_error(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is the database connection failing."""
    seen: BaseException | None = error
    for _ in range(12):
        if seen is None:
            return False
        if type(seen).__name__ in ("OperationalError", "InterfaceError") and (
            type(seen).__module__.split(".")[0] in ("psycopg", "psycopg2", "sqlalchemy")
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def lost_message(label: str) -> str:
    url = os.environ.get(ENV_DAGSTER_STORAGE_URL)
    where = f" ({describe_url(url)})" if url else ""
    return (
        f"the database{where} stopped answering during {label}; the run could not record its "
        "end and will be marked failed the next time icon-pipeline starts (data already stored "
        "is unchanged: index writes are swapped in whole or not at all)"
    )


# A server that refuses this many connections in a row, a second apart, is gone: Dagster itself
# would retry every event write with backoff for about 12 s each, a minute and more per run.
WATCH_INTERVAL_S, WATCH_MISSES = 1.0, 3


@contextmanager
def database_watch(label: str, on_loss: Callable[[str], None] | None) -> Iterator[None]:
    """While a stage runs, connect to Dagster's database every second; after WATCH_MISSES refusals
    in a row call `on_loss(message)` (the CLI prints one line and exits). No-op without `on_loss`."""
    url = os.environ.get(ENV_DAGSTER_STORAGE_URL)
    if on_loss is None or not url:
        yield
        return
    import psycopg

    from icon_pipeline.core.database import to_libpq_url

    done = threading.Event()

    def watch() -> None:
        misses = 0
        while not done.wait(WATCH_INTERVAL_S):
            try:
                psycopg.connect(to_libpq_url(url), connect_timeout=5).close()
                misses = 0
            except psycopg.OperationalError as exc:
                # A full server ("too many clients") is busy, not lost.
                misses = 0 if "too many" in str(exc) else misses + 1
            if misses >= WATCH_MISSES:
                on_loss(lost_message(label))
                return

    watcher = threading.Thread(target=watch, name="database-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()


def fail_abandoned_runs(instance: DagsterInstance) -> list[str]:
    """Mark failed the runs this machine started in-process whose process is gone without an end
    (killed, or its database stopped under it): they would otherwise show STARTED forever."""
    import psutil

    host = socket.gethostname()
    failed = []
    for run in instance.get_runs(filters=RunsFilter(statuses=list(UNFINISHED))):
        pid = run.tags.get(PID_TAG)
        if run.tags.get(HOST_TAG) != host or not pid or not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        instance.report_run_failed(
            run,
            f"the process running it (pid {pid}) ended without recording an end: it was killed, or its "
            "database stopped answering",
        )
        failed.append(run.run_id)
    return failed
