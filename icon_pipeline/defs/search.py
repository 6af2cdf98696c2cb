"""icon_embeddings, caption_embeddings, search_fusion and benchmark_report: the index, how hybrid
search merges its channels, and what it is worth."""

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from PIL import Image

from icon_pipeline.benchmark.report import BM25_BASELINE, PIXEL_BASELINE, TASKS, run_benchmark
from icon_pipeline.core.config import load_config
from icon_pipeline.core.frozen import read_frozen_jsonl
from icon_pipeline.core.storage import (
    asset_path,
    for_writing,
    icon_images_path,
    pairs_path,
    read_all_batches,
    read_catalog,
    read_checkpoint_pointer,
    read_records,
    resolved_rows,
    to_relative,
)
from icon_pipeline.dataset.grouping import icon_groups
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
from icon_pipeline.defs.metadata import FLOAT_PLACES, OWNERS, asset_tags, image_markdown, table
from icon_pipeline.defs.model import base_checkpoint, finetuned_checkpoint
from icon_pipeline.defs.resources.postgres import PostgresResource
from icon_pipeline.model.checkpoint import load_checkpoint
from icon_pipeline.model.embedding import embed_image_files
from icon_pipeline.model.sentence_encoder import load_sentence_encoder
from icon_pipeline.search.channels import CAPTIONS, PIXELS, RESERVED
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


def _icon_groups() -> dict[str, str]:
    """icon_id -> group_id; icons left out of training (no captions) are groups of their own."""
    images = read_records(icon_images_path(), "icon images")
    return icon_groups(read_records(pairs_path(), "training_pairs"), (row["icon_id"] for row in images))


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
    groups = _icon_groups()
    rows = []
    with postgres.connect(autocommit=True) as conn:
        for model_id, checkpoint in _configured_models().items():
            bundle = load_checkpoint(checkpoint)

            def progress(done: int, total: int, model_id: str = model_id) -> None:
                if done == total or done % (settings.batch_size * 20) == 0:
                    context.log.info(f"{model_id}: embedded {done}/{total} icons")

            embeddings, seconds = embed_image_files(bundle, paths, settings.batch_size, progress)
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


