"""Turning domain results into Dagster metadata that people look at: tables and pictures."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import pandas as pd
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema
from PIL import Image


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
    parse record" for the whole row), floats rounded to 4 places, anything else as text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return round(value, 4)
    return str(value)


def table(frame: pd.DataFrame, max_rows: int = 100) -> MetadataValue:
    """A DataFrame as Dagster table metadata (first `max_rows` rows)."""
    frame = frame.head(max_rows)
    kinds = {"int64": "int", "float64": "float", "bool": "bool"}
    schema = TableSchema(
        columns=[TableColumn(str(c), kinds.get(str(frame[c].dtype), "string")) for c in frame.columns]
    )
    records = [TableRecord({str(k): _cell(v) for k, v in row.items()}) for row in frame.to_dict("records")]
    return MetadataValue.table(records=records, schema=schema)
