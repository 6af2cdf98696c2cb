"""The data files shipped inside the package (icon_pipeline/data/, icon_pipeline/prompts/): one way
to reach them, installed or from a checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_file(*parts: str) -> Path:
    """A file or folder under icon_pipeline/, e.g. package_file("data", "synonyms.json")."""
    return Path(str(resources.files("icon_pipeline").joinpath(*parts)))


def data_file(name: str) -> Path:
    """One of icon_pipeline/data/*.json."""
    return package_file("data", name)