def icon_texts() -> tuple[list[str], list[str], list[str]]:
    """(icon ids, group ids, texts): every rendered icon's name, tags and captions (reviewers' edits
    applied; captions of an icon a reviewer rejected left out), one row per distinct text."""
    groups = _icon_groups()
    icons = [icon for icon in read_catalog() if icon.icon_id in groups]
    captions = read_all_batches("captions", sorted({icon.batch_key for icon in icons}))
    phrases: dict[str, list[str]] = {}
    for row in captions.itertuples():
        if not row.error and not bool(getattr(row, "rejected", False)):
            phrases[row.icon_id] = list(row.phrases)
    out_ids, out_groups, out_texts = [], [], []
    for icon in icons:
        texts = [
            icon.name.replace("-", " ").replace("_", " "),
            *map(str, icon.tags),
            *phrases.get(icon.icon_id, ()),
        ]
        for text in dict.fromkeys(" ".join(t.lower().split()) for t in texts):
            if text:
                out_ids.append(icon.icon_id)
                out_groups.append(groups[icon.icon_id])
                out_texts.append(text)
    return out_ids, out_groups, out_texts


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
    deps=[icon_embeddings, caption_embeddings, eval_set, benchmark_queries],
)
def search_fusion(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """How hybrid search weighs its channels, fitted on the frozen eval set (never on the benchmark
    queries: the eval captions the benchmark reuses as text2img queries are left out): per query
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
    specs = [spec for spec in specs if spec.get("text") not in benchmark_texts]
    with postgres.connect(autocommit=True) as conn, _search_connections(postgres) as connections:
        channel_set = ChannelSet(conn, config.index.ef_search)
        available = [n for n in channel_set.available() if n != HYBRID]
        search = channel_set.hybrid(settings=FusionSettings({}, fitted={}), names=available)
        objects = [
            spec["text"] if spec["kind"] == "text" else prepare_query_image(spec["image"]) for spec in specs
        ]
        context.log.info(f"fitting on {len(objects)} eval-set queries over channels {', '.join(available)}")
        results = search.gather(objects, available, connections=connections)
        fitting = [
            FittingQuery(
                fusion_kind(query),
                result.hits,
                frozenset(spec["relevant_groups"]),
                frozenset(spec["exclude"]),
                search.library.name_matches(query),
            )
            for spec, query, result in zip(specs, objects, results, strict=True)
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
        settings = FusionSettings(settings.weights, settings.name_boost, settings.fold_variants, fitted)
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
        "channels_without_data": MetadataValue.json(fitted["channels_without_data"]),
    }
    for kind, values in per_kind.items():
        metadata[f"fitted/{kind}/R@1"] = round(values["r1"], FLOAT_PLACES)
        metadata[f"fitted/{kind}/R@10"] = round(values["r10"], FLOAT_PLACES)
    return MaterializeResult(metadata=metadata)


@contextmanager
def _search_connections(postgres: PostgresResource) -> Iterator[list]:
    """One connection per core: thousands of searches (exact ones scan every row) run in parallel."""
    with ExitStack() as stack:
        yield [stack.enter_context(postgres.connect(autocommit=True)) for _ in range(os.cpu_count() or 1)]


BENCHMARK_CHECK = "finetuned_beats_base_and_baselines"
REGRESSION_CHECK = "no_regression_since_previous"
# An absolute drop in a recall figure that counts as a regression (below it: query noise).
REGRESSION_TOLERANCE = 0.02


@asset(
    owners=OWNERS,
    tags=asset_tags("search", "index"),
    group_name="search",
    kinds={"json", "markdown"},
    deps=[search_fusion, benchmark_queries],
    check_specs=[
        AssetCheckSpec(
            BENCHMARK_CHECK,
            asset="benchmark_report",
            description="the fine-tuned model beats its base on every task, and the trivial baselines",
        ),
        AssetCheckSpec(
            REGRESSION_CHECK,
            asset="benchmark_report",
            description=f"no headline figure (R@1, R@10 per task and search) dropped by more than "
            f"{REGRESSION_TOLERANCE} since the previous materialization; the first one passes with a note",
        ),
    ],
)
def benchmark_report(context: AssetExecutionContext, postgres: PostgresResource) -> MaterializeResult:
    """R@1/5/10/30 and mAP per task for hybrid search and each of its channels (exact beside HNSW),
    seen and held-out icons, BM25 and raw-pixel baselines, paired significance tests; as metadata
    and as files under data/reports/."""
    config = load_config()
    queries_path = frozen_file(QUERIES_NAME, config)
    queries = resolved_rows(read_frozen_jsonl(queries_path))
    images = {row["icon_id"]: row["png_path"] for row in read_records(icon_images_path(), "icon images")}
    # Read before this materialization is stored: the latest one is the previous.
    previous = context.instance.get_latest_materialization_event(context.asset_key)
    with postgres.connect(autocommit=True) as conn, _search_connections(postgres) as connections:
        channel_set = ChannelSet(conn, config.index.ef_search)
        search = channel_set.hybrid(names=[n for n in channel_set.available() if n != HYBRID])
        report = run_benchmark(queries, search, _icon_groups(), icon_images=images, connections=connections)
    out_dir = asset_path("reports")
    json_path = for_writing(asset_path("benchmark_json"))
    markdown_path = asset_path("benchmark_markdown")
    report.write_json(json_path)
    markdown = report.to_markdown()
    markdown_path.write_text(markdown)
    plots = report.plots(out_dir)
    flat = pd.DataFrame(report.to_json()["rows"])
    headline = flat[flat["subset"] == "all"] if "subset" in flat else flat
    metadata: dict = {
        "queries": len(queries),
        "queries_file": queries_path.name,
        "query_counts": MetadataValue.json(report.query_counts),
        "report": MetadataValue.md(markdown),
        "results": table(headline, max_rows=80),
        "comparisons": table(pd.DataFrame([c.as_dict() for c in report.comparisons])),
        "json": MetadataValue.path(str(json_path)),
        "markdown": MetadataValue.path(str(markdown_path)),
        "failures": len(report.failures),
        "warnings": MetadataValue.json(report.warnings),
    }
    # Numeric headline figures: the UI plots each across materializations.
    for row in report.headline():
        if row["model"] in (HYBRID, BM25_BASELINE, PIXEL_BASELINE, "finetuned", "base"):
            for metric in ("R@1", "R@10"):
                if row[metric] is not None and math.isfinite(row[metric]):
                    metadata[f"{row['model']}/{row['task']}/{metric}"] = round(
                        float(row[metric]), FLOAT_PLACES
                    )
    for plot in plots:
        metadata[f"plot_{plot.stem}"] = image_markdown(plot, plot.stem)
    context.log.info(f"benchmark written to {out_dir}: {json.dumps([p.name for p in plots])}")
    regression = _regression_check(previous, metadata)
    return MaterializeResult(metadata=metadata, check_results=[_finetuned_check(report), regression])


def _headline_figures(metadata: dict) -> dict[str, float]:
    """{"hybrid/text2img/R@10": 0.8, ...}: the numeric headline entries of a report's metadata."""
    figures = {}
    for key, value in metadata.items():
        value = getattr(value, "value", value)
        if key.count("/") == 2 and key.rsplit("/", 1)[1].startswith("R@") and isinstance(value, int | float):
            figures[key] = float(value)
    return figures


def _regression_check(previous, metadata: dict) -> AssetCheckResult:
    """WARN naming every headline figure that dropped beyond REGRESSION_TOLERANCE since the previous
    materialization (same frozen queries); the first materialization passes with a note."""
    current = _headline_figures(metadata)
    materialization = previous.asset_materialization if previous else None
    if materialization is None:
        return AssetCheckResult(
            check_name=REGRESSION_CHECK,
            passed=True,
            description="first materialization: nothing to compare with yet",
            metadata={"previous_run": "none"},
        )
    before = _headline_figures(dict(materialization.metadata))
    old_file = materialization.metadata.get("queries_file")
    if old_file is not None and str(old_file.value) != metadata["queries_file"]:
        return AssetCheckResult(
            check_name=REGRESSION_CHECK,
            passed=True,
            description=f"the previous report used other queries ({old_file.value}, now "
            f"{metadata['queries_file']}): figures are not comparable",
            metadata={"previous_run": previous.run_id},
        )
    drops, compared = [], []
    for key in sorted(set(current) & set(before)):
        model, task, metric = key.split("/")
        change = current[key] - before[key]
        compared.append(
            {"task": task, "search": model, "metric": metric, "previous": before[key], "now": current[key]}
        )
        if change < -REGRESSION_TOLERANCE:
            drops.append(f"{task} {model} {metric} {before[key]:.3f} -> {current[key]:.3f}")
    return AssetCheckResult(
        check_name=REGRESSION_CHECK,
        passed=not drops,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"dropped since the previous materialization (tolerance {REGRESSION_TOLERANCE}): "
            + "; ".join(drops)
            if drops
            else f"no figure dropped by more than {REGRESSION_TOLERANCE} ({len(compared)} compared)"
        ),
        metadata={
            "previous_run": previous.run_id,
            "dropped": MetadataValue.json(drops),
            "compared": table(pd.DataFrame(compared)),
        },
    )


