"""Turning domain results into Dagster metadata that people look at: tables and pictures."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import pandas as pd
from dagster import FloatMetadataValue, MetadataValue, TableColumn, TableRecord, TableSchema
from PIL import Image

# Floats in metadata are for people: 3 decimals (R@10 0.412, a loss 2.303).
FLOAT_PLACES = 3


def image_markdown(image: Image.Image | Path, title: str = "preview", max_width: int = 1000) -> MetadataValue:
    """A PNG embedded in markdown (a data URL), so the Dagster UI shows it inline."""
    if isinstance(image, Path):
        image = Image.open(image)
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def _cell(value: object) -> object:
    """A value the Dagster UI can show: NaN and None as empty (a NaN makes the UI print "Could not
    parse record" for the whole row), floats rounded to FLOAT_PLACES, anything else as text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return round(value, FLOAT_PLACES)
    return str(value)


def table(
    frame: pd.DataFrame, max_rows: int = 100, descriptions: dict[str, str] | None = None
) -> MetadataValue:
    """A DataFrame as Dagster table metadata (first `max_rows` rows); `descriptions`: what a column
    means, shown under "Show schema"."""
    frame = frame.head(max_rows)
    kinds = {"int64": "int", "float64": "float", "bool": "bool"}
    schema = TableSchema(
        columns=[
            TableColumn(str(c), kinds.get(str(frame[c].dtype), "string"), (descriptions or {}).get(str(c)))
            for c in frame.columns
        ]
    )
    records = [TableRecord({str(k): _cell(v) for k, v in row.items()}) for row in frame.to_dict("records")]
    return MetadataValue.table(records=records, schema=schema)


# Who to ask about an asset, and how to find it: shown on every asset in the UI and filterable
# in the asset catalog (owner:team:icon-platform, tag domain=...).
OWNERS = ["team:icon-platform"]


def asset_tags(domain: str, layer: str) -> dict[str, str]:
    """Tags every asset carries: its domain (icons, captions, dataset, model, search) and layer
    (ingest, train, index)."""
    return {"domain": domain, "layer": layer}


def rounded(metadata: dict, places: int = FLOAT_PLACES) -> dict:
    """`metadata` with plain float values (and float metadata values) rounded for people to read."""
    out = {}
    for key, value in metadata.items():
        if isinstance(value, FloatMetadataValue) and value.value is not None and math.isfinite(value.value):
            value = MetadataValue.float(round(value.value, places))
        elif isinstance(value, float) and math.isfinite(value):
            value = round(value, places)
        out[key] = value
    return out


def spread(count: int, wanted: int) -> list[int]:
    """`wanted` row positions spread evenly over `count` rows (all of them when fewer), first and
    last included: a sample of the whole batch, not its first rows."""
    if count <= wanted:
        return list(range(count))
    if wanted <= 1:
        return [0][:wanted]
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


def line_plot_markdown(points: list[tuple[float, float]], title: str, ylabel: str) -> MetadataValue | None:
    """A small line plot (e.g. the training loss per step) as an inline PNG; None without points."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 3), dpi=100)
    try:
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
        axes.set_xlabel("step")
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        pyplot.close(figure)
    buffer.seek(0)
    return image_markdown(Image.open(buffer), title)
