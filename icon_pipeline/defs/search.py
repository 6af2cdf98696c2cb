"""icon_embeddings, caption_embeddings, search_fusion and benchmark_report: the index, how hybrid
search merges its channels, and what it is worth."""

import math
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
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
from PIL import Image

from icon_pipeline.core.config import load_config
from icon_pipeline.core.frozen import read_frozen_jsonl
from icon_pipeline.core.storage import (
    asset_path,
    for_writing,
    icon_images_path,
    read_catalog,
    read_checkpoint_pointer,
    read_records,
    to_relative,
)
from icon_pipeline.dataset.grouping import library_groups
from icon_pipeline.dataset.queries import fitting_queries, group_terms
from icon_pipeline.defs.captions import icon_captions
from icon_pipeline.defs.dataset import (
    EVAL_NAME,
    QUERIES_NAME,
    benchmark_queries,
    eval_set,
    frozen_file,
    load_groups,
    training_pairs,
)
from icon_pipeline.defs.metadata import FLOAT_PLACES, OWNERS, asset_tags, table
from icon_pipeline.defs.model import base_checkpoint, finetuned_checkpoint
from icon_pipeline.defs.resources.postgres import PostgresResource
from icon_pipeline.model.checkpoint import load_checkpoint
from icon_pipeline.model.embedding import embed_image_files
from icon_pipeline.model.sentence_encoder import load_sentence_encoder
from icon_pipeline.search.channels import CAPTIONS, PIXELS, RESERVED
from icon_pipeline.search.confidence import ink_share, no_answer_queries
from icon_pipeline.search.fusion import (
    KINDS,
    FittingQuery,
    FusionSettings,
    channel_kind,
    fit_fusion,
    fusion_kind,
)
from icon_pipeline.search.hybrid import HYBRID
from icon_pipeline.search.index import embedder_info, write_embeddings, write_fusion_settings
from icon_pipeline.search.inventory import index_inventory, stored_icon_ids
from icon_pipeline.search.pixels import pixel_vector
from icon_pipeline.search.query import prepare_query_image
from icon_pipeline.search.service import ChannelSet
from icon_pipeline.search.texts import icon_texts


def _configured_models() -> dict[str, str]:
    """model id -> checkpoint: base, fine-tuned, and any extra checkpoint dirs from the config."""
    models = {
        "base": read_checkpoint_pointer("base", "base_checkpoint")["path"],
        "finetuned": read_checkpoint_pointer("finetuned", "finetuned_checkpoint")["path"],
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
    deps=[base_checkpoint, finetuned_checkpoint, training_pairs],
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
            bundle = load_checkpoint(checkpoint)

            def progress(done: int, total: int, model_id: str = model_id) -> None:
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
            rows.append(
                {
                    "model_id": model_id,
                    "rows": stats.rows,
                    "dim": bundle.dim,
                    "embed_images_per_s": round(len(icon_ids) / seconds, 1) if seconds else 0.0,
                    "table": stats.table_name,
                    "checkpoint": str(checkpoint),
                }
            )
        vectors, kept, blank = [], [], []
        for icon_id, path in zip(icon_ids, paths, strict=True):
            with Image.open(path) as image:
                vector = pixel_vector(image)
            (kept if vector.any() else blank).append(icon_id)
            if vector.any():
                vectors.append(vector)
        stats = write_embeddings(
            conn,
            PIXELS,
            kept,
            [groups[i] for i in kept],
            np.stack(vectors),
            hnsw_m=settings.hnsw_m,
            ef_construction=settings.ef_construction,
            embedder_info={"method": "normalised drawing, 32x32 grayscale (pixels.py)", "blank": len(blank)},
        )
        rows.append({"model_id": PIXELS, "rows": stats.rows, "dim": stats.dim, "table": stats.table_name})
    if blank:
        context.log.warning(f"{len(blank)} icon(s) render blank and have no pixels row, e.g. {blank[:5]}")
    return MaterializeResult(
        metadata={"models": table(pd.DataFrame(rows)), "icons": len(icon_ids), "blank_drawings": len(blank)}
    )


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


def _cached_text_vectors(texts: list[str], cache: Path, context: AssetExecutionContext) -> np.ndarray:
    """Sentence vectors for `texts`, computing only those not in the cache file (keyed by text)."""
    encoder = load_sentence_encoder()
    known: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["model"]) == encoder.model_id:
                known = dict(zip(stored["texts"].tolist(), stored["vectors"], strict=True))
    missing = sorted(set(texts) - set(known))
    if missing:
        context.log.info(f"embedding {len(missing)} new texts with {encoder.model_id} ({len(known)} cached)")
        for start in range(0, len(missing), 2048):
            chunk = missing[start : start + 2048]
            known.update(zip(chunk, encoder.embed(chunk), strict=True))
            context.log.info(f"embedded {min(start + 2048, len(missing))}/{len(missing)} texts")
        ordered = sorted(known)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
        os.close(fd)
        np.savez(
            tmp,
            model=encoder.model_id,
            texts=np.array(ordered),
            vectors=np.stack([known[t] for t in ordered]),
        )
        os.replace(tmp, cache)
    return np.stack([known[t] for t in texts])


