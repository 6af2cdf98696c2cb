"""Eval set: offline paraphrases, the leakage guard, bad input, and write-once freezing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icon_pipeline.core.frozen import (
    FrozenFileError,
    read_frozen_jsonl,
    verify_frozen,
    write_frozen_jsonl,
)
from icon_pipeline.dataset.evalset import (
    OfflineParaphraser,
    build_eval_set,
    load_synonyms,
    nearest_training_caption,
)
from icon_pipeline.dataset.grouping import Group

CAPTIONS = {
    "delete": ("delete file", "remove document", "trash"),
    "add": ("add user", "create account", "new member"),
    "settings": ("open settings", "preferences", "configure app"),
    "search": ("search", "find text", "look up"),
    "home": ("home page", "go home", "main screen"),
    "bell": ("notification", "alert", "bell ring"),
}


def make_groups(captions: dict[str, tuple[str, ...]] = CAPTIONS) -> list[Group]:
    return [
        Group(
            group_id=f"g-{name}",
            members=(f"i-{name}",),
            names=(name,),
            captions=caps,
            representative=f"i-{name}",
        )
        for name, caps in captions.items()
    ]


def all_train(groups: list[Group]) -> dict[str, str]:
    return {g.group_id: "train" for g in groups}


class ScriptedParaphraser:
    """A paraphraser that plays back fixed answers per attempt (stands in for an LLM)."""

    def __init__(self, by_attempt: dict[int, list[str]]):
        self.by_attempt = by_attempt
        self.calls: list[tuple[str, int, int]] = []

    def paraphrase(self, group: Group, n: int, attempt: int) -> list[str]:
        self.calls.append((group.group_id, n, attempt))
        return self.by_attempt.get(attempt, [])[:n]


def test_offline_paraphraser_is_deterministic_and_fresh_per_attempt() -> None:
    paraphraser = OfflineParaphraser.default()
    group = make_groups()[0]
    first = paraphraser.paraphrase(group, 4, 0)
    assert first == OfflineParaphraser.default().paraphrase(group, 4, 0)
    assert len(first) == 4
    assert not set(first) & set(group.captions)
    assert not set(first) & set(paraphraser.paraphrase(group, 4, 1))
    everything = {text for _, text in paraphraser.candidates(group.captions)}
    assert {"remove file", "erase file", "delete document"} <= everything
    assert all(1 <= len(c.split()) <= 4 and c == c.lower() for c in everything)


def test_shipped_synonym_lexicon_is_broad() -> None:
    synonyms = load_synonyms()
    assert len(synonyms) >= 300
    assert {"remove", "erase", "trash"} <= set(synonyms["delete"])
    assert {"create", "new", "insert"} <= set(synonyms["add"])
    assert {"preferences", "options"} <= set(synonyms["settings"])
    assert {"person", "account", "profile"} <= set(synonyms["user"])


def test_bad_synonym_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "syn.json"
    bad.write_text(json.dumps({"synonyms": {"delete": "remove"}}))
    with pytest.raises(ValueError, match=r"syn\.json: expected a mapping of word -> list"):
        load_synonyms(bad)


def test_build_eval_set_is_seeded_and_guarded() -> None:
    groups = make_groups()
    split = all_train(groups)
    split["g-bell"] = "heldout"
    paraphraser = OfflineParaphraser.default()
    rows, report = build_eval_set(groups, split, paraphraser, n_groups=4, per_group=(3, 5), seed=1)
    again, _ = build_eval_set(groups, split, paraphraser, n_groups=4, per_group=(3, 5), seed=1)
    assert rows == again
    assert report.used_groups == 4 and report.available_groups == 5
    assert "g-bell" not in {r["group_id"] for r in rows}  # held-out groups are never sampled
    by_group: dict[str, list[dict]] = {}
    for row in rows:
        by_group.setdefault(row["group_id"], []).append(row)
        training = dict((g.group_id, g.captions) for g in groups)[row["group_id"]]
        assert row["caption"] not in training
        assert nearest_training_caption(row["caption"], training)[1] <= 0.8
        assert row["max_train_similarity"] <= 0.8
    assert all(3 <= len(v) <= 5 for v in by_group.values())
    other_seed, _ = build_eval_set(groups, split, paraphraser, n_groups=4, seed=2)
    assert other_seed != rows


def test_near_copy_is_rejected_and_regenerated() -> None:
    groups = make_groups({"delete": ("delete file", "trash")})
    # One letter changed from a training caption, then a genuinely different caption.
    paraphraser = ScriptedParaphraser({0: ["delete fild"], 1: ["discard this item"]})
    rows, report = build_eval_set(groups, all_train(groups), paraphraser, n_groups=1, per_group=(1, 1))
    assert [r["caption"] for r in rows] == ["discard this item"]
    assert rows[0]["attempt"] == 1
    [rejection] = report.rejections
    assert rejection.caption == "delete fild"
    assert rejection.nearest_training_caption == "delete file"
    assert rejection.similarity == pytest.approx(1 - 1 / 11)
    assert rejection.attempt == 0
    assert paraphraser.calls == [("g-delete", 1, 0), ("g-delete", 1, 1)]


def test_a_dissimilar_paraphrase_passes_first_time() -> None:
    groups = make_groups({"delete": ("delete file", "trash")})
    paraphraser = ScriptedParaphraser({0: ["discard this item"]})
    rows, report = build_eval_set(groups, all_train(groups), paraphraser, n_groups=1, per_group=(1, 1))
    assert [r["attempt"] for r in rows] == [0]
    assert report.rejections == []


def test_after_max_retries_captions_are_dropped_and_recorded() -> None:
    groups = make_groups({"delete": ("delete file",), "add": ("add user",)})

    class PerGroup:
        def paraphrase(self, group: Group, n: int, attempt: int) -> list[str]:
            if group.group_id == "g-delete":  # a fresh near-copy at every attempt
                return [["delete files", "delete filez", "delete fil", "delete flie", "x"][attempt]]
            return ["register someone"]

    rows, report = build_eval_set(
        groups, all_train(groups), PerGroup(), n_groups=2, per_group=(1, 1), max_retries=3
    )
    assert (
        report.used_groups == 1
        and "1 lost every caption to the leakage guard: 1 used" in report.shortfall_note
    )
    assert [r["caption"] for r in rows] == ["register someone"]
    assert report.dropped_groups == ["g-delete"]
    assert [(r.caption, r.attempt) for r in report.rejections] == [
        ("delete files", 0),
        ("delete filez", 1),
        ("delete fil", 2),
        ("delete flie", 3),
    ]
    assert {r.nearest_training_caption for r in report.rejections} == {"delete file"}
    assert all(r.similarity > 0.8 for r in report.rejections)
    assert report.to_metadata()["rejected_too_similar"] == 4


def test_threshold_that_rejects_everything_is_an_error() -> None:
    groups = make_groups()
    with pytest.raises(ValueError, match=r"threshold 0\.01\) and validation rejected every candidate"):
        build_eval_set(groups, all_train(groups), OfflineParaphraser.default(), n_groups=3, threshold=0.01)


def test_n_groups_is_a_cap_and_the_shortfall_is_said_with_the_config_key() -> None:
    groups = make_groups()
    rows, report = build_eval_set(groups, all_train(groups), OfflineParaphraser.default(), n_groups=50)
    assert report.used_groups == 6 and rows
    assert report.shortfall_note == (
        "eval.n_groups asks for 50 groups; the library has 6 train-side groups with captions: 6 used"
    )
    assert report.to_metadata()["shortfall"] == report.shortfall_note
    _, enough = build_eval_set(groups, all_train(groups), OfflineParaphraser.default(), n_groups=3)
    assert enough.shortfall_note == ""


def test_groups_without_captions_are_skipped_and_recorded() -> None:
    groups = make_groups({"delete": ("delete file",), "blank": ()})
    rows, report = build_eval_set(groups, all_train(groups), OfflineParaphraser.default(), n_groups=1)
    assert report.skipped_no_captions == ["g-blank"]
    assert {r["group_id"] for r in rows} == {"g-delete"}
    empty = make_groups({"blank": ()})
    with pytest.raises(ValueError, match="no train-side group has captions"):
        build_eval_set(empty, all_train(empty), OfflineParaphraser.default(), n_groups=1)


def test_validation_hook_filters_and_records() -> None:
    groups = make_groups({"delete": ("delete file",)})
    paraphraser = ScriptedParaphraser({0: ["trash icon picture", "discard item"]})

    def no_visual_words(captions: list[str]) -> list[str]:
        return [c for c in captions if "icon" not in c.split()]

    rows, report = build_eval_set(
        groups, all_train(groups), paraphraser, n_groups=1, per_group=(2, 2), validate=no_visual_words
    )
    assert [r["caption"] for r in rows] == ["discard item"]
    assert report.invalid == [("g-delete", "trash icon picture")]
    assert report.shortfall == {"g-delete": (1, 2)}


# --- freezing ---------------------------------------------------------------------------------


def test_frozen_eval_set_is_written_once(tmp_path: Path) -> None:
    groups = make_groups()
    rows, _ = build_eval_set(groups, all_train(groups), OfflineParaphraser.default(), n_groups=3)
    first = write_frozen_jsonl(tmp_path, "eval_set", 1, rows)
    assert first.path.name == "eval_set.v1.jsonl" and not first.reused
    assert first.rows == len(rows)
    assert (tmp_path / "eval_set.v1.sha256").read_text().split() == [first.sha256, "eval_set.v1.jsonl"]
    assert read_frozen_jsonl(first.path) == rows
    before = first.path.read_bytes()

    second = write_frozen_jsonl(tmp_path, "eval_set", 1, rows[:1])  # different rows: still not overwritten
    assert second.reused and second.differs_from_rows
    assert second.sha256 == first.sha256 and second.rows == len(rows)
    assert first.path.read_bytes() == before
    assert not write_frozen_jsonl(tmp_path, "eval_set", 1, rows).differs_from_rows
    assert write_frozen_jsonl(tmp_path, "eval_set", 2, rows[:1]).rows == 1
    assert verify_frozen(first.path) == (True, f"eval_set.v1.jsonl (version 1): ok, sha256 {first.sha256}")


def test_tampering_fails_verification_naming_version_and_hash(tmp_path: Path) -> None:
    frozen = write_frozen_jsonl(tmp_path, "eval_set", 3, [{"caption": "remove file", "group_id": "g1"}])
    frozen.path.write_text(frozen.path.read_text().replace("remove", "delete"))
    ok, message = verify_frozen(frozen.path)
    assert not ok
    assert "version 3" in message and frozen.sha256 in message and "content changed" in message
    with pytest.raises(FrozenFileError, match="version 3"):
        write_frozen_jsonl(tmp_path, "eval_set", 3, [{"caption": "remove file", "group_id": "g1"}])
    with pytest.raises(FrozenFileError, match="version 3"):
        read_frozen_jsonl(frozen.path)
    (tmp_path / "eval_set.v3.sha256").unlink()
    assert verify_frozen(frozen.path) == (
        False,
        "eval_set.v3.jsonl (version 3): hash file eval_set.v3.sha256 is missing",
    )


def test_canonical_lines_and_bad_names(tmp_path: Path) -> None:
    frozen = write_frozen_jsonl(tmp_path, "q", "2026.1", [{"b": 1, "a": "é"}])
    assert frozen.path.read_bytes() == '{"a":"é","b":1}\n'.encode()
    with pytest.raises(ValueError, match="frozen file name '../x'"):
        write_frozen_jsonl(tmp_path, "../x", 1, [])
    with pytest.raises(ValueError, match="row 0: not JSON-serialisable"):
        write_frozen_jsonl(tmp_path, "bad", 1, [{"x": object()}])
    assert not (tmp_path / "bad.v1.jsonl").exists()
