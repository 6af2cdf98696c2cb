"""icon_pipeline.yaml: valid configs load; bad ones name the file, the line and what is allowed."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from icon_pipeline.core.config import ConfigError, LocalSource, TrainingConfig, load_config, parse_config
from icon_pipeline.core.paths import REPO_ROOT
from icon_pipeline.dataset.augment import AugmentConfig
from icon_pipeline.model.training.config import TrainConfig, train_config_from_pipeline


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


def test_augmentation_is_one_settings_object_from_the_yaml_into_the_training_job(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    text = (
        "sources:\n  - kind: tabler\ntraining:\n  max_steps: 7\n  augmentation:\n"
        "    p_crop: 0.1\n    blur_radius: [0.2, 0.4]\n"
    )
    config = parse_config(text, file)
    augmentation = config.training.augmentation
    assert augmentation == AugmentConfig(p_crop=0.1, blur_radius=(0.2, 0.4))
    train = train_config_from_pipeline(config, base_checkpoint="b", pairs_path="p", output_dir="o")
    assert train.augmentation is augmentation and train.max_steps == 7
    # Through the JSON file the job reads, unchanged.
    assert TrainConfig.load(train.write(tmp_path / "train.json")).augmentation == augmentation


def test_the_yaml_paths_augmentation_defaults_are_the_classes_own(tmp_path: Path) -> None:
    config = parse_config("sources:\n  - kind: tabler\n", tmp_path / "c.yaml")
    assert config.training.augmentation == AugmentConfig()
    assert (AugmentConfig().p_crop, AugmentConfig().p_shift) == (0.3, 0.2)
    shipped = load_config(REPO_ROOT / "icon_pipeline.yaml").training.augmentation
    assert shipped == AugmentConfig()  # the shipped file spells out the defaults


def test_bad_augmentation_settings_are_located(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    text = "sources:\n  - kind: tabler\ntraining:\n  augmentation:\n    p_blur: 2\n"
    with pytest.raises(
        ConfigError, match=rf"{file}:4: training.augmentation: .*p_blur must be a probability"
    ):
        parse_config(text, file)
    with pytest.raises(ConfigError, match=rf"{file}:5: training.augmentation.p_blr: unknown key"):
        parse_config(text.replace("p_blur", "p_blr"), file)


def test_every_training_setting_is_carried_into_the_job_under_its_own_name() -> None:
    job_fields = {f.name for f in fields(TrainConfig)}
    assert set(TrainingConfig.model_fields) <= job_fields


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        (
            "sources:\n  - kind: tabler\nrender:\n  size: 64\nsources:\n  - kind: local\n    path: x\n",
            5,
            "duplicate key 'sources' (first at line 1)",
        ),
        (
            "sources:\n  - kind: tabler\n    name: ours\n    version: 3.51.0\n    name: theirs\n",
            5,
            "duplicate key 'name' (first at line 3)",
        ),
        (
            "render: {size: 64, theme: dark, size: 128}\nsources: [{kind: tabler}]\n",
            1,
            "duplicate key 'size'",
        ),
    ],
)
def test_a_key_given_twice_is_refused_with_both_lines(text: str, where: int, reason: str) -> None:
    file = Path("/configs/icon_pipeline.yaml")
    with pytest.raises(ConfigError) as excinfo:
        parse_config(text, file)
    assert str(excinfo.value).startswith(f"{file}:{where}: not valid YAML: {reason}")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("sources: &x [*x]\n", 1),
        ("sources:\n  - kind: tabler\nbatching: &loop\n  icons_per_batch: *loop\n", 4),
        ("sources:\n  - &s\n    kind: tabler\n    name: [*s]\n", 4),
    ],
)
def test_a_self_referencing_alias_is_a_config_error_not_a_traceback(
    tmp_path: Path, text: str, where: int
) -> None:
    file = tmp_path / "icon_pipeline.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(file)
    assert str(excinfo.value).startswith(f"{file}:{where}: not valid YAML: self-referencing alias *")


def test_a_merged_key_may_be_overridden_but_an_own_key_not_given_twice(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    merged = "sources:\n  - &one\n    kind: local\n    path: a\n  - <<: *one\n    path: b\n    name: b\n"
    config = parse_config(merged, file)  # `path` overrides the merged one: not a duplicate
    assert [s.path for s in config.sources] == [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ConfigError) as excinfo:
        parse_config(merged + "    path: c\n", file)
    assert str(excinfo.value) == f"{file}:8: not valid YAML: duplicate key 'path' (first at line 6)"


def test_a_training_config_inside_the_data_root_names_no_absolute_path_and_moves_with_it(
    tmp_path: Path,
) -> None:
    """train_config.json stores the paths inside the data root relative to its own folder: a copied
    root's file reads as the copy's paths; a checkpoint outside the root and a Hub id stay as given."""
    import json
    import shutil

    from icon_pipeline.model.training.config import relative_to_root

    root = tmp_path / "data"
    run = root / "finetune_run" / "abc"
    outside = tmp_path / "elsewhere" / "base"
    train = TrainConfig(
        base_checkpoint=str(root / "base_checkpoint" / "small"),
        pairs_path=str(root / "training_pairs.parquet"),
        output_dir=str(run),
        eval_path=str(root / "eval" / "eval.v1.jsonl"),
        eval_images_path=str(root / "icon_images.parquet"),
        images_root=str(root),
        cache_dir=str(root / "training_cache"),
    )
    (root / "base_checkpoint" / "small").mkdir(parents=True)
    written = train.write(run / "train_config.json")
    assert str(root) not in written.read_text()
    assert json.loads(written.read_text())["pairs_path"] == "../../training_pairs.parquet"
    assert TrainConfig.load(written) == train

    moved = tmp_path / "moved" / "data"
    shutil.copytree(root, moved)
    shutil.rmtree(root)
    loaded = TrainConfig.load(moved / "finetune_run" / "abc" / "train_config.json")
    assert loaded.images_root == str(moved) and loaded.output_dir == str(moved / "finetune_run" / "abc")
    assert loaded.base_checkpoint == str(moved / "base_checkpoint" / "small")

    for base in (str(outside), "google/siglip2-base-patch16-naflex"):
        kept = TrainConfig(
            base_checkpoint=base, pairs_path=str(root / "p"), output_dir=str(run), images_root=str(root)
        )
        stored = json.loads(kept.write(run / "other.json").read_text())
        assert stored["base_checkpoint"] == base and stored["pairs_path"] == "../../p"
    # The run's report and a fine-tune's recorded base: relative to the data root, through lists.
    report = {"checkpoint_path": str(run / "model"), "images": [str(root / "a.png")], "base": str(outside)}
    assert relative_to_root(report, str(root)) == {
        "checkpoint_path": "finetune_run/abc/model",
        "images": ["a.png"],
        "base": str(outside),
    }