def _finetuned_check(report) -> AssetCheckResult:
    """WARN, in plain words, wherever the fine-tuned model does not beat its base or a baseline."""
    shortfalls, figures = [], {}
    for task in TASKS:
        try:
            tuned = report.row(task, "finetuned", "hnsw").recall[10]
        except KeyError:
            continue
        rivals = {"base": ("base", "hnsw")}
        rivals.update(
            {PIXEL_BASELINE: (PIXEL_BASELINE, "numpy")}
            if task == "img2img"
            else {BM25_BASELINE: (BM25_BASELINE, "lexical")}
        )
        for label, (model, mode) in rivals.items():
            try:
                other = report.row(task, model, mode).recall[10]
            except KeyError:
                continue
            figures[f"{task}: finetuned vs {label}"] = f"{tuned:.3f} vs {other:.3f}"
            if not tuned > other:
                shortfalls.append(
                    f"{task}: the fine-tuned model's R@10 {tuned:.3f} does not beat {label}'s {other:.3f}"
                )
    return AssetCheckResult(
        check_name=BENCHMARK_CHECK,
        passed=not shortfalls,
        severity=AssetCheckSeverity.WARN,
        description="; ".join(shortfalls)
        or "the fine-tuned model beats its base and the baselines on every task",
        metadata={"R@10 (HNSW)": MetadataValue.json(figures)},
    )
