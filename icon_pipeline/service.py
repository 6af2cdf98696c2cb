"""Search as designers use it: the index's models, their encoders and the icon catalog together.

Used by `icon-pipeline search` and the search app; no Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import psycopg

from icon_pipeline.database import ensure_database
from icon_pipeline.index import embedder_info, list_models
from icon_pipeline.lexical import LibraryKeywords, library_keywords
from icon_pipeline.modeling import EncoderBundle, load_checkpoint
from icon_pipeline.search import (
    KEYWORD_SEARCH,
    ImageQuery,
    QueryError,
    SearchHit,
    search_image,
    search_keywords,
    search_text,
)
from icon_pipeline.tables import catalog_path, icon_images_path, read_catalog, read_records

DEFAULT_MODEL = "finetuned"


class NotReadyError(RuntimeError):
    """Search cannot run yet; the message names the asset to materialize."""


def model_checkpoint(conn: psycopg.Connection, model_id: str) -> str:
    """The checkpoint that embedded `model_id`'s rows, as icon_embeddings recorded it; UnknownModelError
    (listing the models that exist) for a model not in the index."""
    checkpoint = embedder_info(conn, model_id).get("checkpoint")
    if not checkpoint:
        raise NotReadyError(f"model {model_id!r} has no checkpoint recorded: re-materialize icon_embeddings")
    return str(checkpoint)


@dataclass
class SearchService:
    conn: psycopg.Connection
    _bundles: dict[str, EncoderBundle] = field(default_factory=dict)

    @classmethod
    def open(cls) -> SearchService:
        info = ensure_database()
        return cls(psycopg.connect(info.libpq_url, autocommit=True))

    def close(self) -> None:
        self.conn.close()

    def models(self) -> list[str]:
        return [m.model_id for m in list_models(self.conn)]

    def default_model(self) -> str:
        models = self.models()
        if not models:
            raise NotReadyError("the index is empty: materialize icon_embeddings first")
        return DEFAULT_MODEL if DEFAULT_MODEL in models else models[0]

    def bundle(self, model_id: str) -> EncoderBundle:
        if model_id not in self._bundles:
            self._bundles[model_id] = load_checkpoint(model_checkpoint(self.conn, model_id))
        return self._bundles[model_id]

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

    def keywords(self) -> LibraryKeywords:
        try:
            return library_keywords()
        except FileNotFoundError as exc:
            raise NotReadyError(f"keyword search needs the catalog and captions: {exc}") from None

    def text(self, query: str, model_id: str | None = None, k: int = 10) -> list[SearchHit]:
        """By a model from the index, or by keywords (model_id `bm25`)."""
        model_id = model_id or self.default_model()
        if model_id == KEYWORD_SEARCH:
            return search_keywords(self.keywords(), query, k, catalog=self.catalog)
        return search_text(self.conn, self.bundle(model_id), model_id, query, k, catalog=self.catalog)

    def image(self, image: ImageQuery | Path, model_id: str | None = None, k: int = 10) -> list[SearchHit]:
        model_id = model_id or self.default_model()
        if model_id == KEYWORD_SEARCH:
            raise QueryError(f"{KEYWORD_SEARCH} is keyword search: it takes words, not an image")
        return search_image(self.conn, self.bundle(model_id), model_id, image, k, catalog=self.catalog)
