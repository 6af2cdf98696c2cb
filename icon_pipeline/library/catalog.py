"""The catalog table: one row per `IconRecord`, stored where core/storage.py says (`catalog_path`)."""

from __future__ import annotations

from pathlib import Path

from icon_pipeline.core.storage import catalog_path, read_table, write_table
from icon_pipeline.library.records import IconRecord


def read_catalog() -> list[IconRecord]:
    frame = read_table(catalog_path(), "icon_catalog")
    return [IconRecord.from_row(row) for row in frame.to_dict("records")]


def write_catalog(icons: list[IconRecord]) -> Path:
    import pandas as pd

    frame = pd.DataFrame([icon.to_row() for icon in icons], columns=list(IconRecord.__dataclass_fields__))
    return write_table(frame, catalog_path())
