"""Human caption decisions, stored durably in PostgreSQL and honoured by the next `icon_captions` run.

One row per icon in `caption_overrides` (icon_id, phrases, status, author, updated_at, revision),
plus an append-only `caption_override_history` so no decision is ever erased, not even an
overwritten one. Statuses:

- `approved`: a reviewer accepted the phrases they saw; they are kept even if the captioner later
  writes different ones (an override always wins over a generated caption).
- `edited`: a reviewer wrote the phrases.
- `rejected`: the icon is left out of training (its row stays in the captions table, flagged).

Concurrency is optimistic: every save names the revision the reviewer started from (0 for an
icon nobody has reviewed yet). If someone saved in between, the save is refused with a
ConflictError that says who changed it, when and to what, so the app can ask instead of letting
the last write silently erase the other. A database that is down raises StoreUnavailable, and
the app keeps the unsaved edit in a local journal (`PendingEdits`) until it can be saved.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg

from icon_pipeline.captions.validation import normalise_phrases, validate_phrases
from icon_pipeline.core.database import describe_url, to_libpq_url

Status = Literal["approved", "edited", "rejected"]
STATUSES: tuple[str, ...] = ("approved", "edited", "rejected")
TABLE = "caption_overrides"
HISTORY_TABLE = "caption_override_history"
MAX_AUTHOR_CHARS = 100
CONNECT_TIMEOUT_S = 5
# Concurrent CREATE TABLE IF NOT EXISTS can still collide in pg_type: serialise it.
_SCHEMA_LOCK_KEY = 0x1C0_0E7E_5C4E_3A11

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    icon_id text PRIMARY KEY,
    phrases text[] NOT NULL,
    status text NOT NULL CHECK (status IN ('approved', 'edited', 'rejected')),
    author text NOT NULL CHECK (author <> ''),
    updated_at timestamptz NOT NULL DEFAULT now(),
    revision integer NOT NULL CHECK (revision >= 1)
);
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    id bigserial PRIMARY KEY,
    icon_id text NOT NULL,
    revision integer NOT NULL,
    phrases text[] NOT NULL,
    status text NOT NULL,
    author text NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (icon_id, revision)
);
"""


class OverrideError(RuntimeError):
    """An override that cannot be stored or read; the message is meant for the reviewer."""


class InvalidOverride(OverrideError, ValueError):
    """Phrases, status or author that the pipeline cannot use; nothing was stored."""


class StoreUnavailable(OverrideError):
    """PostgreSQL cannot be reached; nothing was stored. Never contains a password."""


@dataclass(frozen=True)
class CaptionOverride:
    icon_id: str
    phrases: list[str]
    status: str
    author: str
    updated_at: datetime
    revision: int

    @property
    def rejected(self) -> bool:
        return self.status == "rejected"

    def describe(self) -> str:
        """'edited by ana at 2026-11-23 14:02 UTC (revision 3)'."""
        when = self.updated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.status} by {self.author} at {when} (revision {self.revision})"


class ConflictError(OverrideError):
    """Someone saved this icon after the revision the caller started from: ask before overwriting."""

    def __init__(self, icon_id: str, expected_revision: int, current: CaptionOverride) -> None:
        self.icon_id = icon_id
        self.expected_revision = expected_revision
        self.current = current
        theirs = ", ".join(current.phrases) or "(no phrases)"
        super().__init__(
            f"{icon_id}: not saved, the caption changed since you opened it (you started from revision "
            f"{expected_revision}): {current.describe()}, phrases: {theirs}. "
            f"Reload to see theirs, or save again on top of revision {current.revision} to replace it."
        )


@dataclass
class BulkApproval:
    """What `OverrideStore.approve_many` did, icon by icon."""

    saved: list[CaptionOverride]
    refused: list[tuple[str, str]]  # (icon_id, why): invalid, or decided by someone meanwhile
    unsaved: list[str]  # not stored: the database went away (see `stopped`)
    stopped: str | None = None


def clean_phrases(phrases: Iterable[object] | str) -> list[str]:
    """Normalised phrases from a list or from text with one phrase per line (or comma separated)."""
    if isinstance(phrases, str):
        parts = [p for line in phrases.splitlines() for p in line.split(",")]
    else:
        parts = list(phrases)
    return normalise_phrases(parts)


def validate_override(icon_id: str, phrases: Sequence[str], status: str, author: str) -> None:
    """InvalidOverride naming the icon and every problem; the same caption rules as the captioner."""
    if not icon_id or not icon_id.strip():
        raise InvalidOverride("no icon selected")
    if status not in STATUSES:
        raise InvalidOverride(f"{icon_id}: unknown status {status!r}; allowed: {', '.join(STATUSES)}")
    if not author or not author.strip():
        raise InvalidOverride(f"{icon_id}: say who you are (author is empty)")
    if len(author) > MAX_AUTHOR_CHARS:
        raise InvalidOverride(f"{icon_id}: author is {len(author)} characters; at most {MAX_AUTHOR_CHARS}")
    if status == "rejected":
        return  # a rejected icon leaves training whatever its phrases are
    problems = validate_phrases(list(phrases))
    if problems:
        raise InvalidOverride(f"{icon_id}: not saved: " + "; ".join(problems))


