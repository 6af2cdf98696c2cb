"""Hybrid search over every channel: what `icon-pipeline search`, the search app, the benchmark and
the fusion fit all run, so a figure in the report is what a designer gets.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import psycopg

from icon_pipeline.library.naming import name_key
from icon_pipeline.search.channels import Channel, ChannelHit, Query, query_kind
from icon_pipeline.search.confidence import MATCH, NO_MATCH, UNRATED, ConfidenceModel, query_traits
from icon_pipeline.search.fusion import DEFAULT_DEPTH, FusedHit, FusionSettings, fuse, fusion_kind
from icon_pipeline.search.index import EmbeddingIndexError
from icon_pipeline.search.names import NameMatcher


@dataclass
class LibraryIndex:
    """What hybrid search knows of the library besides the channels: concepts and names."""

    group_of: dict[str, str]  # icon_id -> group (variants of one concept share it)
    names: dict[str, list[str]] = field(default_factory=dict)  # name_key -> icon ids
    matcher: NameMatcher = field(default_factory=lambda: NameMatcher({}))  # how a query names icons

    def __post_init__(self) -> None:
        self.members: dict[str, list[str]] = {}
        for icon_id, group in sorted(self.group_of.items()):
            self.members.setdefault(group, []).append(icon_id)

    @classmethod
    def build(
        cls,
        group_of: Mapping[str, str],
        names: Mapping[str, str],
        tags: Mapping[str, Sequence[str]] | None = None,
        styles: Sequence[str] = (),
    ) -> LibraryIndex:
        """`names`: icon_id -> the icon's name; `tags`: its tags in the library's order; `styles`:
        the catalog's style values (names.NameMatcher)."""
        by_name: dict[str, list[str]] = {}
        for icon_id, name in sorted(names.items()):
            key = name_key(name)
            if key:
                by_name.setdefault(key, []).append(icon_id)
        return cls(group_of=dict(group_of), names=by_name, matcher=NameMatcher.build(names, tags, styles))

    def name_matches(self, query: Query) -> frozenset[str]:
        if not isinstance(query, str):
            return frozenset()
        return frozenset(self.names.get(name_key(query), ()))

    def match_levels(self, query: Query) -> dict[str, int]:
        """icon_id -> how closely a text query names it (names.EXACT, names.NEAR); {} for an image."""
        return self.matcher.levels(query) if isinstance(query, str) else {}


@dataclass
class ChannelResults:
    """Every channel's hits for one query, and how long each search took."""

    hits: dict[str, list[ChannelHit]]
    seconds: dict[str, float]
    failures: dict[str, str]  # channel -> why it could not answer this query


