"""icon_lexicon: search terms mined from every icon's name and tags, with library statistics."""

import pandas as pd
from dagster import AssetExecutionContext, AutomationCondition, MaterializeResult, MetadataValue, asset

from icon_pipeline.assets.catalog import icon_catalog
from icon_pipeline.assets.metadata import table
from icon_pipeline.lexicon import TEXT_LLM_MIN_USEFUL_TOKENS, NameItem, mine_lexicon
from icon_pipeline.tables import data_path, lexicon_path, read_catalog, write_table


@asset(
    group_name="captions",
    kinds={"parquet"},
    deps=[icon_catalog],
    automation_condition=AutomationCondition.eager(),
)
def icon_lexicon(context: AssetExecutionContext) -> MaterializeResult:
    """Phrases and tokens per icon; boilerplate affixes found by statistics over the library."""
    icons = read_catalog()
    lexicon = mine_lexicon([NameItem.from_icon(icon) for icon in icons])
    records = lexicon.to_records()
    write_table(pd.DataFrame(records), lexicon_path())
    boilerplate = pd.DataFrame(
        sorted(lexicon.boilerplate.items(), key=lambda kv: -kv[1]), columns=["word", "share_of_names"]
    )
    write_table(boilerplate, data_path("lexicon", "boilerplate.parquet"))
    for key, reason in list(lexicon.failures.items())[:20]:
        context.log.warning(f"lexicon: {key}: {reason}")

    entries = list(lexicon.entries.values())
    useful = pd.Series([e.useful_token_count for e in entries], dtype="int64")
    to_vision = int((useful < TEXT_LLM_MIN_USEFUL_TOKENS).sum())
    dropped = pd.Series([reason for e in entries for _, reason in e.dropped], dtype="string")
    sample = pd.DataFrame(
        [
            {
                "name": e.name,
                "terms": ", ".join(e.terms),
                "tag_terms": ", ".join(e.tag_terms[:8]),
                "useful": e.useful_token_count,
                "dropped": ", ".join(f"{t} ({r})" for t, r in e.dropped[:4]),
            }
            for e in entries[:: max(1, len(entries) // 40)]
        ]
    )
    reasons = (
        dropped.str.replace(r" \(.*\)$", "", regex=True).value_counts().rename_axis("reason").reset_index()
    )
    return MaterializeResult(
        metadata={
            "icons": len(entries),
            "lexicon_version": lexicon.version(),
            "vocabulary_size": len(lexicon.vocabulary),
            "routed_to_vision_share": round(to_vision / len(entries), 4) if entries else 0.0,
            "useful_tokens_histogram": table(
                useful.value_counts().sort_index().rename_axis("useful_tokens").reset_index(name="icons")
            ),
            "boilerplate": table(boilerplate, max_rows=30),
            "dropped_reasons": table(reasons),
            "sample": table(sample),
            "failures": len(lexicon.failures),
            "path": MetadataValue.path(str(lexicon_path())),
        }
    )
