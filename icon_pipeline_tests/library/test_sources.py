"""Sources: the real Tabler package, npm fetching (offline, with a stand-in npm), local folders."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import textwrap
from pathlib import Path

import pytest

from icon_pipeline.core.paths import get_paths
from icon_pipeline.library.sources import (
    TablerFetchError,
    extract_package,
    fetch_tabler,
    folder_fingerprint,
    scan_local,
    scan_tabler,
)

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path d="M4 4h16"/></svg>'


@pytest.fixture(scope="module")
def tabler_package() -> Path:
    package = get_paths().sources_dir / "tabler" / "3.51.0" / "package"
    if not (package / "icons.json").is_file():
        pytest.skip(f"Tabler package not unpacked at {package} (run `make data` / fetch_tabler first)")
    return package


# ------------------------------------------------------------------------------------------------
# Tabler: the real package


def test_scan_tabler_limit_gives_both_styles_with_metadata(tabler_package: Path) -> None:
    scan = scan_tabler(tabler_package, limit=40)
    assert scan.version == "3.51.0" and scan.failures == []
    names = {icon.name for icon in scan.icons}
    assert len(names) == 40
    assert {icon.style for icon in scan.icons} == {"outline", "filled"}
    index = json.loads((tabler_package / "icons.json").read_text())
    for icon in scan.icons:
        assert icon.icon_id == f"tabler:{icon.style}:{icon.name}"
        assert icon.raw_name == icon.name and icon.format == "svg" and icon.source_version == "3.51.0"
        assert Path(icon.file_path) == (tabler_package / "icons" / icon.style / f"{icon.name}.svg").resolve()
        assert icon.content_hash == hashlib.sha256(Path(icon.file_path).read_bytes()).hexdigest()
        assert icon.category == index[icon.name]["category"] == icon.context
        assert icon.tags and all(isinstance(t, str) for t in icon.tags)
    assert len({icon.icon_id for icon in scan.icons}) == len(scan.icons)


def test_scan_tabler_whole_set_matches_files_on_disk(tabler_package: Path) -> None:
    scan = scan_tabler(tabler_package)
    on_disk = {(p.parent.name, p.stem) for p in (tabler_package / "icons").glob("*/*.svg")}
    on_disk = {(style, name) for style, name in on_disk if style in ("outline", "filled")}
    assert {(i.style, i.name) for i in scan.icons} == on_disk
    assert scan.failures == [], scan.failures[:5]
    assert len(scan_tabler(tabler_package, styles=["filled"], limit=5).icons) <= 5


def make_package(root: Path, index: object, files: dict[str, bytes], version: str = "9.9.9") -> Path:
    package = root / "package"
    for relative, data in files.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_bytes(data)
    package.mkdir(parents=True, exist_ok=True)
    (package / "icons.json").write_text(json.dumps(index))
    (package / "package.json").write_text(json.dumps({"name": "@tabler/icons", "version": version}))
    return package


def test_scan_tabler_records_bad_entries_and_missing_files(tmp_path: Path) -> None:
    index = {
        "ok": {"category": "A", "tags": ["x", None, 3], "styles": {"outline": {}, "filled": {}}},
        "missing-file": {"category": "A", "tags": [], "styles": {"outline": {}}},
        "bad": ["not", "an", "object"],
        "bad-tags": {"tags": "x"},
    }
    files = {"icons/outline/ok.svg": SVG, "icons/filled/ok.svg": SVG, "icons/outline/unlisted.svg": SVG}
    scan = scan_tabler(make_package(tmp_path, index, files))
    assert scan.version == "9.9.9"
    assert sorted(i.icon_id for i in scan.icons) == [
        "tabler:filled:ok",
        "tabler:outline:ok",
        "tabler:outline:unlisted",
    ]
    ok = next(i for i in scan.icons if i.icon_id == "tabler:outline:ok")
    assert ok.tags == ("x", "3"), "null tags dropped, numbers kept as text"
    failures = {f.item: f.reason for f in scan.failures}
    assert set(failures) == {"outline/missing-file", "icons.json:bad", "icons.json:bad-tags"}
    assert "missing" in failures["outline/missing-file"]


def test_scan_tabler_without_icons_json_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    scan = scan_tabler(tmp_path / "nowhere")
    assert scan.icons == [] and len(scan.failures) == 1 and "icons.json" in scan.failures[0].item


# ------------------------------------------------------------------------------------------------
# Tabler: fetching


def package_tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def fake_npm(tmp_path: Path, tarball: Path | None, exit_code: int = 0) -> Path:
    """A stand-in `npm` executable: `npm pack` copies a prepared tarball into the working directory."""
    script = tmp_path / "bin" / "npm"
    script.parent.mkdir(parents=True, exist_ok=True)
    copy = f'cp "{tarball}" "$PWD/tabler-icons-9.9.9.tgz"\necho tabler-icons-9.9.9.tgz' if tarball else ""
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> "{tmp_path}/npm-calls.txt"
        if [ {exit_code} -ne 0 ]; then echo "npm ERR! 404 Not Found" >&2; exit {exit_code}; fi
        """)
        + copy
        + "\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_fetch_tabler_packs_unpacks_and_is_idempotent(tmp_path: Path) -> None:
    tarball = package_tarball(
        tmp_path / "t.tgz",
        {
            "package/icons.json": b"{}",
            "package/package.json": b'{"version": "9.9.9"}',
            "package/icons/outline/a.svg": SVG,
        },
    )
    npm = fake_npm(tmp_path, tarball)
    dest = tmp_path / "data"
    package = fetch_tabler(dest, "9.9.9", npm=str(npm))
    assert (
        package == dest / "9.9.9" / "package"
        and (package / "icons" / "outline" / "a.svg").read_bytes() == SVG
    )
    assert (tmp_path / "npm-calls.txt").read_text().split() == ["pack", "@tabler/icons@9.9.9"]
    assert fetch_tabler(dest, "9.9.9", npm=str(npm)) == package
    assert len((tmp_path / "npm-calls.txt").read_text().splitlines()) == 1, "second call reuses the package"
    assert sorted(p.name for p in dest.iterdir()) == ["9.9.9"], "no temp folders left behind"


