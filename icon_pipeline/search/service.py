"""Search as designers use it: hybrid search over every channel by default, or one channel alone.

Used by `icon-pipeline search`, `icon-pipeline evaluate` and the search app. Channels
are loaded only when a query needs them (keyword search loads no model).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from icon_pipeline.core.database import ensure_database
from icon_pipeline.core.storage import (
    cached,
    catalog_path,
    icon_images_path,
    read_records,
    resolve_checkpoint,
)
from icon_pipeline.library.catalog import read_catalog
from icon_pipeline.library.records import IconRecord
from icon_pipeline.model.checkpoint import EncoderBundle, load_checkpoint
from icon_pipeline.search.channels import (
    CHANNELS,
    HYBRID,
    Channel,
    VectorChannel,
    channel_info,
    channel_order,
    query_kind,
)
from icon_pipeline.search.coalesce import shared_embed
from icon_pipeline.search.confidence import MATCH, NO_MATCH, UNRATED
from icon_pipeline.search.fusion import KINDS, FusionSettings, channel_kind
from icon_pipeline.search.hybrid import HybridSearch, LibraryIndex
from icon_pipeline.search.index import (
    IndexSnapshot,
    ModelIndex,
    embedder_info,
    index_version,
    read_index_snapshot,
)
from icon_pipeline.search.keywords import BM25Index, EmptyCatalogError, LibraryKeywords, library_keywords
from icon_pipeline.search.query import (
    ImageQuery,
    QueryError,
    SearchHit,
    check_k,
    prepare_query_image,
    validate_text_query,
)
from icon_pipeline.search.resident import ResidentIndex

DEFAULT_MODEL = HYBRID


MAX_DEPTH = 1000  # check_k's limit: the most icons one search ranks
VARIANTS_PER_CONCEPT = 4  # icons asked for per concept shown when folding (outline, filled, sizes)


def _display_tables() -> tuple[dict[str, IconRecord], dict[str, tuple[str, str]]]:
    """(icon_id -> catalog record, icon_id -> (display name, png path)), read once per version of
    the catalog and image table: the app and the API open a service per request."""

    def load() -> tuple[dict[str, IconRecord], dict[str, tuple[str, str]]]:
        if not catalog_path().exists():
            return {}, {}
        records = {icon.icon_id: icon for icon in read_catalog()}
        if not icon_images_path().exists():
            return records, {}
        pngs = {row["icon_id"]: row["png_path"] for row in read_records(icon_images_path(), "icon images")}
        names = {
            icon.icon_id: (
                f"{icon.name} ({icon.style})" if icon.style else icon.name,
                pngs.get(icon.icon_id, ""),
            )
            for icon in records.values()
        }
        return records, names

    return cached("search-display-tables", [catalog_path(), icon_images_path()], load)


def style_of(record: IconRecord) -> str:
    """The style people filter by: the catalog's, or the sub-folder/page that tells variants apart."""
    return record.style or record.context


def facets(records: Collection[IconRecord], known: Collection[str]) -> tuple[list[str], list[str]]:
    """(styles, categories) of the icons of `records` whose ids are in `known` (the library's)."""
    icons = [r for r in records if r.icon_id in known]
    return sorted({style_of(r) for r in icons} - {""}), sorted({r.category for r in icons} - {""})


def catalog_facets() -> tuple[list[str], list[str]]:
    """facets() from the files alone (no database); NotReadyError before the catalog and pairs exist."""
    try:
        return facets(_display_tables()[0].values(), _library_keywords().groups)
    except FileNotFoundError as exc:
        raise NotReadyError(f"search needs the catalog and the training pairs: {exc}") from None


def _library_keywords() -> LibraryKeywords:
    """library_keywords(), or NotReadyError saying which asset to materialize."""
    try:
        return library_keywords()
    except FileNotFoundError as exc:
        raise NotReadyError(f"search needs the catalog and the training pairs: {exc}") from None
    except EmptyCatalogError as exc:
        raise NotReadyError(str(exc)) from None


@dataclass(frozen=True)
class ResultGroup:
    """One result: an icon concept's best-ranked icon, with its other variants in the results."""

    hit: SearchHit
    variants: tuple[SearchHit, ...]


@dataclass(frozen=True)
class SearchPage:
    model: str  # the channel that answered (resolved: `HYBRID`, `bm25`, a model id)
    results: list[ResultGroup]
    offset: int
    has_more: bool
    query: str | Any  # the cleaned text, or the prepared (224 px, framed) image
    # MATCH, NO_MATCH (nothing matches the query well: say so) or UNRATED (no confidence model)
    match: str = UNRATED
    message: str = ""  # for people, when match is NO_MATCH (or why results are unrated)


