"""Search as designers use it: hybrid search over every channel by default, or one channel alone.

Used by `icon-pipeline search`, `icon-pipeline evaluate` and the search app. Channels
are loaded only when a query needs them (keyword search loads no model).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import psycopg

from icon_pipeline.core.database import ensure_database
from icon_pipeline.core.storage import (
    catalog_path,
    icon_images_path,
    read_catalog,
    read_records,
    resolve_checkpoint,
)
from icon_pipeline.model.checkpoint import EncoderBundle, load_checkpoint
from icon_pipeline.search.channels import (
    CAPTIONS,
    KEYWORDS,
    PIXELS,
    RESERVED,
    Channel,
    KeywordChannel,
    caption_channel,
    model_channel,
    pixel_channel,
    query_kind,
)
from icon_pipeline.search.fusion import KINDS, FusionSettings, channel_kind
from icon_pipeline.search.hybrid import HYBRID, HybridSearch, LibraryIndex
from icon_pipeline.search.index import embedder_info, list_models, read_fusion_settings
from icon_pipeline.search.keywords import LibraryKeywords, library_keywords
from icon_pipeline.search.query import (
    ImageQuery,
    QueryError,
    SearchHit,
    check_k,
    prepare_query_image,
    validate_text_query,
)

DEFAULT_MODEL = HYBRID
# Channels in the order people are shown them.
CHANNEL_ORDER = (HYBRID, KEYWORDS, CAPTIONS, "finetuned", "base", PIXELS)


class NotReadyError(RuntimeError):
    """Search cannot run yet; the message names the asset to materialize."""


def model_checkpoint(conn: psycopg.Connection, model_id: str) -> str:
    """The checkpoint that embedded `model_id`'s rows, as icon_embeddings recorded it; UnknownModelError
    (listing the models that exist) for a model not in the index."""
    checkpoint = embedder_info(conn, model_id).get("checkpoint")
    if not checkpoint:
        raise NotReadyError(f"model {model_id!r} has no checkpoint recorded: re-materialize icon_embeddings")
    return resolve_checkpoint(str(checkpoint))  # recorded relative to the data root (or, before, absolute)


def stored_fusion(conn: psycopg.Connection) -> FusionSettings | None:
    raw = read_fusion_settings(conn)
    return FusionSettings.from_json(raw) if raw else None


@dataclass
class ChannelSet:
    """Builds channels on demand from the index registry, the catalog and the checkpoints."""

    conn: psycopg.Connection
    ef_search: int | None = None
    bundles: dict[str, EncoderBundle] = field(default_factory=dict)  # may be shared between services
    _channels: dict[str, Channel] = field(default_factory=dict)

    def registered(self) -> list[str]:
        return [m.model_id for m in list_models(self.conn)]

    def available(self) -> list[str]:
        """Every channel this library can answer with now (hybrid first)."""
        registered = self.registered()
        names = [KEYWORDS, *(n for n in registered if n not in RESERVED)]
        names += [n for n in (CAPTIONS, PIXELS) if n in registered]
        ordered = sorted(names, key=lambda n: (CHANNEL_ORDER.index(n) if n in CHANNEL_ORDER else 99, n))
        return [HYBRID, *ordered] if registered else ordered

    def keywords(self) -> LibraryKeywords:
        try:
            return library_keywords()
        except FileNotFoundError as exc:
            raise NotReadyError(f"search needs the catalog and the training pairs: {exc}") from None

    def bundle(self, model_id: str) -> EncoderBundle:
        checkpoint = model_checkpoint(self.conn, model_id)
        if checkpoint not in self.bundles:
            self.bundles[checkpoint] = load_checkpoint(checkpoint)
        return self.bundles[checkpoint]

    def channel(self, name: str) -> Channel:
        if name not in self._channels:
            if name == KEYWORDS:
                channel: Channel = KeywordChannel(self.keywords().index)
            elif name == CAPTIONS:
                from icon_pipeline.model.sentence_encoder import load_sentence_encoder

                channel = caption_channel(self.conn, load_sentence_encoder(), self.ef_search)
            elif name == PIXELS:
                channel = pixel_channel(self.conn, self.ef_search)
            else:
                channel = model_channel(self.conn, name, self.bundle(name), self.ef_search)
            self._channels[name] = channel
        return self._channels[name]

    def channels(self, names: Collection[str]) -> dict[str, Channel]:
        return {name: self.channel(name) for name in names}

    def library(self) -> LibraryIndex:
        keywords = self.keywords()
        names = {icon.icon_id: icon.name for icon in read_catalog()}
        return LibraryIndex.build(keywords.groups, names)

    def hybrid(
        self, settings: FusionSettings | None = None, names: Collection[str] | None = None
    ) -> HybridSearch:
        """Hybrid search with the stored (fitted) settings, or equal weights before any fit;
        `names`: the channels to load (default: every one; those of weight 0 only fill in)."""
        available = [n for n in self.available() if n != HYBRID]
        if settings is None:
            settings = stored_fusion(self.conn) or FusionSettings.unfitted(
                {kind: [n for n in available if channel_kind(kind) in _kinds(n)] for kind in KINDS}
            )
        return HybridSearch(self.channels(available if names is None else names), settings, self.library())


def _kinds(name: str) -> frozenset[str]:
    if name in (KEYWORDS, CAPTIONS):
        return frozenset({"text"})
    if name == PIXELS:
        return frozenset({"image"})
    return frozenset({"text", "image"})


@dataclass
class SearchService:
    conn: psycopg.Connection
    ef_search: int | None = None
    bundles: dict[str, EncoderBundle] = field(default_factory=dict)  # checkpoint -> loaded model

    def __post_init__(self) -> None:
        self.channel_set = ChannelSet(self.conn, self.ef_search, self.bundles)
        self._hybrid: HybridSearch | None = None

    @classmethod
    def open(cls) -> SearchService:
        info = ensure_database()
        return cls(psycopg.connect(info.libpq_url, autocommit=True))

    def close(self) -> None:
        self.conn.close()

    def models(self) -> list[str]:
        """The choices for `--model` and the app's selector: hybrid, then every single channel."""
        return self.channel_set.available()

    def default_model(self) -> str:
        models = self.models()
        if HYBRID not in models:
            raise NotReadyError("the index is empty: materialize icon_embeddings first")
        return HYBRID

    def resolve(self, model: str | None) -> str:
        """A `--model` value (any case) as a known channel; QueryError listing the choices otherwise."""
        if not model:
            return self.default_model()
        choices = self.models()
        lowered = {c.lower(): c for c in choices}
        if model.lower() not in lowered:
            raise QueryError(f"unknown model {model!r}; choose one of: {', '.join(choices)}")
        return lowered[model.lower()]

    def hybrid(self) -> HybridSearch:
        if self._hybrid is None:
            self._hybrid = self.channel_set.hybrid()
        return self._hybrid

    @cached_property
    def catalog(self) -> dict[str, tuple[str, str]]:
        """icon_id -> (name, png path), for results people can read and see."""
        if not catalog_path().exists() or not icon_images_path().exists():
            return {}
        pngs = {row["icon_id"]: row["png_path"] for row in read_records(icon_images_path(), "icon images")}
        return {
            icon.icon_id: (
                f"{icon.name} ({icon.style})" if icon.style else icon.name,
                pngs.get(icon.icon_id, ""),
            )
            for icon in read_catalog()
        }

    def _hits(self, query: Any, model: str, k: int) -> list[SearchHit]:
        kind = query_kind(query)
        if model == HYBRID:
            search = self.hybrid()
            fused = search.search(query, k)
            return [self._hit(h.icon_id, h.score, search.library.group_of, h.channel_scores) for h in fused]
        if kind not in _kinds(model):
            wanted, given = ("words", "an image") if kind == "image" else ("an image", "words")
            raise QueryError(f"{model} takes {wanted}, not {given}")
        channel = self.channel_set.channel(model)
        encoded = channel.encode([query])[0]
        groups = self.channel_set.keywords().groups  # the configured library's icons
        hits = [h for h in channel.search(encoded, k) if h.icon_id in groups]
        return [self._hit(h.icon_id, h.score, groups, {model: h.score}) for h in hits]

    def _hit(self, icon_id: str, score: float, groups: Any, channel_scores: dict[str, float]) -> SearchHit:
        name, png_path = self.catalog.get(icon_id, (icon_id, None))
        return SearchHit(icon_id, name, groups.get(icon_id, icon_id), score, png_path, dict(channel_scores))

    def text(self, query: str, model: str | None = None, k: int = 10) -> list[SearchHit]:
        """By hybrid search (default) or one channel (`bm25`, `captions`, a model id)."""
        text = validate_text_query(query)
        check_k(k)
        return self._hits(text, self.resolve(model), k)

    def image(self, image: ImageQuery | Path, model: str | None = None, k: int = 10) -> list[SearchHit]:
        """By hybrid search (default) or one channel (`pixels`, a model id)."""
        check_k(k)
        prepared = prepare_query_image(image)
        return self._hits(prepared, self.resolve(model), k)

    def batch(self, queries: Sequence[Any], model: str, k: int) -> list[list[str]]:
        """Ranked icon ids for many prepared queries at once (evaluate): one encode per channel."""
        if model == HYBRID:
            search = self.hybrid()
            results = search.gather(queries)
            return [[h.icon_id for h in search.fuse(q, r, k)] for q, r in zip(queries, results, strict=True)]
        channel = self.channel_set.channel(model)
        known = self.channel_set.keywords().groups
        usable = [q for q in queries if query_kind(q) in channel.kinds]
        encoded = iter(channel.encode(usable))
        out = []
        for query in queries:
            if query_kind(query) in channel.kinds:
                out.append([h.icon_id for h in channel.search(next(encoded), k) if h.icon_id in known])
            else:
                out.append([])
        return out