def test_fetch_tabler_reuses_existing_package_without_npm(tmp_path: Path) -> None:
    make_package(tmp_path / "3.0.0", {}, {})
    assert fetch_tabler(tmp_path, "3.0.0", npm="no-such-npm-binary") == tmp_path / "3.0.0" / "package"


def test_fetch_tabler_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TablerFetchError, match="npm not found"):
        fetch_tabler(tmp_path / "a", "1.0.0", npm="no-such-npm-binary")
    failing = fake_npm(tmp_path, None, exit_code=1)
    with pytest.raises(TablerFetchError, match=r"exit code 1.*404 Not Found"):
        fetch_tabler(tmp_path / "b", "1.0.0", npm=str(failing))


@pytest.mark.parametrize("evil", ["../escaped.txt", "package/../../escaped.txt"])
def test_extract_package_refuses_path_traversal(tmp_path: Path, evil: str) -> None:
    tarball = package_tarball(tmp_path / "evil.tgz", {"package/icons.json": b"{}", evil: b"pwned"})
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(TablerFetchError, match="cannot unpack"):
        extract_package(tarball, dest)
    assert not (tmp_path / "deep" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not (dest / "package").exists()


def test_extract_package_keeps_absolute_member_paths_inside(tmp_path: Path) -> None:
    outside = tmp_path / "absolute-escape.txt"
    tarball = package_tarball(tmp_path / "abs.tgz", {"package/icons.json": b"{}", str(outside): b"pwned"})
    package = extract_package(tarball, tmp_path / "dest")
    assert not outside.exists(), "the leading / is stripped: the member lands inside the staging folder"
    assert (package / "icons.json").is_file()


def test_extract_package_rejects_a_tarball_that_is_not_tabler(tmp_path: Path) -> None:
    tarball = package_tarball(tmp_path / "other.tgz", {"package/index.js": b""})
    with pytest.raises(TablerFetchError, match="icons.json"):
        extract_package(tarball, tmp_path / "dest")


# ------------------------------------------------------------------------------------------------
# Local folders


@pytest.fixture
def icon_folder(tmp_path: Path) -> Path:
    root = tmp_path / "icons"
    (root / "nav" / "arrows").mkdir(parents=True)
    (root / "media").mkdir()
    (root / ".git").mkdir()
    (root / "home.svg").write_bytes(SVG)
    (root / "Logo.PNG").write_bytes(b"\x89PNG fake but fine for a scan")
    (root / "README.md").write_text("not an icon")
    (root / ".hidden.svg").write_bytes(SVG)
    (root / ".git" / "x.svg").write_bytes(SVG)
    (root / "nav" / "home.svg").write_bytes(SVG + b" ")  # same name, other folder
    (root / "nav" / "arrows" / "arrow-left.SVG").write_bytes(SVG)
    (root / "media" / "play.svg").write_bytes(SVG)
    (root / "metadata.json").write_text(json.dumps({"home": {"tags": ["house", "start"], "category": "Nav"}}))
    (root / "nav" / "arrows" / "metadata.json").write_text(json.dumps({"arrow-left": {"tags": ["back"]}}))
    return root


def test_scan_local_nested_folders_metadata_and_ids(icon_folder: Path) -> None:
    scan = scan_local(icon_folder, "mine")
    assert scan.failures == []
    by_id = {icon.icon_id: icon for icon in scan.icons}
    assert sorted(by_id) == [
        "mine:Logo.PNG",
        "mine:home.svg",
        "mine:media/play.svg",
        "mine:nav/arrows/arrow-left.SVG",
        "mine:nav/home.svg",
    ]
    home = by_id["mine:home.svg"]
    assert (home.name, home.tags, home.category, home.context, home.format) == (
        "home",
        ("house", "start"),
        "Nav",
        "",
        "svg",
    )
    nested_home = by_id["mine:nav/home.svg"]
    assert nested_home.tags == () and nested_home.context == "nav", "metadata applies to its own folder only"
    arrow = by_id["mine:nav/arrows/arrow-left.SVG"]
    assert arrow.tags == ("back",) and arrow.context == "nav/arrows" and arrow.format == "svg"
    assert by_id["mine:Logo.PNG"].format == "png"
    assert all(icon.source_version == scan.version == folder_fingerprint(icon_folder) for icon in scan.icons)


def test_scan_local_edit_keeps_id_and_changes_hash_and_fingerprint(icon_folder: Path) -> None:
    before = {i.icon_id: i for i in scan_local(icon_folder, "mine").icons}
    assert folder_fingerprint(icon_folder) == before["mine:home.svg"].source_version
    (icon_folder / "home.svg").write_bytes(SVG.replace(b"M4 4h16", b"M4 4h12"))
    after = {i.icon_id: i for i in scan_local(icon_folder, "mine").icons}
    assert after.keys() == before.keys()
    assert after["mine:home.svg"].content_hash != before["mine:home.svg"].content_hash
    assert after["mine:home.svg"].source_version != before["mine:home.svg"].source_version
    assert after["mine:media/play.svg"].content_hash == before["mine:media/play.svg"].content_hash


def test_folder_fingerprint_sees_additions_and_ignores_other_files(icon_folder: Path) -> None:
    first = folder_fingerprint(icon_folder)
    assert folder_fingerprint(icon_folder) == first
    (icon_folder / "notes.txt").write_text("ignored")
    assert folder_fingerprint(icon_folder) == first
    (icon_folder / "media" / "pause.svg").write_bytes(SVG)
    assert folder_fingerprint(icon_folder) != first
    assert folder_fingerprint(icon_folder / "missing") == "missing"


def test_scan_local_malformed_metadata_is_a_failure_and_scan_goes_on(icon_folder: Path) -> None:
    (icon_folder / "metadata.json").write_text('{"home": {"tags": ["house"],}')
    (icon_folder / "media" / "metadata.json").write_text(json.dumps({"play": {"tags": "not-a-list"}}))
    scan = scan_local(icon_folder, "mine")
    assert len(scan.icons) == 5
    failures = {f.item: f.reason for f in scan.failures}
    assert "invalid JSON at line 1" in failures["metadata.json"]
    assert "list of strings" in failures["media/metadata.json:play"]


def test_scan_local_non_utf8_file_name_does_not_crash(icon_folder: Path) -> None:
    bad_name = os.path.join(os.fsencode(icon_folder), b"caf\xe9-\xff.svg")
    with open(bad_name, "wb") as handle:
        handle.write(SVG)
    scan = scan_local(icon_folder, "mine")
    assert len(scan.icons) == 5, "the other icons are still there"
    (failure,) = scan.failures
    assert failure.item == "caf\ufffd-\ufffd.svg" and "UTF-8" in failure.reason
    json.dumps([failure.item, failure.reason]).encode("utf-8")  # storable and loggable
    assert folder_fingerprint(icon_folder)  # hashing raw bytes names works too


def test_scan_local_unreadable_files_become_failures(icon_folder: Path) -> None:
    (icon_folder / "broken.svg").symlink_to(icon_folder / "gone.svg")
    scan = scan_local(icon_folder, "mine")
    assert [f.item for f in scan.failures] == ["broken.svg"]
    assert len(scan.icons) == 5


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode"
)
def test_scan_local_permission_denied_is_a_failure(icon_folder: Path) -> None:
    locked = icon_folder / "media" / "play.svg"
    locked.chmod(0)
    try:
        scan = scan_local(icon_folder, "mine")
    finally:
        locked.chmod(0o644)
    assert [f.item for f in scan.failures] == ["media/play.svg"]
    assert "ermission" in scan.failures[0].reason