def _row(record: Sequence[Any]) -> CaptionOverride:
    icon_id, phrases, status, author, updated_at, revision = record
    return CaptionOverride(icon_id, list(phrases or []), status, author, updated_at, int(revision))


_COLUMNS = "icon_id, phrases, status, author, updated_at, revision"


class OverrideStore:
    """The override table on one PostgreSQL database; one short connection per call, so an app
    outlives a database restart."""

    def __init__(self, url: str, connect_timeout: int = CONNECT_TIMEOUT_S) -> None:
        self._url = to_libpq_url(url)
        self._connect_timeout = connect_timeout
        self._schema_ready = False

    @property
    def where(self) -> str:
        return describe_url(self._url)

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self._url, connect_timeout=self._connect_timeout, autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(self._unavailable(exc)) from None
        if not self._schema_ready:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                    conn.execute(_SCHEMA)
            except psycopg.OperationalError as exc:
                conn.close()
                raise StoreUnavailable(self._unavailable(exc)) from None
            self._schema_ready = True
        return conn

    def _unavailable(self, exc: BaseException) -> str:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.replace(self._url, "<url>")
        return f"caption overrides: cannot reach PostgreSQL at {self.where} ({reason})"

    def _run(self, work):
        """Run `work(conn)`; a connection lost half-way is StoreUnavailable (nothing committed)."""
        conn = self._connect()
        try:
            return work(conn)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(self._unavailable(exc)) from None
        finally:
            conn.close()

    def ensure_schema(self) -> None:
        self._run(lambda conn: None)

    def save(
        self,
        icon_id: str,
        phrases: Iterable[object] | str,
        status: str,
        author: str,
        expected_revision: int,
    ) -> CaptionOverride:
        """Store a decision made from `expected_revision` (0: the icon had no override yet).

        Returns the stored override (revision + 1). Raises InvalidOverride, ConflictError if the
        revision moved (nothing is stored), or StoreUnavailable.
        """
        cleaned = clean_phrases(phrases)
        author = " ".join(str(author or "").split())
        validate_override(icon_id, cleaned, status, author)
        if expected_revision < 0:
            raise InvalidOverride(f"{icon_id}: expected_revision must be >= 0, got {expected_revision}")

        def work(conn: psycopg.Connection) -> CaptionOverride:
            with conn.transaction():
                if expected_revision == 0:
                    row = conn.execute(
                        f"INSERT INTO {TABLE} (icon_id, phrases, status, author, revision) "
                        f"VALUES (%s, %s, %s, %s, 1) ON CONFLICT (icon_id) DO NOTHING RETURNING {_COLUMNS}",
                        (icon_id, cleaned, status, author),
                    ).fetchone()
                else:
                    # The revision check and the write are one statement: two savers of the same
                    # revision cannot both succeed.
                    row = conn.execute(
                        f"UPDATE {TABLE} SET phrases = %s, status = %s, author = %s, updated_at = now(), "
                        f"revision = revision + 1 WHERE icon_id = %s AND revision = %s RETURNING {_COLUMNS}",
                        (cleaned, status, author, icon_id, expected_revision),
                    ).fetchone()
                if row is None:
                    current = conn.execute(
                        f"SELECT {_COLUMNS} FROM {TABLE} WHERE icon_id = %s", (icon_id,)
                    ).fetchone()
                    if current is None:
                        raise InvalidOverride(
                            f"{icon_id}: revision {expected_revision} does not exist (the icon has no "
                            "override yet): reload and save again"
                        )
                    raise ConflictError(icon_id, expected_revision, _row(current))
                saved = _row(row)
                conn.execute(
                    f"INSERT INTO {HISTORY_TABLE} (icon_id, revision, phrases, status, author, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        saved.icon_id,
                        saved.revision,
                        saved.phrases,
                        saved.status,
                        saved.author,
                        saved.updated_at,
                    ),
                )
            return saved

        return self._run(work)

    def approve_many(self, phrases_by_icon: Mapping[str, Sequence[str]], author: str) -> BulkApproval:
        """Approve each icon's phrases as its first decision (revision 0), each icon its own save:
        an invalid icon, or one someone decided meanwhile, is refused with the reason and the
        others are stored. A database that goes away stops it; the icons not stored yet are
        returned in `unsaved` so the caller can queue them.
        """
        result = BulkApproval(saved=[], refused=[], unsaved=[])
        pending = list(phrases_by_icon)
        while pending:
            icon_id = pending[0]
            try:
                result.saved.append(self.save(icon_id, phrases_by_icon[icon_id], "approved", author, 0))
            except StoreUnavailable as exc:
                result.unsaved = pending
                result.stopped = str(exc)
                break
            except OverrideError as exc:
                result.refused.append((icon_id, str(exc)))
            pending.pop(0)
        return result

    def get(self, icon_id: str) -> CaptionOverride | None:
        return self.load_for([icon_id]).get(icon_id)

    def load_for(self, icon_ids: Iterable[str]) -> dict[str, CaptionOverride]:
        """icon_id -> override for the given icons that have one."""
        ids = sorted(set(icon_ids))
        if not ids:
            return {}

        def work(conn: psycopg.Connection) -> dict[str, CaptionOverride]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE icon_id = ANY(%s)", (ids,), prepare=False
            ).fetchall()
            return {r[0]: _row(r) for r in rows}

        return self._run(work)

    def load_all(self) -> dict[str, CaptionOverride]:
        def work(conn: psycopg.Connection) -> dict[str, CaptionOverride]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM {TABLE}").fetchall()
            return {r[0]: _row(r) for r in rows}

        return self._run(work)

    def history(self, icon_id: str) -> list[CaptionOverride]:
        """Every revision ever saved for the icon, oldest first."""

        def work(conn: psycopg.Connection) -> list[CaptionOverride]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM {HISTORY_TABLE} WHERE icon_id = %s ORDER BY revision", (icon_id,)
            ).fetchall()
            return [_row(r) for r in rows]

        return self._run(work)


