"""Open icon sets: each package's layout read as the real one ships it, the registry's roles, the ban."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icon_pipeline.core.config import ConfigError, parse_config
from icon_pipeline.library.sources.icon_sets import (
    BENCHMARK_SETS,
    CORPUS_SETS,
    ICON_SETS,
    IconSetError,
    check_allowed,
    drawing_record,
    fetch_icon_set,
    icon_set,
    read_icon_set,
)
from icon_pipeline_tests.icon_set_packages import (
    write_fontawesome,
    write_iconoir,
    write_material_symbols,
    write_mdi,
    write_phosphor,
    write_remixicon,
)
from icon_pipeline_tests.library.test_sources import fake_npm, package_tarball


def test_phosphor_reads_tags_from_its_js_module_and_every_weight(tmp_path: Path) -> None:
    write_phosphor(tmp_path, {"bell": ["alarm", "notification"], "house": ["home", "building"]})
    drawings = read_icon_set(ICON_SETS["phosphor"], tmp_path)
    assert len(drawings) == 12  # 2 icons x 6 weights
    bell = [d for d in drawings if d.name == "bell"]
    assert {d.style for d in bell} == {"regular", "thin", "light", "bold", "fill", "duotone"}
    assert all(d.tags == ("alarm", "notification") for d in bell), "the *new* marker is no tag"
    assert next(d for d in bell if d.style == "bold").path.name == "bell-bold.svg"


def test_fontawesome_reads_terms_and_aliases_and_skips_the_alias_copies(tmp_path: Path) -> None:
    write_fontawesome(tmp_path, {"house": {"terms": ["abode", "home"], "aliases": ["home-alt"]}})
    drawings = read_icon_set(ICON_SETS["fontawesome"], tmp_path, ("solid", "regular"))
    assert [(d.name, d.style) for d in drawings] == [("house", "solid"), ("house", "regular")]
    assert drawings[0].aliases == ("home-alt",) and drawings[0].tags == ("house", "abode", "home")


def test_mdi_splits_outline_names_and_leaves_deprecated_icons_out(tmp_path: Path) -> None:
    write_mdi(tmp_path, {"cog": ["settings", "gear"]})
    drawings = read_icon_set(ICON_SETS["mdi"], tmp_path)
    assert sorted((d.name, d.style) for d in drawings) == [("cog", "filled"), ("cog", "outline")]
    assert all(d.aliases == ("settings", "gear") for d in drawings)


def test_iconoir_remixicon_and_material_symbols_read_names_and_styles(tmp_path: Path) -> None:
    write_iconoir(tmp_path, ["bell"])
    write_remixicon(tmp_path, ["notification"])
    write_material_symbols(tmp_path, ["home"])
    assert {(d.name, d.style) for d in read_icon_set(ICON_SETS["iconoir"], tmp_path)} == {
        ("bell", "regular"),
        ("bell", "solid"),
    }
    remix = read_icon_set(ICON_SETS["remixicon"], tmp_path)
    assert {(d.name, d.style, d.category) for d in remix} == {
        ("notification", "line", "System"),
        ("notification", "fill", "System"),
    }
    material = read_icon_set(ICON_SETS["material-symbols"], tmp_path)
    assert [(d.name, d.style) for d in material] == [("home", "outlined")], "outlined only by default"
    every = read_icon_set(ICON_SETS["material-symbols"], tmp_path, ICON_SETS["material-symbols"].styles)
    assert len(every) == 6


def test_a_set_not_fetched_or_unknown_style_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        IconSetError, match=r"iconoir: iconoir@7\.12\.1 is not fetched .*icon-pipeline fetch-data"
    ):
        read_icon_set(ICON_SETS["iconoir"], tmp_path)
    write_iconoir(tmp_path, ["bell"])
    with pytest.raises(IconSetError, match=r"unknown style\(s\) \['bold'\]"):
        read_icon_set(ICON_SETS["iconoir"], tmp_path, ("bold",))
    (tmp_path / "mdi" / "7.4.47" / "package").mkdir(parents=True)
    (tmp_path / "mdi" / "7.4.47" / "package" / "meta.json").write_text("{not json")
    with pytest.raises(IconSetError, match="mdi: cannot read"):
        read_icon_set(ICON_SETS["mdi"], tmp_path)


@pytest.mark.parametrize("name", ["lucide", "lucide-static", "Lucide-React", "feather-icons", "feather"])
def test_lucide_and_feather_are_refused_everywhere(name: str, tmp_path: Path) -> None:
    with pytest.raises(IconSetError, match="never used by this project"):
        check_allowed(name)
    with pytest.raises(IconSetError, match="never used by this project"):
        icon_set(name)
    config = tmp_path / "icon_pipeline.yaml"
    with pytest.raises(ConfigError, match="never used by this project"):
        parse_config(f"sources:\n  - kind: tabler\ncorpus:\n  sets: [{name}]\n", config)


def test_benchmark_sets_are_never_corpus_sets_and_the_reverse(tmp_path: Path) -> None:
    assert set(CORPUS_SETS).isdisjoint(BENCHMARK_SETS)
    assert {"phosphor", "fontawesome"} == set(BENCHMARK_SETS)
    assert {"mdi", "iconoir", "remixicon", "material-symbols"} == set(CORPUS_SETS)
    config = tmp_path / "icon_pipeline.yaml"
    with pytest.raises(ConfigError, match="phosphor is a benchmark set, not a corpus set"):
        parse_config("sources:\n  - kind: tabler\ncorpus:\n  sets: [mdi, phosphor]\n", config)
    with pytest.raises(ConfigError, match="mdi is a corpus set, not a benchmark set"):
        parse_config("sources:\n  - kind: tabler\nexternal:\n  sets: [mdi]\n", config)
    with pytest.raises(ConfigError, match="unknown icon set 'tabler-2'"):
        parse_config("sources:\n  - kind: tabler\ncorpus:\n  sets: [tabler-2]\n", config)


def test_every_set_records_its_licence_and_credit() -> None:
    for spec in ICON_SETS.values():
        assert spec.licence and spec.credit and spec.package and spec.version
    assert "CC-BY-4.0" in ICON_SETS["fontawesome"].licence and "Fonticons" in ICON_SETS["fontawesome"].credit
    assert "Remix Icon License" in ICON_SETS["remixicon"].licence  # what its License file says


def test_fetch_icon_set_packs_once_with_npm(tmp_path: Path) -> None:
    tarball = package_tarball(
        tmp_path / "i.tgz",
        {
            "package/icons/regular/bell.svg": b"<svg/>",
            "package/package.json": json.dumps({"version": "7.12.1"}).encode(),
        },
    )
    npm = fake_npm(tmp_path, tarball)
    package = fetch_icon_set(ICON_SETS["iconoir"], tmp_path / "sources", npm=str(npm))
    assert package == tmp_path / "sources" / "iconoir" / "7.12.1" / "package"
    assert (tmp_path / "npm-calls.txt").read_text().split() == ["pack", "iconoir@7.12.1"]
    assert fetch_icon_set(ICON_SETS["iconoir"], tmp_path / "sources", npm="no-such-npm") == package


def test_a_drawing_is_a_record_the_renderer_takes(tmp_path: Path) -> None:
    write_iconoir(tmp_path, ["bell"])
    record = drawing_record(read_icon_set(ICON_SETS["iconoir"], tmp_path)[0])
    assert (
        record.icon_id == "iconoir:regular:bell" and record.format == "svg" and len(record.content_hash) == 64
    )


def test_the_configs_set_names_are_the_registrys() -> None:
    """The config checks set names on the bottom floor (core/icon_set_names.py) before the library's
    readers exist: both list the same sets, in the same order, with the registry's roles taken from it."""
    from icon_pipeline.core.icon_set_names import SET_ROLES

    assert list(SET_ROLES) == list(ICON_SETS)
    assert {name: spec.role for name, spec in ICON_SETS.items()} == SET_ROLES