def test_scan_local_missing_folder_is_a_failure(tmp_path: Path) -> None:
    scan = scan_local(tmp_path / "nope", "mine")
    assert scan.icons == [] and "does not exist" in scan.failures[0].reason


def test_scan_local_refuses_links_leaving_the_folder_and_follows_links_inside(
    icon_folder: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    (outside / "secrets").mkdir(parents=True)
    (outside / "private.svg").write_bytes(SVG)
    (outside / "secrets" / "key.svg").write_bytes(SVG)
    (outside / "metadata.json").write_text(json.dumps({"play": {"tags": ["stolen"]}}))
    (icon_folder / "leak.svg").symlink_to(outside / "private.svg")
    (icon_folder / "nav" / "up.svg").symlink_to(Path("..") / ".." / "elsewhere" / "private.svg")  # relative
    (icon_folder / "vault").symlink_to(outside / "secrets", target_is_directory=True)
    (icon_folder / "media" / "metadata.json").symlink_to(outside / "metadata.json")
    (icon_folder / "home-again.svg").symlink_to(icon_folder / "nav" / "home.svg")  # stays inside

    scan = scan_local(icon_folder, "mine")

    failures = {f.item: f.reason for f in scan.failures}
    assert sorted(failures) == ["home-again.svg", "leak.svg", "media/metadata.json", "nav/up.svg", "vault"]
    assert failures.pop("home-again.svg").startswith("a link to nav/home.svg, which is indexed already")
    for item, reason in failures.items():
        assert reason.startswith("a link leaving the folder (to "), (item, reason)
    assert (
        str(outside / "private.svg") in failures["leak.svg"] and str(outside / "secrets") in failures["vault"]
    )
    ids = {icon.icon_id for icon in scan.icons}
    assert "mine:home-again.svg" not in ids and len(ids) == 5  # a link inside repeats nav/home.svg
    assert not any(str(outside) in icon.file_path for icon in scan.icons)
    play = next(icon for icon in scan.icons if icon.icon_id == "mine:media/play.svg")
    assert play.tags == (), "metadata from outside the folder is not read"


def test_scan_local_indexes_a_link_inside_once_when_its_target_is_not_an_icon_itself(
    icon_folder: Path,
) -> None:
    """A link to a hidden file is the only way that drawing is indexed; two links to it, once."""
    (icon_folder / "shown.svg").symlink_to(icon_folder / ".hidden.svg")
    (icon_folder / "shown-too.svg").symlink_to(icon_folder / ".hidden.svg")
    scan = scan_local(icon_folder, "mine")
    ids = {icon.icon_id for icon in scan.icons}
    assert "mine:shown-too.svg" in ids and "mine:shown.svg" not in ids and len(ids) == 6
    assert [f.item for f in scan.failures] == ["shown.svg"]


def test_scan_local_refuses_a_huge_file_by_its_size_without_reading_it(icon_folder: Path) -> None:
    import resource
    import time

    huge = icon_folder / "media" / "huge.svg"
    with huge.open("wb") as handle:
        handle.truncate(3 * 1024**3)  # sparse: 3 GiB long, no disk used
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    scan = scan_local(icon_folder, "mine")
    seconds = time.monotonic() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    ((item, reason),) = [(f.item, f.reason) for f in scan.failures]
    assert item == "media/huge.svg"
    assert reason == (
        "file is 3221225472 bytes (3072.0 MiB), over the 2000000-byte limit "
        "(render.max_svg_bytes in the config)"
    )
    assert grown_mib < 100 and seconds < 5, (grown_mib, seconds)  # reading it would take 3 GiB
    assert len(scan.icons) == 5


def test_scan_local_uses_the_configured_svg_limit_and_the_raster_limit(icon_folder: Path) -> None:
    from icon_pipeline.core.config import PipelineConfig
    from icon_pipeline.core.limits import MAX_RASTER_BYTES
    from icon_pipeline.library.scanning import scan_library

    with (icon_folder / "big.png").open("wb") as handle:
        handle.truncate(MAX_RASTER_BYTES + 1)
    config = PipelineConfig.model_validate(
        {
            "sources": [{"kind": "local", "path": str(icon_folder), "name": "mine"}],
            "render": {"max_svg_bytes": 90},
        }
    )
    (scan,) = scan_library(config)
    failures = {f.item: f.reason for f in scan.failures}
    # SVG is 87 bytes, nav/home.svg one more, the PNG one over the raster limit.
    assert failures == {
        "big.png": f"file is {MAX_RASTER_BYTES + 1} bytes (47.7 MiB), over the {MAX_RASTER_BYTES}-byte limit "
        "for PNG icons",
    }
    config = config.model_copy(
        update={"render": config.render.model_copy(update={"max_svg_bytes": len(SVG)})}
    )
    (scan,) = scan_library(config)
    failures = {f.item: f.reason for f in scan.failures}
    assert failures["nav/home.svg"].startswith(f"file is {len(SVG) + 1} bytes") and len(failures) == 2
    big_but_allowed = {i.icon_id: i for i in scan.icons}["mine:home.svg"]
    assert big_but_allowed.content_hash == hashlib.sha256(SVG).hexdigest()  # chunked hash, same digest
