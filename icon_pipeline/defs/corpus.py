"""icon_corpus and corpus_pairs: other open icon sets' drawings and names, as training data."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from icon_pipeline.core.config import load_config
from icon_pipeline.core.storage import (
    asset_path,
    for_writing,
    read_records,
    render_root,
    write_table,
)
from icon_pipeline.dataset.corpus import (
    EXEMPLAR_COLUMNS,
    FITTING_COLUMNS,
    PAIR_COLUMNS,
    build_corpus,
    corpus_summary,
)
from icon_pipeline.dataset.leaks import training_leaks
from icon_pipeline.defs.metadata import OWNERS, asset_tags, image_markdown, spread, table
from icon_pipeline.defs.partitions import corpus_sets
from icon_pipeline.library.catalog import read_catalog
from icon_pipeline.library.sources.icon_sets import (
    IconSetError,
    drawing_record,
    icon_set,
    read_icon_set,
)
from icon_pipeline.render.rasterize import RenderSettings, RenderStore, preview_grid, render_batch

PREVIEW_DRAWINGS = 60
CORPUS_COLUMNS = [
    "drawing_id",
    "set",
    "name",
    "style",
    "aliases",
    "tags",
    "category",
    "file_path",
    "content_hash",
    "png_path",
]


@asset(
    group_name="corpus",
    kinds={"svg", "png", "parquet"},
    partitions_def=corpus_sets,
    owners=OWNERS,
    tags={**asset_tags("corpus", "ingest"), "icon_pipeline/partial_ok": "true"},
)
def icon_corpus(context: AssetExecutionContext) -> MaterializeResult:
    """One open icon set (a pinned npm package) as training data: every drawing of its configured
    styles, rendered with the library's render settings, with the names, aliases and tags people
    gave it. A set that is not fetched or not readable fails its own partition with the reason; the
    model then trains without it."""
    config = load_config()
    name = context.partition_key
    try:
        spec = icon_set(name, role="corpus")
        drawings = read_icon_set(
            spec, asset_path("icon_set_versions", set=name).parent, tuple(config.corpus.styles.get(name, ()))
        )
    except IconSetError as exc:
        raise Failure(description=str(exc)) from None
    if config.corpus.limit:
        kept = set(sorted({d.name for d in drawings})[: config.corpus.limit])
        drawings = [d for d in drawings if d.name in kept]
    records = [(drawing_record(d), d) for d in drawings]
    settings = RenderSettings.from_config(config.render)
    result = render_batch([r for r, _ in records], settings, RenderStore(render_root()), workers=None)
    outcomes = result.by_icon()
    rows = []
    for record, drawing in records:
        outcome = outcomes[record.icon_id]
        rows.append(
            {
                "drawing_id": record.icon_id,
                "set": name,
                "name": drawing.name,
                "style": drawing.style,
                "aliases": list(drawing.aliases),
                "tags": list(drawing.tags),
                "category": drawing.category,
                "file_path": record.file_path,
                "content_hash": record.content_hash,
                "png_path": outcome.png_path if outcome.status != "failed" else "",
            }
        )
    frame = pd.DataFrame(rows, columns=CORPUS_COLUMNS)
    write_table(frame, for_writing(asset_path("corpus_set", set=name)))
    failed = [o for o in result.outcomes if o.status == "failed"]
    for outcome in failed[:10]:
        context.log.warning(f"{name}: {outcome.icon_id} did not render: {outcome.reason}")
    ok = frame[frame["png_path"] != ""]
    sample = ok.iloc[spread(len(ok), PREVIEW_DRAWINGS)]
    metadata: dict = {
        "set": name,
        "package": f"{spec.package}@{spec.version}",
        "licence": spec.licence,
        "credit": spec.credit,
        "drawings": len(frame),
        "concepts": int(frame["name"].nunique()),
        "with_aliases_or_tags": int(((frame["aliases"].map(len) + frame["tags"].map(len)) > 0).sum()),
        "rendered": result.rendered,
        "cached": result.cached,
        "failed": len(failed),
        "per_style": table(frame.groupby("style").size().reset_index(name="drawings")),
        "failures": table(pd.DataFrame([{"drawing": o.icon_id, "reason": o.reason} for o in failed])),
    }
    if len(sample):
        grid = preview_grid(list(sample["png_path"]), columns=10, cell=96, labels=list(sample["name"]))
        grid.save(for_writing(asset_path("corpus_preview", set=name)))
        metadata["preview"] = image_markdown(grid, f"{name}: {len(sample)} of {len(ok)} drawings")
    return MaterializeResult(metadata=metadata)


LEAK_CHECK = "no_benchmark_or_banned_set_in_training"


@asset(
    group_name="corpus",
    kinds={"parquet"},
    deps=[icon_corpus, "training_pairs"],
    owners=OWNERS,
    tags=asset_tags("corpus", "train"),
    check_specs=[
        AssetCheckSpec(
            LEAK_CHECK,
            asset="corpus_pairs",
            description="no drawing or text of an external benchmark set (Phosphor, Font Awesome), of "
            "Lucide or of Feather is in any training table: every trained set is a corpus set, and no "
            "trained drawing is a copy of a benchmark set's drawing",
        )
    ],
)
def corpus_pairs(context: AssetExecutionContext) -> MaterializeResult:
    """The corpus as training groups: drawings of one concept across sets form a group, and a concept
    that names a library icon joins that icon's group (cross-style positives). The corpus drawings
    and names of `corpus.fit_share` of those library groups are held out as fitting queries for
    hybrid search; the library's held-out groups stay unseen. Every other drawing of a library
    concept is an exemplar for the `exemplars` search channel (exemplar_embeddings)."""
    config = load_config()
    available = [s for s in config.corpus.sets if asset_path("corpus_set", set=s).exists()]
    missing = sorted(set(config.corpus.sets) - set(available))
    for name in missing:
        context.log.warning(f"corpus set {name} has no icon_corpus table (its partition failed?): left out")
    drawings = [row for name in available for row in read_records(asset_path("corpus_set", set=name), name)]
    pairs = read_records(asset_path("training_pairs"), "training_pairs")
    group_of = {m: p["group_id"] for p in pairs for m in p["members"]}
    split_of = {p["group_id"]: p["split"] for p in pairs}
    catalog = read_catalog()
    names = {icon.icon_id: icon.name for icon in catalog}
    build = build_corpus(
        drawings, names, group_of, split_of, fit_share=config.corpus.fit_share, seed=config.corpus.seed
    )
    write_table(pd.DataFrame(build.pairs, columns=list(PAIR_COLUMNS)), asset_path("corpus_pairs"))
    write_table(pd.DataFrame(build.fitting, columns=list(FITTING_COLUMNS)), asset_path("corpus_fitting"))
    write_table(pd.DataFrame(build.exemplars, columns=list(EXEMPLAR_COLUMNS)), asset_path("corpus_exemplars"))
    trained_pngs = {path for pair in build.pairs for path in pair["png_paths"]}
    trained = {d["content_hash"]: d["drawing_id"] for d in drawings if d["png_path"] in trained_pngs}
    trained.update({i.content_hash: i.icon_id for i in catalog if i.icon_id in group_of})
    leaks = training_leaks(trained, available, asset_path("icon_set_versions", set="x").parent)
    check = AssetCheckResult(
        check_name=LEAK_CHECK,
        passed=not leaks,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(leaks[:5])
        or f"{len(build.pairs)} training groups from {', '.join(available) or 'no set'}: no benchmark, "
        "Lucide or Feather drawing or text",
    )
    per_set = pd.DataFrame([{"set": s, **counts} for s, counts in build.per_set.items()])
    cross = [p for p in build.pairs if len(p["sets"]) > 1 or p["linked"]][:8]
    metadata: dict = {
        **corpus_summary(build),
        "sets": MetadataValue.json(available),
        "sets_missing": MetadataValue.json(missing),
        "per_set": table(per_set),
        "path": MetadataValue.path(str(asset_path("corpus_pairs"))),
    }
    if cross:
        paths = [p for group in cross for p in group["png_paths"][:8]]
        labels = [
            group["group_id"].removeprefix("corpus:")[:18] for group in cross for _ in group["png_paths"][:8]
        ]
        metadata["cross_style_groups"] = image_markdown(
            preview_grid(paths, columns=8, cell=96, labels=labels), "one concept, several sets"
        )
    return MaterializeResult(metadata=metadata, check_results=[check])
