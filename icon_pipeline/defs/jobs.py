"""Named jobs: the three stages of the pipeline as people launch and find them in the UI (Jobs
list, Overview timeline). `icon-pipeline demo` and `materialize` run each stage through the job
that holds it, so their runs are listed under these names too."""

from dagster import AssetSelection, define_asset_job

ingest_job = define_asset_job(
    "ingest_job",
    selection=AssetSelection.assets("icon_catalog", "rendered_icons", "icon_lexicon", "icon_captions"),
    description="Scan the icon sources into the catalog, then render and caption one icon batch "
    "(partition: icon_batches, inferred from its assets); the catalog and lexicon are library-wide.",
    tags={"stage": "ingest"},
)

corpus_job = define_asset_job(
    "corpus_job",
    selection=AssetSelection.assets("icon_corpus"),
    description="Read and render one open icon set of the training corpus (partition: the set); a set "
    "that cannot be read fails its own partition and the model trains without it.",
    tags={"stage": "ingest"},
)

train_job = define_asset_job(
    "train_job",
    selection=AssetSelection.assets(
        "training_pairs",
        "corpus_pairs",
        "eval_set",
        "benchmark_queries",
        "base_checkpoint",
        "finetuned_checkpoint",
    ),
    description="Group the captioned icons into training pairs, join the corpus's concepts to them, "
    "freeze the eval set and benchmark queries, build the base checkpoint and fine-tune it with torchrun.",
    tags={"stage": "train"},
)

index_job = define_asset_job(
    "index_job",
    selection=AssetSelection.assets(
        "icon_embeddings",
        "caption_embeddings",
        "exemplar_embeddings",
        "search_fusion",
        "external_benchmark",
        "benchmark_report",
    ),
    description="Embed every icon (one pgvector HNSW table per model), every caption and the corpus's "
    "drawings of the library's concepts, fit the hybrid "
    "search fusion, then benchmark search on other icon sets' tags and drawings (external) and on the "
    "frozen queries (internal).",
    tags={"stage": "index"},
)

JOBS = [ingest_job, corpus_job, train_job, index_job]
