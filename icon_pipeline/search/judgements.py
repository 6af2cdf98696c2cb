"""Designers' relevance judgements (thumbs up / down on a search result), stored beside the index.

One row per click: the query (its text, or the prepared 224 px image and that image's sha256),
the icon, the judgement, which channel answered, who (the signed-in user when the app runs with
basic auth, else NULL) and when. `icon-pipeline evaluate --judgements` scores these as real
queries: an icon is relevant to a query when its thumbs up outnumber its thumbs down.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime

import psycopg
from PIL import Image
from psycopg import sql

JUDGEMENTS_TABLE = "icon_search_judgements"
_LOCK_KEY = 0x1C0_5EA7C4  # any fixed key: serialises concurrent first-time creation


@dataclass(frozen=True)
class Judgement:
    query_kind: str  # "text" or "image"
    query_text: str | None
    query_image_sha256: str | None
    icon_id: str
    relevant: bool
    model: str
    judged_by: str | None
    judged_at: datetime


@dataclass(frozen=True)
class JudgedQuery:
    """A query with the icons people marked relevant (net thumbs up), for the benchmark's metrics."""

    kind: str
    text: str | None
    image: Image.Image | None
    image_sha256: str | None
    relevant: frozenset[str]
    judgements: int

    @property
    def label(self) -> str:
        return self.text if self.text is not None else f"image {str(self.image_sha256)[:12]}"


def image_png(image: Image.Image) -> tuple[bytes, str]:
    """(PNG bytes, sha256 of them) of a prepared query image: what identifies an image query."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def ensure_table(conn: psycopg.Connection) -> None:
    """Create the table if missing (idempotent, safe when several app processes start at once)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                    id bigserial PRIMARY KEY,
                    query_kind text NOT NULL CHECK (query_kind IN ('text', 'image')),
                    query_text text,
                    query_image_sha256 text,
                    query_image bytea,
                    icon_id text NOT NULL,
                    relevant boolean NOT NULL,
                    model text NOT NULL DEFAULT '',
                    judged_by text,
                    judged_at timestamptz NOT NULL DEFAULT now(),
                    CHECK ((query_kind = 'text') = (query_text IS NOT NULL)),
                    CHECK ((query_kind = 'image') = (query_image_sha256 IS NOT NULL))
                )"""
            ).format(sql.Identifier(JUDGEMENTS_TABLE))
        )


def record_judgement(
    conn: psycopg.Connection,
    query: str | Image.Image,
    icon_id: str,
    relevant: bool,
    *,
    model: str = "",
    judged_by: str | None = None,
) -> Judgement:
    """Store one thumbs up (relevant) or down; `query`: the cleaned text or the prepared image."""
    if not icon_id:
        raise ValueError("a judgement needs the icon it is about")
    ensure_table(conn)
    text, sha, png = None, None, None
    if isinstance(query, str):
        text = query
    else:
        png, sha = image_png(query)
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {} (query_kind, query_text, query_image_sha256, query_image, icon_id, relevant, "
            "model, judged_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING judged_at"
        ).format(sql.Identifier(JUDGEMENTS_TABLE)),
        ("text" if text is not None else "image", text, sha, png, icon_id, relevant, model, judged_by),
    ).fetchone()
    assert row is not None
    return Judgement(
        "text" if text is not None else "image", text, sha, icon_id, relevant, model, judged_by, row[0]
    )


def read_judgements(conn: psycopg.Connection) -> list[Judgement]:
    """Every judgement, oldest first (empty before the first one)."""
    ensure_table(conn)
    rows = conn.execute(
        sql.SQL(
            "SELECT query_kind, query_text, query_image_sha256, icon_id, relevant, model, judged_by, "
            "judged_at FROM {} ORDER BY judged_at, id"
        ).format(sql.Identifier(JUDGEMENTS_TABLE))
    ).fetchall()
    return [Judgement(*row) for row in rows]


def judged_queries(conn: psycopg.Connection) -> tuple[list[JudgedQuery], int]:
    """(queries with at least one relevant icon, how many judged queries have none)."""
    ensure_table(conn)
    rows = conn.execute(
        sql.SQL(
            "SELECT query_kind, query_text, query_image_sha256, "
            "(array_agg(query_image) FILTER (WHERE query_image IS NOT NULL))[1], "
            "array_agg(icon_id), array_agg(relevant) "
            "FROM {} GROUP BY query_kind, query_text, query_image_sha256 "
            "ORDER BY min(judged_at)"
        ).format(sql.Identifier(JUDGEMENTS_TABLE))
    ).fetchall()
    queries, without = [], 0
    for kind, text, sha, png, icons, votes in rows:
        net: dict[str, int] = {}
        for icon_id, relevant in zip(icons, votes, strict=True):
            net[icon_id] = net.get(icon_id, 0) + (1 if relevant else -1)
        relevant_icons = frozenset(i for i, n in net.items() if n > 0)
        if not relevant_icons:
            without += 1
            continue
        image = Image.open(io.BytesIO(png)).convert("RGB") if png is not None else None
        queries.append(JudgedQuery(kind, text, image, sha, relevant_icons, len(icons)))
    return queries, without
