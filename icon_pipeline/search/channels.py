"""Retrieval channels: each way of answering a query, returning icons with scores.

| channel | answers | how |
|---|---|---|
| `bm25` | text | keywords over names, tags and captions (lexical.py) |
| `captions` | text | the packaged sentence encoder over every name, tag and caption, in pgvector |
| a model id (`base`, `finetuned`, ...) | text, image | an image-text model's image embeddings in pgvector |
| `pixels` | image | the normalised drawing (pixels.py), in pgvector |

Hybrid search (fusion.py) asks every channel that answers the query's kind and merges them; the
benchmark scores each channel alone too, from the same code, so each one's contribution shows.
A channel encodes a batch of queries first (one forward pass for many queries), then searches
one encoded query at a time, exactly (sequential scan) or through HNSW.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from PIL import Image

from icon_pipeline.search.index import ModelIndex, get_model_index, search_vectors
from icon_pipeline.search.keywords import BM25Index
from icon_pipeline.search.pixels import pixel_vectors

KEYWORDS = "bm25"
CAPTIONS = "captions"
PIXELS = "pixels"
RESERVED = frozenset({KEYWORDS, CAPTIONS, PIXELS, "hybrid"})
Query = str | Image.Image  # text, or an image already framed by search.prepare_query_image


@dataclass(frozen=True)
class ChannelHit:
    icon_id: str
    score: float  # the channel's own scale: cosine similarity, or BM25 score


class Channel(Protocol):
    name: str
    kinds: frozenset[str]  # "text", "image"

    def encode(self, queries: Sequence[Query]) -> list[Any]: ...

    def search(
        self, encoded: Any, k: int, *, exact: bool = False, conn: psycopg.Connection | None = None
    ) -> list[ChannelHit]:
        """The k best icons; `conn`: another connection to the same database to search on."""
        ...


def query_kind(query: Query) -> str:
    return "image" if isinstance(query, Image.Image) else "text"


@dataclass
class KeywordChannel:
    """BM25: only icons sharing a term with the query (a short list is the honest answer)."""

    index: BM25Index
    name: str = KEYWORDS
    kinds: frozenset[str] = frozenset({"text"})

    def encode(self, queries: Sequence[Query]) -> list[Any]:
        return list(queries)

    def search(
        self, encoded: Any, k: int, *, exact: bool = False, conn: psycopg.Connection | None = None
    ) -> list[ChannelHit]:
        return [ChannelHit(icon_id, score) for icon_id, score in self.index.search(str(encoded), k)]


@dataclass
class VectorChannel:
    """A pgvector table searched with query vectors from `embed`."""

    name: str
    kinds: frozenset[str]
    conn: psycopg.Connection
    table: ModelIndex
    embed_texts: Any = None  # Callable[[Sequence[str]], np.ndarray]
    embed_images: Any = None  # Callable[[Sequence[Image.Image]], np.ndarray]
    ef_search: int | None = None

    def encode(self, queries: Sequence[Query]) -> list[Any]:
        texts = [(i, q) for i, q in enumerate(queries) if isinstance(q, str)]
        images = [(i, q) for i, q in enumerate(queries) if isinstance(q, Image.Image)]
        encoded: list[Any] = [None] * len(queries)
        for batch, embed in ((texts, self.embed_texts), (images, self.embed_images)):
            if not batch:
                continue
            if embed is None:
                kind = "text" if batch is texts else "image"
                raise ValueError(f"channel {self.name!r} does not answer {kind} queries")
            for (index, _), vector in zip(batch, embed([q for _, q in batch]), strict=True):
                encoded[index] = vector
        return encoded

    def search(
        self, encoded: Any, k: int, *, exact: bool = False, conn: psycopg.Connection | None = None
    ) -> list[ChannelHit]:
        hits = search_vectors(
            conn or self.conn, self.table, encoded, k, exact=exact, ef_search=self.ef_search
        )
        return [ChannelHit(hit.icon_id, hit.score) for hit in hits]


def model_channel(
    conn: psycopg.Connection,
    model_id: str,
    bundle: Any,
    ef_search: int | None = None,
    table: ModelIndex | None = None,
) -> VectorChannel:
    """An image-text model: text queries through its text tower, images through its vision tower.
    `table` (here and below): the model's registered table when the caller has read it already."""
    return VectorChannel(
        name=model_id,
        kinds=frozenset({"text", "image"}),
        conn=conn,
        table=table or get_model_index(conn, model_id),
        embed_texts=bundle.embed_texts,
        embed_images=bundle.embed_images,
        ef_search=ef_search,
    )


def caption_channel(
    conn: psycopg.Connection, encoder: Any, ef_search: int | None = None, table: ModelIndex | None = None
) -> VectorChannel:
    """The sentence encoder over each icon's name, tags and captions; an icon scores by a soft
    maximum over its texts near the query (search.index.TEXT_SOFTMAX_TEMPERATURE)."""
    return VectorChannel(
        name=CAPTIONS,
        kinds=frozenset({"text"}),
        conn=conn,
        table=table or get_model_index(conn, CAPTIONS),
        embed_texts=encoder.embed,
        ef_search=ef_search,
    )


def pixel_channel(
    conn: psycopg.Connection, ef_search: int | None = None, table: ModelIndex | None = None
) -> VectorChannel:
    """Visual near-duplicates: the normalised drawing of the query against every icon's."""
    return VectorChannel(
        name=PIXELS,
        kinds=frozenset({"image"}),
        conn=conn,
        table=table or get_model_index(conn, PIXELS),
        embed_images=pixel_vectors,
        ef_search=ef_search,
    )
