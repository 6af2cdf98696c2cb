"""icon_embeddings, caption_embeddings and search_fusion: the index and how hybrid search merges its
channels (exemplar_embeddings, the corpus's drawings in the index, is in exemplars.py)."""

from dataclasses import replace

import pandas as pd
import psycopg
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from icon_pipeline.core.config import load_config
from icon_pipeline.core.storage import (
    asset_path,
    for_writing,
    icon_images_path,
    read_checkpoint_pointer,
    read_records,
    to_relative,
)
from icon_pipeline.dataset.grouping import library_groups
from icon_pipeline.defs.metadata import FLOAT_PLACES, OWNERS, asset_tags, table
from icon_pipeline.defs.resources.postgres import PostgresResource
from icon_pipeline.library.catalog import read_catalog
from icon_pipeline.model.checkpoint import load_checkpoint
from icon_pipeline.model.embedding import embed_image_files
from icon_pipeline.model.sentence_encoder import load_sentence_encoder
from icon_pipeline.model.text_vectors import cached_text_vectors
from icon_pipeline.search.channels import (
    BASE_MODEL,
    CAPTIONS,
    EXEMPLARS,
    FINETUNED_MODEL,
    HYBRID,
    PIXELS,
    RESERVED,
)
from icon_pipeline.search.fusion import FusionSettings
from icon_pipeline.search.fusion_fit import fit_channels, fitting_specs, weight_rows
from icon_pipeline.search.index import embedder_info, write_embeddings, write_fusion_settings
from icon_pipeline.search.inventory import index_inventory, stored_icon_ids
from icon_pipeline.search.pixels import pixel_rows
from icon_pipeline.search.service import ChannelSet
from icon_pipeline.search.texts import icon_texts


def _configured_models() -> dict[str, str]:
    """model id -> checkpoint: base, fine-tuned, and any extra checkpoint dirs from the config."""
    models = {
        BASE_MODEL: read_checkpoint_pointer(BASE_MODEL, "base_checkpoint")["path"],
        FINETUNED_MODEL: read_checkpoint_pointer(FINETUNED_MODEL, "finetuned_checkpoint")["path"],
    }
    extra = load_config().index.extra_models
    clash = sorted(set(extra) & (RESERVED | set(models)))
    if clash:
        raise ValueError(
            f"index.extra_models: {', '.join(clash)} is a built-in channel name; choose other model ids"
        )
    models.update(extra)
    return models