# --- applying overrides to generated captions ------------------------------------------------


@dataclass(frozen=True)
class AppliedCounts:
    approved: int = 0
    edited: int = 0
    rejected: int = 0

    @property
    def total(self) -> int:
        return self.approved + self.edited + self.rejected


def apply_overrides(
    rows: Sequence[Mapping[str, Any]], overrides: Mapping[str, CaptionOverride]
) -> tuple[list[dict[str, Any]], AppliedCounts]:
    """Caption rows (icon_id, phrases, error, ...) with human decisions applied.

    Adds `generated_phrases` (what the captioner wrote), `override` (status or ""),
    `override_author`, `override_revision` and `rejected`. Approved and edited phrases replace the
    generated ones and clear a generation error (a person wrote them); a rejected icon keeps its
    row and phrases but is flagged, so training leaves it out.
    """
    counts = {"approved": 0, "edited": 0, "rejected": 0}
    out = []
    for row in rows:
        merged = dict(row)
        merged["generated_phrases"] = list(row.get("phrases") or [])
        override = overrides.get(str(row["icon_id"]))
        merged["override"] = override.status if override else ""
        merged["override_author"] = override.author if override else ""
        merged["override_revision"] = override.revision if override else 0
        merged["rejected"] = bool(override and override.rejected)
        if override:
            counts[override.status] += 1
            if not override.rejected:
                merged["phrases"] = list(override.phrases)
                merged["error"] = ""
        out.append(merged)
    return out, AppliedCounts(**counts)


# --- edits that could not be saved yet ---------------------------------------------------------


@dataclass(frozen=True)
class PendingEdit:
    icon_id: str
    phrases: list[str]
    status: str
    author: str
    expected_revision: int
    queued_at: str
    reason: str


@dataclass
class ReplayResult:
    saved: list[CaptionOverride]
    set_aside: list[tuple[PendingEdit, str]]  # conflicting or invalid: kept in set_aside_path, with why
    stopped: str | None = None  # the database went away again: the rest stays queued


class PendingEdits:
    """A local JSONL journal of edits that could not reach the database, so none is lost.

    Replaying goes through `OverrideStore.save` with the revision the reviewer started from, so a
    queued edit still cannot silently erase someone else's later one. An exclusive file lock
    keeps app threads and processes sharing the journal from interleaving.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def set_aside_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".set_aside.jsonl")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_name(self.path.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[PendingEdit]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [PendingEdit(**json.loads(line)) for line in lines if line.strip()]

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def add(
        self,
        icon_id: str,
        phrases: Sequence[str],
        status: str,
        author: str,
        expected_revision: int,
        reason: str,
    ) -> PendingEdit:
        edit = PendingEdit(
            icon_id, list(phrases), status, author, expected_revision, datetime.now(UTC).isoformat(), reason
        )
        with self._locked():
            self._append(self.path, asdict(edit))
        return edit

    def all(self) -> list[PendingEdit]:
        with self._locked():
            return self._read()

    def replay(self, store: OverrideStore) -> ReplayResult:
        """Save the queued edits in order.

        Conflicting and invalid edits leave the queue for `set_aside_path` (with the reason) and
        are returned so the app can show them; an unreachable database stops the replay and
        keeps the rest queued.
        """
        result = ReplayResult(saved=[], set_aside=[])
        with self._locked():
            remaining = self._read()
            while remaining:
                edit = remaining[0]
                try:
                    result.saved.append(
                        store.save(
                            edit.icon_id, edit.phrases, edit.status, edit.author, edit.expected_revision
                        )
                    )
                except StoreUnavailable as exc:
                    result.stopped = str(exc)
                    break
                except OverrideError as exc:
                    result.set_aside.append((edit, str(exc)))
                    self._append(self.set_aside_path, {**asdict(edit), "set_aside_because": str(exc)})
                remaining.pop(0)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(json.dumps(asdict(e)) + "\n" for e in remaining), encoding="utf-8")
            os.replace(tmp, self.path)
        return result
