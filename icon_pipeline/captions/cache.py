"""Caption cache: a SQLite file so a nightly re-caption only pays for what changed.

The key is sha256 of (icon content hash, lexicon version, lexicon entry hash, prompt version,
model id, captioner settings): change any of them for one icon and only that icon is asked
again. Only successes are cached; failures are logged in their own table and retried on the
next run. Misses are captioned in chunks and each chunk is committed at once, so a run that
dies after an hour keeps what it paid for.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from icon_pipeline.captions.base import Captioner, CaptionRequest, CaptionResult

KeyFn = Callable[[CaptionRequest], str]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    key TEXT PRIMARY KEY,
    icon_id TEXT NOT NULL,
    phrases TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,
    icon_id TEXT NOT NULL,
    error TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class CacheStats:
    """hits: answered from the cache; misses: not in it; calls: requests sent to the captioner
    (misses with distinct keys); failures: captioner results with an error (not cached)."""

    hits: int = 0
    misses: int = 0
    calls: int = 0
    failures: int = 0


def make_cache_key(captioner: Captioner, request: CaptionRequest, lexicon_version: str = "") -> str:
    """The cache key of one request for one captioner (route-aware: a text-routed icon's key
    does not change when only the vision model does)."""
    info = captioner.route_for(request)
    parts = [
        request.content_hash,
        lexicon_version,
        request.lexicon_hash(),
        info.prompt_version,
        info.model,
        captioner.settings_key(),
    ]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


class CaptionCache:
    """Successful captions by key in a SQLite file (created with its folder if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def __enter__(self) -> CaptionCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM captions").fetchone()[0]

    def get_many(self, keys: Sequence[str]) -> dict[str, CaptionResult]:
        """Cached results by key (icon_id is the one stored; callers put their own back)."""
        found: dict[str, CaptionResult] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):  # stay under SQLite's variable limit
                chunk = unique[start : start + 500]
                rows = self._db.execute(
                    "SELECT key, icon_id, phrases, route, model FROM captions "
                    f"WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for key, icon_id, phrases, route, model in rows:
                    found[key] = CaptionResult(icon_id, json.loads(phrases), route, model, attempts=0)
        return found

    def put_many(self, items: Sequence[tuple[str, CaptionResult]]) -> None:
        """Store successes and log failures in one transaction; a success clears an old failure."""
        now = time.time()
        successes = [
            (key, r.icon_id, json.dumps(r.phrases), r.route, r.model, r.attempts, now)
            for key, r in items
            if r.error is None
        ]
        failures = [
            (key, r.icon_id, r.error, r.route, r.model, r.attempts, now)
            for key, r in items
            if r.error is not None
        ]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?, ?, ?, ?)", successes)
            self._db.executemany("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?, ?)", failures)
            self._db.executemany("DELETE FROM failures WHERE key = ?", [(row[0],) for row in successes])

    def failures(self) -> list[dict[str, object]]:
        """The latest failure of every key that has not succeeded since (for reports and QC)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, icon_id, error, route, model, attempts, failed_at FROM failures ORDER BY icon_id"
            ).fetchall()
        names = ("key", "icon_id", "error", "route", "model", "attempts", "failed_at")
        return [dict(zip(names, row, strict=True)) for row in rows]


def caption_with_cache(
    captioner: Captioner,
    requests: Sequence[CaptionRequest],
    cache: CaptionCache,
    key_fn: KeyFn | None = None,
    *,
    lexicon_version: str = "",
    chunk_size: int = 256,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[CaptionResult], CacheStats]:
    """Results for every request (in order), asking the captioner only for cache misses.

    key_fn defaults to `make_cache_key(captioner, request, lexicon_version)`. Requests that share
    a key (identical icons) are captioned once. on_progress(done, total_misses) after each chunk.
    """
    key_of = key_fn or (lambda request: make_cache_key(captioner, request, lexicon_version))
    keys = [key_of(request) for request in requests]
    cached = cache.get_many(keys)

    to_caption: dict[str, CaptionRequest] = {}
    misses = 0
    for key, request in zip(keys, requests, strict=True):
        if key not in cached:
            misses += 1
            to_caption.setdefault(key, request)

    fresh: dict[str, CaptionResult] = {}
    pending = list(to_caption.items())
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start : start + chunk_size]
        results = captioner.caption_many([request for _, request in chunk])
        if len(results) != len(chunk):
            raise RuntimeError(
                f"captioner {captioner.name} returned {len(results)} results for {len(chunk)} requests"
            )
        items = [(key, result) for (key, _), result in zip(chunk, results, strict=True)]
        cache.put_many(items)
        fresh.update(items)
        if on_progress:
            on_progress(min(start + chunk_size, len(pending)), len(pending))

    out: list[CaptionResult] = []
    failures = 0
    for key, request in zip(keys, requests, strict=True):
        result = cached.get(key) or fresh[key]
        if result.icon_id != request.icon_id:
            result = CaptionResult(
                request.icon_id,
                list(result.phrases),
                result.route,
                result.model,
                result.attempts,
                result.error,
            )
        failures += result.error is not None
        out.append(result)
    stats = CacheStats(hits=len(requests) - misses, misses=misses, calls=len(to_caption), failures=failures)
    return out, stats