@asset(
    owners=OWNERS,
    tags=asset_tags("search", "index"),
    group_name="search",
    kinds={"postgres", "pgvector"},
    deps=["base_checkpoint", "finetuned_checkpoint", "training_pairs"],
)
def icon_embeddings(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """Image embeddings of every icon, one pgvector table (HNSW, cosine) per model, plus the
    normalised drawings (`pixels`, the visual near-duplicate channel); each swapped in atomically
    so searches never see a half-built index."""
    settings = load_config().index
    images = read_records(icon_images_path(), "icon images")
    icon_ids = [row["icon_id"] for row in images]
    paths = [row["png_path"] for row in images]
    groups = library_groups()
    models = _configured_models()
    context.log.info(
        f"embedding {len(icon_ids)} icons with {', '.join(models)} and their normalised drawings"
    )
    rows = []
    with postgres.connect(autocommit=True) as conn:
        for model_id, checkpoint in models.items():
            rows.append(_embed_model(context, conn, model_id, checkpoint, icon_ids, paths, groups))
        pixels = pixel_rows(icon_ids, paths)
        stats = write_embeddings(
            conn,
            PIXELS,
            pixels.icon_ids,
            [groups[i] for i in pixels.icon_ids],
            pixels.vectors,
            hnsw_m=settings.hnsw_m,
            ef_construction=settings.ef_construction,
            embedder_info={
                "method": "normalised drawing, 32x32 grayscale (pixels.py)",
                "blank": len(pixels.blank),
            },
        )
        rows.append({"model_id": PIXELS, "rows": stats.rows, "dim": stats.dim, "table": stats.table_name})
    blank = pixels.blank
    if blank:
        context.log.warning(f"{len(blank)} icon(s) render blank and have no pixels row, e.g. {blank[:5]}")
    return MaterializeResult(
        metadata={"models": table(pd.DataFrame(rows)), "icons": len(icon_ids), "blank_drawings": len(blank)}
    )


def _embed_model(
    context: AssetExecutionContext,
    conn: psycopg.Connection,
    model_id: str,
    checkpoint: str,
    icon_ids: list[str],
    paths: list[str],
    groups: dict[str, str],
) -> dict:
    """One model's table: every icon's image embedding, written and swapped in; its metadata row."""
    settings = load_config().index
    bundle = load_checkpoint(checkpoint)

    def progress(done: int, total: int) -> None:
        if done == total or done % (settings.batch_size * 20) == 0:
            context.log.info(f"{model_id}: embedded {done}/{total} icons")

    # A frozen-trunk model finds the trunk features the training run stored for these files.
    embeddings, seconds = embed_image_files(
        bundle, paths, settings.batch_size, progress, cache_dir=asset_path("training_cache")
    )
    stats = write_embeddings(
        conn,
        model_id,
        icon_ids,
        [groups[i] for i in icon_ids],
        embeddings,
        hnsw_m=settings.hnsw_m,
        ef_construction=settings.ef_construction,
        # Relative to the data root: the registry outlives a moved data root.
        embedder_info={"checkpoint": to_relative(checkpoint), "dim": bundle.dim},
    )
    return {
        "model_id": model_id,
        "rows": stats.rows,
        "dim": bundle.dim,
        "embed_images_per_s": round(len(icon_ids) / seconds, 1) if seconds else 0.0,
        "table": stats.table_name,
        "checkpoint": str(checkpoint),
    }


INDEX_CHECK = "index_complete"


@asset_check(
    asset=icon_embeddings,
    name=INDEX_CHECK,
    description="Every model table holds exactly one row per rendered icon of the catalog (pixels: less "
    "the blank drawings) and has its HNSW index; counted in the database, not taken from the registry.",
)
def index_complete(postgres: PostgresResource) -> AssetCheckResult:
    catalog = {icon.icon_id for icon in read_catalog()}
    rendered = {row["icon_id"] for row in read_records(icon_images_path(), "icon images")}
    expected = rendered & catalog
    wanted = [*_configured_models(), PIXELS]
    problems: list[str] = []
    rows: list[dict] = []
    with postgres.connect(autocommit=True) as conn:
        tables = {t.model_id: t for t in index_inventory(conn) if t.row_kind == "icon"}
        for model_id in wanted:
            entry = tables.get(model_id)
            if entry is None or not entry.table_present:
                problems.append(f"{model_id}: no table in the index")
                continue
            stored = stored_icon_ids(conn, entry.table_name)
            missing, extra = expected - stored, stored - expected
            allowed = int(embedder_info(conn, PIXELS).get("blank", 0)) if model_id == PIXELS else 0
            if len(missing) > allowed:
                problems.append(
                    f"{model_id}: {entry.rows} rows for {len(expected)} icons, {len(missing)} missing "
                    f"(e.g. {', '.join(sorted(missing)[:3])})"
                )
            if extra:
                problems.append(
                    f"{model_id}: {len(extra)} row(s) for icons not in the catalog "
                    f"(e.g. {', '.join(sorted(extra)[:3])})"
                )
            if not entry.hnsw_indexes:
                problems.append(f"{model_id}: table {entry.table_name} has no HNSW index")
            rows.append(
                {
                    "model_id": model_id,
                    "rows": entry.rows,
                    "expected": len(expected) - allowed,
                    "missing": len(missing),
                    "extra": len(extra),
                    "hnsw_index": ", ".join(entry.hnsw_indexes) or "MISSING",
                }
            )
    unrendered = len(catalog - rendered)
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(problems)
        or f"{len(wanted)} model tables, each with a row per rendered catalog icon ({len(expected)}) "
        "and an HNSW index",
        metadata={
            "catalog_icons": len(catalog),
            "rendered_icons": len(expected),
            "not_rendered": unrendered,
            "tables": table(pd.DataFrame(rows)),
        },
    )


