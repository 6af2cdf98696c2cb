"""Retrieval channels: each way of answering a query, returning icons with scores.

| channel | answers | how |
|---|---|---|
| `bm25` | text | keywords over names, tags and captions (lexical.py) |
| `captions` | text | the packaged sentence encoder over every name, tag and caption, in pgvector |
| a model id (`base`, `finetuned`, ...) | text, image | an image-text model's image embeddings in pgvector |
| `pixels` | image | the normalised drawing (pixels.py), in pgvector |
| `exemplars` | image | other open sets' drawings of the icon's concept (the corpus), in pgvector |

Hybrid search (fusion.py) asks every channel that answers the query's kind and merges them; the
benchmark scores each channel alone too, from the same code, so each one's contribution shows.
A channel encodes a batch of queries first (one forward pass for many queries), then searches
one encoded query at a time, exactly (sequential scan) or through HNSW; in a search server, over
its in-memory copy of the table (resident.py), exactly.

What a channel is for everyone who shows or builds one (the service, the CLI, the apps, the
benchmark, the Dagster assets) is its entry in CHANNELS at the end of this module: a new channel
is its own module plus one entry there (and the asset that writes its table, if it has one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from PIL import Image

from icon_pipeline.search.index import ModelIndex, get_model_index, search_vectors
from icon_pipeline.search.keywords import BM25Index
from icon_pipeline.search.pixels import pixel_vectors

HYBRID = "hybrid"
KEYWORDS = "bm25"
CAPTIONS = "captions"
PIXELS = "pixels"
EXEMPLARS = "exemplars"
# The image-text models that the pipeline trains and indexes (any other model id in the index is a
# channel too): the pretrained checkpoint, and the one fine-tuned on the library.
BASE_MODEL = "base"
FINETUNED_MODEL = "finetuned"
RESERVED = frozenset({KEYWORDS, CAPTIONS, PIXELS, EXEMPLARS, HYBRID})
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
    # A server's in-memory copy of the table (search/resident.py): (vector, k) -> hits, exact.
    resident_search: Any = None

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
        if self.resident_search is not None and conn is None:
            hits = self.resident_search(encoded, k)
        else:
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


def exemplar_channel(
    conn: psycopg.Connection, bundle: Any, ef_search: int | None = None, table: ModelIndex | None = None
) -> VectorChannel:
    """Other open sets' drawings of a library concept (corpus_exemplars), embedded by the fine-tuned
    model: a screenshot drawn in another style often looks more like another set's drawing of the
    concept than like the library's own. An icon scores by a soft maximum over its concept's
    drawings near the query, as the captions channel does over texts."""
    return VectorChannel(
        name=EXEMPLARS,
        kinds=frozenset({"image"}),
        conn=conn,
        table=table or get_model_index(conn, EXEMPLARS),
        embed_images=bundle.embed_images,
        ef_search=ef_search,
    )


class ChannelSource(Protocol):
    """What building a channel needs (search.service.ChannelSet gives it)."""

    conn: psycopg.Connection
    ef_search: int | None

    def table(self, name: str) -> ModelIndex: ...

    def bundle(self, name: str) -> Any: ...

    def sentence_encoder(self) -> Any: ...

    def keyword_index(self) -> BM25Index: ...


@dataclass(frozen=True)
class ChannelInfo:
    """One channel as people and code meet it."""

    name: str
    kinds: frozenset[str]  # the queries it answers: "text", "image"
    description: str  # a panel's title: what its results come from
    score_label: str  # what its scores are
    build: Callable[[ChannelSource, str], Channel] | None  # None: hybrid, which fuses the others
    indexed: bool = True  # answers once its table is in the index (False: always, as keywords)


TEXT, IMAGE = frozenset({"text"}), frozenset({"image"})
# In the order people are shown them; a model id not listed sorts after these, by name.
CHANNELS: dict[str, ChannelInfo] = {
    info.name: info
    for info in (
        ChannelInfo(
            HYBRID,
            TEXT | IMAGE,
            "Hybrid search (default): keywords, captions and image-text models fused",
            "fused scores",
            None,
        ),
        ChannelInfo(
            KEYWORDS,
            TEXT,
            "Keywords only (BM25 over names, tags and captions)",
            "BM25 scores",
            lambda source, name: KeywordChannel(source.keyword_index()),
            indexed=False,
        ),
        ChannelInfo(
            CAPTIONS,
            TEXT,
            "Caption embeddings only (sentence encoder over names, tags and captions)",
            "soft maximum of the icon's text cosines",
            lambda source, name: caption_channel(
                source.conn, source.sentence_encoder(), source.ef_search, source.table(name)
            ),
        ),
        ChannelInfo(
            FINETUNED_MODEL,
            TEXT | IMAGE,
            "Fine-tuned image-text model only",
            "cosine",
            lambda source, name: model_channel(
                source.conn, name, source.bundle(name), source.ef_search, source.table(name)
            ),
        ),
        ChannelInfo(
            BASE_MODEL,
            TEXT | IMAGE,
            "Pretrained image-text model only (before fine-tuning)",
            "cosine",
            lambda source, name: model_channel(
                source.conn, name, source.bundle(name), source.ef_search, source.table(name)
            ),
        ),
        ChannelInfo(
            PIXELS,
            IMAGE,
            "Pixels only (visual near-duplicates; images)",
            "cosine of the normalised drawings",
            lambda source, name: pixel_channel(source.conn, source.ef_search, source.table(name)),
        ),
        ChannelInfo(
            EXEMPLARS,
            IMAGE,
            "Other sets' drawings of the concept only (the open icon corpus, fine-tuned model; images)",
            "soft maximum of the cosines of the concept's drawings",
            lambda source, name: exemplar_channel(
                source.conn, source.bundle(name), source.ef_search, source.table(name)
            ),
        ),
    )
}


def channel_info(name: str) -> ChannelInfo:
    """The registry's entry, or an image-text model's for any other model id in the index."""
    known = CHANNELS.get(name)
    if known is not None:
        return known
    model = CHANNELS[FINETUNED_MODEL]
    return ChannelInfo(name, model.kinds, f"Image-text model {name} only", model.score_label, model.build)


def channel_order(names: Sequence[str]) -> list[str]:
    """`names` in the order people are shown channels."""
    order = list(CHANNELS)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))