@dataclass
class HybridSearch:
    channels: dict[str, Channel]
    settings: FusionSettings
    library: LibraryIndex
    depth: int = DEFAULT_DEPTH

    def gather(
        self,
        queries: Sequence[Query],
        names: Sequence[str] | None = None,
        *,
        k: int | None = None,
        exact: bool = False,
        encoded: dict[str, list] | None = None,
        connections: Sequence[psycopg.Connection] = (),
    ) -> list[ChannelResults]:
        """Each query's hits from each channel of `names` that answers its kind (default: the
        weighted ones). `encoded` caches the channels' batch encodings across calls.

        `connections`: extra database connections; the searches of many queries then run on them
        in parallel (the server scans with one core per query: exact search over thousands of
        queries is what the benchmark spends its time on)."""
        depth = k or self.depth
        encoded = {} if encoded is None else encoded
        results = [ChannelResults({}, {}, {}) for _ in queries]
        free: queue.Queue = queue.Queue()
        for conn in connections:
            free.put(conn)
        for name, channel in self.channels.items():
            wanted = [
                i
                for i, q in enumerate(queries)
                if query_kind(q) in channel.kinds
                and (name in names if names is not None else name in self.settings.channels(fusion_kind(q)))
            ]
            if not wanted:
                continue
            if name not in encoded:
                encoded[name] = [None] * len(queries)
                todo = [i for i in wanted]
                for i, vector in zip(todo, channel.encode([queries[i] for i in todo]), strict=True):
                    encoded[name][i] = vector

            def one(i: int, name: str = name, channel: Channel = channel) -> None:
                conn = free.get() if connections else None
                started = time.perf_counter()
                try:
                    hits = channel.search(encoded[name][i], depth, exact=exact, conn=conn)
                except EmbeddingIndexError as exc:  # e.g. a blank image: nothing to compare
                    results[i].failures[name] = str(exc)
                    hits = []
                finally:
                    if conn is not None:
                        free.put(conn)
                results[i].seconds[name] = time.perf_counter() - started
                results[i].hits[name] = hits

            if connections:
                with ThreadPoolExecutor(max_workers=len(connections)) as pool:
                    list(pool.map(one, wanted))
            else:
                for i in wanted:
                    one(i)
        return results

    def fuse(
        self,
        query: Query,
        results: ChannelResults,
        k: int,
        exclude: Sequence[str] = (),
        settings: FusionSettings | None = None,
    ) -> list[FusedHit]:
        settings = settings or self.settings
        hits = self.in_library(results.hits)
        levels = self.library.match_levels(query)
        fused = fuse(
            hits,
            settings.channels(fusion_kind(query)),
            k,
            group_of=self.library.group_of,
            members=self.library.members,
            name_matches=self.library.name_matches(query) if settings.name_boost else (),
            name_boost=settings.name_boost,
            fold_variants=settings.fold_variants,
            exclude=exclude,
            match_levels=levels,
        )
        model = self.confidence_model(query, settings)
        if model is None or not fused:
            return fused
        chances = model.probabilities([h.icon_id for h in fused], hits, levels, query_traits(query))
        return [replace(h, confidence=float(p)) for h, p in zip(fused, chances, strict=True)]

    def confidence_model(
        self, query: Query, settings: FusionSettings | None = None
    ) -> ConfidenceModel | None:
        """The fitted confidence model of the query's kind; None before a fit made one."""
        raw = (settings or self.settings).confidence.get(fusion_kind(query))
        model = ConfidenceModel.from_dict(raw) if raw else None
        # One fitted with other features (an older version): unrated until search_fusion is re-run.
        return model if model and len(model.coef) == len(model.feature_names) else None

    def match_state(self, query: Query, hits: Sequence[FusedHit]) -> str:
        """confidence.MATCH, NO_MATCH (the best result is below the fitted threshold) or UNRATED."""
        model = self.confidence_model(query)
        if model is None:
            return UNRATED
        best = max((h.confidence for h in hits if h.confidence is not None), default=None)
        return MATCH if best is not None and best >= model.no_match_below else NO_MATCH

    def in_library(self, hits: Mapping[str, list[ChannelHit]]) -> dict[str, list[ChannelHit]]:
        """Only icons of the configured library: an index not yet rebuilt after the library changed
        may still hold others."""
        known = self.library.group_of
        return {name: [h for h in channel_hits if h.icon_id in known] for name, channel_hits in hits.items()}

    def search(self, query: Query, k: int = 10, *, exact: bool = False) -> list[FusedHit]:
        """The top k icons for one query (text, or a prepared image). When the weighted channels
        return fewer than k icons (no word of the query matches), the others fill in."""
        results = self.gather([query], exact=exact)[0]
        fused = self.fuse(query, results, k)
        if len(fused) < k:
            rest = [
                n for n, c in self.channels.items() if query_kind(query) in c.kinds and n not in results.hits
            ]
            if rest:
                more = self.gather([query], rest, exact=exact)[0]
                results.hits.update(more.hits)
                results.seconds.update(more.seconds)
                fused = self.fuse(query, results, k)
        return fused

    def single(self, channel: str, query: Query, k: int = 10, *, exact: bool = False) -> list[ChannelHit]:
        """One channel alone (`--model NAME`)."""
        return self.in_library(self.gather([query], [channel], k=k, exact=exact)[0].hits).get(channel, [])