@asset(
    owners=OWNERS,
    tags=asset_tags("search", "index"),
    group_name="search",
    kinds={"postgres", "pgvector"},
    deps=["icon_captions", "training_pairs"],
    automation_condition=AutomationCondition.eager(),
)
def caption_embeddings(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """The `captions` channel: every icon's name, tags and captions embedded by the packaged
    sentence encoder (all-MiniLM-L6-v2), one pgvector row per text, swapped in atomically. Refreshed
    whenever icon_captions changes; only texts not embedded before cost a forward pass."""
    settings = load_config().index
    icon_ids, group_ids, texts = icon_texts()
    if not texts:
        raise ValueError("no icon has a name, tag or caption to embed: materialize icon_captions first")
    cache = for_writing(asset_path("caption_vectors"))
    vectors = cached_text_vectors(texts, cache, context.log.info)
    with postgres.connect(autocommit=True) as conn:
        stats = write_embeddings(
            conn,
            CAPTIONS,
            icon_ids,
            group_ids,
            vectors,
            hnsw_m=settings.hnsw_m,
            ef_construction=settings.ef_construction,
            embedder_info={"encoder": load_sentence_encoder().model_id, "texts": len(set(texts))},
            texts=texts,
        )
    per_icon = pd.Series(icon_ids).value_counts()
    sample = pd.DataFrame({"icon_id": icon_ids, "text": texts}).groupby("icon_id").head(3).head(30)
    return MaterializeResult(
        metadata={
            "rows": stats.rows,
            "icons": int(per_icon.size),
            "distinct_texts": len(set(texts)),
            "texts_per_icon_median": round(float(per_icon.median()), FLOAT_PLACES),
            "encoder": load_sentence_encoder().model_id,
            "table": stats.table_name,
            "sample": table(sample),
        }
    )


@asset(
    owners=OWNERS,
    tags=asset_tags("search", "index"),
    group_name="search",
    kinds={"postgres"},
    deps=[
        icon_embeddings,
        caption_embeddings,
        "exemplar_embeddings",
        "eval_set",
        "benchmark_queries",
        "corpus_pairs",
    ],
)
def search_fusion(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """How hybrid search weighs its channels, fitted on the frozen eval set and the corpus's held-out
    names and drawings (corpus_pairs), each source counting equally; never on the benchmark queries
    (the eval captions the benchmark reuses as text2img queries are left out): per query
    kind a weight for each channel (0 for one that does not help), the exact-name boost and variant
    folding; stored beside the index, used by every search."""
    config = load_config()
    fit_on = fitting_specs(config)
    specs = fit_on.specs
    with postgres.connect(autocommit=True) as conn, postgres.connections() as connections:
        channel_set = ChannelSet(conn, config.index.ef_search)
        available = [n for n in channel_set.available() if n != HYBRID]
        search = channel_set.hybrid(settings=FusionSettings({}, fitted={}), names=available)
        fit = fit_channels(search, available, specs, connections, context.log.info)
        settings, kinds = fit.settings, fit.kinds
        fitted = {
            **settings.fitted,
            "eval_set": fit_on.eval_path.name,
            "channels_without_data": sorted({CAPTIONS, PIXELS, EXEMPLARS} - set(available)),
            "eval_queries_held_back": fit_on.held_back,
        }
        settings = replace(settings, fitted=fitted)
        write_fusion_settings(conn, settings.to_json())
    rows = weight_rows(settings, fit.by_kind, FLOAT_PLACES)
    per_kind = settings.fitted.get("per_kind", {})
    metadata: dict = {
        "weights": table(pd.DataFrame(rows)),
        "name_boost": settings.name_boost,
        "fold_variants": settings.fold_variants,
        "fitting_queries": MetadataValue.json({k: v.get("queries", 0) for k, v in per_kind.items()}),
        "eval_queries_held_back": fit_on.held_back,
        "fitting_queries_by_source": table(
            pd.DataFrame(
                [{"source": spec["source"], "kind": kind} for spec, kind in zip(specs, kinds, strict=True)]
            )
            .value_counts()
            .reset_index(name="queries")
        ),
        "channels_without_data": MetadataValue.json(fitted["channels_without_data"]),
    }
    for kind, values in per_kind.items():
        metadata[f"fitted/{kind}/R@1"] = round(values["r1"], FLOAT_PLACES)
        metadata[f"fitted/{kind}/R@10"] = round(values["r10"], FLOAT_PLACES)
    return MaterializeResult(metadata=metadata)