@asset(
    owners=OWNERS,
    tags=asset_tags("search", "index"),
    group_name="search",
    kinds={"postgres", "pgvector"},
    deps=[icon_captions, training_pairs],
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
    vectors = _cached_text_vectors(texts, cache, context)
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
    deps=[icon_embeddings, caption_embeddings, eval_set, benchmark_queries, "corpus_pairs"],
)
def search_fusion(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """How hybrid search weighs its channels, fitted on the frozen eval set and the corpus's held-out
    names and drawings (corpus_pairs), each source counting equally; never on the benchmark queries
    (the eval captions the benchmark reuses as text2img queries are left out): per query
    kind a weight for each channel (0 for one that does not help), the exact-name boost and variant
    folding; stored beside the index, used by every search."""
    config = load_config()
    eval_path = frozen_file(EVAL_NAME, config)
    groups, _, images = load_groups()
    terms = (
        group_terms(groups, {i.icon_id: i.tags for i in read_catalog()})
        if config.queries.version >= 2
        else None
    )
    specs = fitting_queries(read_frozen_jsonl(eval_path), groups, images, seed=config.eval.seed, terms=terms)
    queries_path = frozen_file(QUERIES_NAME, config)
    benchmark_texts = {row["text"] for row in read_frozen_jsonl(queries_path) if row.get("text")}
    held_back = sum(1 for spec in specs if spec.get("text") in benchmark_texts)
    specs = [{**spec, "source": "eval_set"} for spec in specs if spec.get("text") not in benchmark_texts]
    specs += corpus_fitting_specs()
    specs += [
        {
            "kind": "text" if isinstance(query, str) else "image",
            **({"text": query} if isinstance(query, str) else {"image": query}),
            "relevant_groups": [],
            "exclude": [],
            "source": "no_answer",
        }
        for query in no_answer_queries(config.eval.seed)
    ]
    with postgres.connect(autocommit=True) as conn, postgres.connections() as connections:
        channel_set = ChannelSet(conn, config.index.ef_search)
        available = [n for n in channel_set.available() if n != HYBRID]
        search = channel_set.hybrid(settings=FusionSettings({}, fitted={}), names=available)
        objects = [
            spec["text"] if spec["kind"] == "text" else prepare_query_image(spec["image"]) for spec in specs
        ]
        context.log.info(
            f"fitting on {len(objects)} eval-set and corpus queries over channels {', '.join(available)}"
        )
        results = search.gather(objects, available, connections=connections)
        kinds = [fusion_kind(query) for query in objects]
        shares = source_shares([(kind, spec["source"]) for kind, spec in zip(kinds, specs, strict=True)])
        fitting = [
            FittingQuery(
                kind,
                result.hits,
                frozenset(spec["relevant_groups"]),
                frozenset(spec["exclude"]),
                search.library.name_matches(query),
                weight=shares[(kind, spec["source"])],
                protected=spec["source"] == "eval_set",
                match_levels=search.library.match_levels(query),
                ink=ink_share(query),
            )
            for kind, spec, query, result in zip(kinds, specs, objects, results, strict=True)
        ]
        by_kind = {
            kind: [n for n in available if channel_kind(kind) in search.channels[n].kinds] for kind in KINDS
        }
        settings = fit_fusion(fitting, by_kind, search.library.group_of)
        fitted = {
            **settings.fitted,
            "eval_set": eval_path.name,
            "channels_without_data": sorted({CAPTIONS, PIXELS} - set(available)),
            "eval_queries_held_back": held_back,
        }
        settings = replace(settings, fitted=fitted)
        write_fusion_settings(conn, settings.to_json())
    rows = []
    for kind in KINDS:
        alone = settings.fitted["single_channels"].get(kind, {})
        for channel in by_kind.get(kind, []):
            weight = settings.weights.get(kind, {}).get(channel, 0.0)
            rows.append(
                {
                    "kind": kind,
                    "channel": channel,
                    "weight": weight,
                    "alone_R@1": round(alone.get(channel, {}).get("r1", math.nan), FLOAT_PLACES),
                    "alone_R@10": round(alone.get(channel, {}).get("r10", math.nan), FLOAT_PLACES),
                    "note": "does not help: weight 0" if weight == 0 else "",
                }
            )
    per_kind = settings.fitted.get("per_kind", {})
    metadata: dict = {
        "weights": table(pd.DataFrame(rows)),
        "name_boost": settings.name_boost,
        "fold_variants": settings.fold_variants,
        "fitting_queries": MetadataValue.json({k: v.get("queries", 0) for k, v in per_kind.items()}),
        "eval_queries_held_back": held_back,
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


def corpus_fitting_specs() -> list[dict]:
    """The corpus's held-out names and drawings (corpus_pairs) as fitting queries: how people other
    than the project name and draw the library's concepts. Empty without a corpus."""
    path = asset_path("corpus_fitting")
    if not path.exists():
        return []
    return [
        {
            "kind": row["kind"],
            **({"text": row["text"]} if row["kind"] == "text" else {"image": row["image_path"]}),
            "relevant_groups": list(row["relevant_groups"]),
            "exclude": [],
            "source": "corpus",
        }
        for row in read_records(path, "corpus fitting queries")
    ]


def source_shares(keys: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """(fusion kind, source) -> each query's weight, so that every source of a kind counts equally
    in the fit however many queries it has (the eval set's captions and the corpus's names)."""
    counts: dict[tuple[str, str], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    sources_per_kind: dict[str, int] = {}
    for kind, _ in counts:
        sources_per_kind[kind] = sources_per_kind.get(kind, 0) + 1
    totals = {kind: sum(n for (k, _), n in counts.items() if k == kind) for kind in sources_per_kind}
    return {
        (kind, source): totals[kind] / (sources_per_kind[kind] * n) for (kind, source), n in counts.items()
    }