def fold_hits(hits: Sequence[SearchHit], names: Mapping[str, str] | None = None) -> list[ResultGroup]:
    """Ranked hits -> one result per icon concept, at its best member's rank. A concept is a
    training group's icons of one catalog name (`names`: icon_id -> name): variants of a name
    (outline/filled, sizes) fold together; differently named icons that the group holds because
    they look alike (brightness, contrast, percentage-50) stay separate results."""
    order: list[tuple[str, str]] = []
    members: dict[tuple[str, str], list[SearchHit]] = {}
    for hit in hits:
        key = (hit.group_id, (names or {}).get(hit.icon_id, hit.icon_id if names else ""))
        if key not in members:
            order.append(key)
            members[key] = []
        members[key].append(hit)
    return [ResultGroup(members[g][0], tuple(members[g][1:])) for g in order]


class NotReadyError(RuntimeError):
    """Search cannot run yet; the message names the asset to materialize."""


def model_checkpoint(conn: psycopg.Connection, model_id: str) -> str:
    """The checkpoint that embedded `model_id`'s rows, as icon_embeddings recorded it; UnknownModelError
    (listing the models that exist) for a model not in the index."""
    return checkpoint_of(model_id, embedder_info(conn, model_id))


def checkpoint_of(model_id: str, embedder: dict[str, Any]) -> str:
    """The checkpoint path in what icon_embeddings recorded about `model_id`'s encoder."""
    checkpoint = embedder.get("checkpoint")
    if not checkpoint:
        raise NotReadyError(f"model {model_id!r} has no checkpoint recorded: re-materialize icon_embeddings")
    return resolve_checkpoint(str(checkpoint))  # recorded relative to the data root (or, before, absolute)


@dataclass
class ChannelSet:
    """Builds channels on demand from the index registry, the catalog and the checkpoints."""

    conn: psycopg.Connection
    ef_search: int | None = None
    bundles: dict[str, EncoderBundle] = field(default_factory=dict)  # may be shared between services
    resident: ResidentIndex | None = None  # a server's in-memory tables (None: search PostgreSQL)
    _channels: dict[str, Channel] = field(default_factory=dict)
    _snapshot: IndexSnapshot | None = None
    _version: tuple | None = None  # index_version when the snapshot was read
    _keywords: LibraryKeywords | None = None  # the catalog and pairs the channels were built on

    def revalidate(self) -> bool:
        """Forget what was read from the index, the catalog or the pairs if any changed since (one
        small query, two file stamps), so that a channel set can serve many searches; True when
        something had changed (its channels are then built again)."""
        version = index_version(self.conn)  # read before the snapshot it stands for
        try:
            keywords: LibraryKeywords | None = self.keywords()
        except NotReadyError:  # the search itself says what is missing
            keywords = None
        if version is not None and version == self._version and keywords is self._keywords:
            return False
        self._snapshot, self._version, self._keywords = None, version, keywords
        self._channels.clear()
        return True

    def snapshot(self) -> IndexSnapshot:
        """The registry and fusion settings, read once per channel set (the API opens one per request)."""
        if self._snapshot is None:
            self._snapshot = read_index_snapshot(self.conn)
        return self._snapshot

    def stored_fusion(self) -> FusionSettings | None:
        """Hybrid search's fitted settings, None before the first fit."""
        fusion = self.snapshot().fusion
        return FusionSettings.from_json(fusion) if fusion else None

    def registered(self) -> list[str]:
        return [m.model_id for m in self.snapshot().models]

    def available(self) -> list[str]:
        """Every channel this library can answer with now (hybrid first): those that need no
        table (keyword search) always, the others once their table is in the index."""
        registered = self.registered()
        always = [n for n, info in CHANNELS.items() if info.build is not None and not info.indexed]
        names = channel_order([*always, *(n for n in registered if n not in always)])
        return [HYBRID, *names] if registered else names

    def keywords(self) -> LibraryKeywords:
        return _library_keywords()

    def keyword_index(self) -> BM25Index:
        return self.keywords().index

    def table(self, name: str) -> ModelIndex:
        return self.snapshot().model(name)

    def sentence_encoder(self) -> Any:
        from icon_pipeline.model.sentence_encoder import load_sentence_encoder

        with _load_lock:
            encoder = load_sentence_encoder()
            if self.resident is not None:  # a search server: its forwards overlap (once per process)
                encoder.trace_for_serving()
            return encoder

    def bundle(self, model_id: str) -> EncoderBundle:
        checkpoint = checkpoint_of(model_id, self.snapshot().embedder(model_id))
        if checkpoint not in self.bundles:
            with _load_lock:  # services on other threads share `bundles`: each checkpoint loads once
                if checkpoint not in self.bundles:
                    self.bundles[checkpoint] = load_checkpoint(checkpoint)
        return self.bundles[checkpoint]

    def channel(self, name: str) -> Channel:
        if name not in self._channels:
            build = channel_info(name).build
            if build is None:
                raise QueryError(f"{name} is not a single channel")
            channel = build(self, name)
            if isinstance(channel, VectorChannel) and channel.embed_texts is not None:
                # Searches on other threads share the encoder's forwards (search/coalesce.py).
                channel.embed_texts = shared_embed(channel.embed_texts)
            if isinstance(channel, VectorChannel) and self.resident is not None:
                channel.resident_search = self.resident.search_function(self.conn, channel.table)
            self._channels[name] = channel
        return self._channels[name]

    def channels(self, names: Collection[str]) -> dict[str, Channel]:
        return {name: self.channel(name) for name in names}

    def library(self) -> LibraryIndex:
        return _library_index(self.keywords())  # both cached per version of the catalog and pairs

    def hybrid(
        self, settings: FusionSettings | None = None, names: Collection[str] | None = None
    ) -> HybridSearch:
        """Hybrid search with the stored (fitted) settings, or equal weights before any fit;
        `names`: the channels to load (default: every one; those of weight 0 only fill in)."""
        available = [n for n in self.available() if n != HYBRID]
        if settings is None:
            settings = self.stored_fusion() or FusionSettings.unfitted(
                {
                    kind: [n for n in available if channel_kind(kind) in channel_info(n).kinds]
                    for kind in KINDS
                }
            )
        return HybridSearch(self.channels(available if names is None else names), settings, self.library())


