"""icon_pipeline.yaml: valid configs load; bad ones name the file, the line and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from icon_pipeline.core.config import ConfigError, LocalSource, load_config, parse_config
from icon_pipeline.core.paths import REPO_ROOT


def test_the_shipped_config_is_valid() -> None:
    config = load_config(REPO_ROOT / "icon_pipeline.yaml")
    assert [s.kind for s in config.sources] == ["tabler"]
    assert config.render.size == 224


def test_all_three_source_kinds_and_relative_paths(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    text = (
        "sources:\n  - kind: tabler\n  - kind: local\n    path: icons\n"
        "  - kind: figma\n    file_keys: [AbC]\n"
    )
    config = parse_config(text, file)
    local = config.sources[1]
    assert isinstance(local, LocalSource) and local.path == tmp_path / "icons"
    assert config.sources[2].file_keys == ["AbC"]


def test_unknown_source_kind_names_file_line_and_allowed_kinds(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    with pytest.raises(ConfigError) as excinfo:
        parse_config("sources:\n  - kind: tabler\n  - kind: dropbox\n    path: x\n", file)
    message = str(excinfo.value)
    assert f"{file}:3" in message
    assert "dropbox" in message and "tabler, local, figma" in message


def test_unknown_key_and_wrong_type_are_located(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    with pytest.raises(ConfigError) as excinfo:
        parse_config("sources:\n  - kind: tabler\nrender:\n  size: huge\n  colour: red\n", file)
    message = str(excinfo.value)
    assert f"{file}:4: render.size" in message
    assert f"{file}:5: render.colour: unknown key" in message


def test_malformed_yaml_and_missing_sources(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    with pytest.raises(ConfigError, match=r"c\.yaml:2: not valid YAML"):
        parse_config("sources:\n\t- kind: tabler\n", file)
    with pytest.raises(ConfigError, match="sources"):
        parse_config("render:\n  size: 64\n", file)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_repeated_source_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="repeated: tabler"):
        parse_config("sources:\n  - kind: tabler\n  - kind: tabler\n", tmp_path / "c.yaml")