_load_lock = threading.Lock()  # model loads one at a time (searches themselves run in parallel)
_library_memo: list[tuple[LibraryKeywords, LibraryIndex]] = []


def _library_index(keywords: LibraryKeywords) -> LibraryIndex:
    """LibraryIndex of `keywords`, built once per keywords object (about 0.1 s for 6k icons): the
    app and the API open a service per request."""
    memo = _library_memo[0] if _library_memo else None
    if memo is None or memo[0] is not keywords:
        memo = (
            keywords,
            LibraryIndex.build(keywords.groups, keywords.names, keywords.tags, keywords.styles),
        )
        _library_memo[:] = [memo]
    return memo[1]


@dataclass
class SearchService:
    conn: psycopg.Connection
    ef_search: int | None = None
    bundles: dict[str, EncoderBundle] = field(default_factory=dict)  # checkpoint -> loaded model
    resident: ResidentIndex | None = None  # a server's in-memory tables, shared by its searches

    def __post_init__(self) -> None:
        self.channel_set = ChannelSet(self.conn, self.ef_search, self.bundles, self.resident)
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

    def revalidate(self) -> None:
        """Ready for another search: what was read from the index, the catalog or the pairs is
        read again if they changed since (a server keeps a service per connection)."""
        if self.channel_set.revalidate():
            self._hybrid = None

    @property
    def records(self) -> dict[str, IconRecord]:
        """icon_id -> catalog record (name, style, category, source file); empty before the catalog."""
        return _display_tables()[0]

    @property
    def catalog(self) -> dict[str, tuple[str, str]]:
        """icon_id -> (name, png path), for results people can read and see."""
        return _display_tables()[1]

    def icon(self, icon_id: str) -> IconRecord:
        """The catalog record of one icon; QueryError naming it when the catalog has no such icon."""
        record = self.records.get(icon_id)
        if record is None:
            raise QueryError(f"no icon {icon_id!r} in the catalog (re-run the search: the library changed?)")
        return record

    def facets(self) -> tuple[list[str], list[str]]:
        """(styles, categories) of the configured library's icons, for the filters people pick from."""
        return facets(self.records.values(), self.channel_set.keywords().groups)

    def _hits(self, query: Any, model: str, k: int) -> list[SearchHit]:
        kind = query_kind(query)
        tables = _display_tables()  # once per search, not per hit
        if model == HYBRID:
            search = self.hybrid()
            fused = search.search(query, k)
            group_of = search.library.group_of
            return [
                self._hit(h.icon_id, h.score, group_of, h.channel_scores, tables, h.confidence) for h in fused
            ]
        if kind not in channel_info(model).kinds:
            wanted, given = ("words", "an image") if kind == "image" else ("an image", "words")
            raise QueryError(f"{model} takes {wanted}, not {given}")
        channel = self.channel_set.channel(model)
        encoded = channel.encode([query])[0]
        groups = self.channel_set.keywords().groups  # the configured library's icons
        found = channel.search(encoded, k)
        hits = [h for h in found if h.icon_id in groups]
        if found and not hits:
            # Every neighbour is an icon of another library: the index predates a library switch.
            raise NotReadyError(
                f"the {model} index holds icons of another library (it was built before the configured "
                "library changed): materialize icon_embeddings to index this one"
            )
        return [self._hit(h.icon_id, h.score, groups, {model: h.score}, tables) for h in hits]

    def _hit(
        self,
        icon_id: str,
        score: float,
        groups: Any,
        channel_scores: dict[str, float],
        tables: tuple[dict[str, IconRecord], dict[str, tuple[str, str]]],
        confidence: float | None = None,
    ) -> SearchHit:
        records, catalog = tables
        name, png_path = catalog.get(icon_id, (icon_id, None))
        record = records.get(icon_id)
        return SearchHit(
            icon_id,
            name,
            groups.get(icon_id, icon_id),
            score,
            png_path,
            dict(channel_scores),
            style=style_of(record) if record else "",
            category=record.category if record else "",
            file_path=record.file_path if record else "",
            confidence=confidence,
        )

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

    def search(
        self,
        query: str | ImageQuery,
        model: str | None = None,
        *,
        k: int = 24,
        offset: int = 0,
        fold: bool = True,
        styles: Collection[str] = (),
        categories: Collection[str] = (),
    ) -> SearchPage:
        """One page of results as designers browse them: `k` results from `offset`, each an icon
        concept with its variants folded in (`fold`), or every icon on its own; only icons of the
        given styles / categories (none given: all). A `str` is a text query, anything else an image.

        Filters and folding apply to the ranked candidates (hybrid search: what its channels
        returned, DEFAULT_DEPTH each), so a rare style may show fewer results than exist."""
        check_k(k)
        if offset < 0:
            raise QueryError(f"offset must be 0 or more, got {offset}")
        query = validate_text_query(query) if isinstance(query, str) else prepare_query_image(query)
        model = self.resolve(model)
        wanted = offset + k + 1  # one more than shown: whether a next page exists
        # Folding and filters drop icons from the ranking: rank more than is shown.
        spread = (VARIANTS_PER_CONCEPT if fold else 1) * (4 if styles or categories else 1)
        hits = self._hits(query, model, min(MAX_DEPTH, wanted * spread))
        style_set, category_set = set(styles), set(categories)
        hits = [
            h
            for h in hits
            if (not style_set or h.style in style_set) and (not category_set or h.category in category_set)
        ]
        match, message = self.match_state(query, model, hits)
        if fold:
            records = self.records  # one look at the catalog's stamp, not two per hit
            names = {h.icon_id: records[h.icon_id].name for h in hits if h.icon_id in records}
            groups = fold_hits(hits, names)
        else:
            groups = [ResultGroup(h, ()) for h in hits]
        return SearchPage(
            model, groups[offset : offset + k], offset, len(groups) > offset + k, query, match, message
        )

    def match_state(self, query: Any, model: str, hits: Sequence[SearchHit]) -> tuple[str, str]:
        """(MATCH | NO_MATCH | UNRATED, a message for people): whether anything matches the query
        well, by the best hit's confidence against the fitted threshold (hybrid search only; one
        channel alone is unrated unless it found nothing)."""
        what = "this image" if query_kind(query) == "image" else repr(query)
        if not hits:
            return NO_MATCH, f"no icon matches {what}"
        if model != HYBRID:
            return UNRATED, f"{model} alone has no confidence model: only hybrid search rates a match"
        model_of_kind = self.hybrid().confidence_model(query)
        if model_of_kind is None:
            return UNRATED, "results are unrated: materialize search_fusion to fit the confidence model"
        best = max((h.confidence for h in hits if h.confidence is not None), default=0.0)
        if best >= model_of_kind.no_match_below:
            return MATCH, ""
        advice = "; try other words" if query_kind(query) == "text" else ""
        return NO_MATCH, (
            f"no icon matches {what} well: the best result's confidence is {best:.2g}, below the "
            f"{model_of_kind.no_match_below:.2g} that all but a few real queries reach{advice}"
        )

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
