"""Captions: validation, prompts, the offline captioner on the real Tabler set, the
OpenAI-compatible captioner against a real local HTTP server, and the caption cache."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import time
from pathlib import Path

import pytest
from PIL import Image

from icon_pipeline.captions import (
    CaptionCache,
    Captioner,
    CaptionRequest,
    CaptionResult,
    OfflineCaptioner,
    OpenAICaptioner,
    PromptError,
    caption_with_cache,
    load_prompt,
    make_cache_key,
    normalise_phrases,
    validate_phrases,
    vision_count,
)
from icon_pipeline.captions.batch import build_requests, summarise_batch
from icon_pipeline.captions.offline import ALGORITHM_VERSION, load_vocabulary
from icon_pipeline.captions.openai_compat import UnusableAnswer, phrases_from_answer
from icon_pipeline.captions.validation import MIN_OFFLINE_PHRASES
from icon_pipeline.core.config import parse_config
from icon_pipeline.core.paths import REPO_ROOT, get_paths
from icon_pipeline.defs.resources.llm import CaptionerResource
from icon_pipeline.lexicon.mining import NameItem, mine_lexicon
from icon_pipeline.library.records import IconRecord
from icon_pipeline_tests.openai_server import OpenAITestServer, decode_png_data_url

# The data dir may be moved by ICON_PIPELINE_DATA; the Makefile unpacks Tabler in the repo's.
TABLER_CANDIDATES = [
    root / "tabler" / "3.51.0" / "package" / "icons.json"
    for root in (get_paths().sources_dir, REPO_ROOT / "data" / "sources")
]
SECRET = "sk-test-secret-do-not-leak-123"


def request_for(name: str, tags: list[str], category: str = "", **overrides: object) -> CaptionRequest:
    words = name.split("-")
    fields: dict[str, object] = {
        "icon_id": f"test:{name}",
        "name": name,
        "terms": [" ".join(words), *words],
        "tags": tags,
        "category": category,
        "useful_token_count": len({*words, *tags}),
        "content_hash": f"hash-{name}",
    }
    fields.update(overrides)
    return CaptionRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tabler_requests() -> list[CaptionRequest]:
    found = next((path for path in TABLER_CANDIDATES if path.exists()), None)
    if found is None:
        pytest.skip(f"Tabler icons not unpacked at {TABLER_CANDIDATES[0]} (the Makefile fetches them)")
    icons = json.loads(found.read_text(encoding="utf-8"))
    return [
        request_for(name, [str(t) for t in meta["tags"]], meta["category"]) for name, meta in icons.items()
    ]


@pytest.fixture()
def png_path(tmp_path: Path) -> str:
    path = tmp_path / "icon.png"
    Image.new("RGB", (224, 224), "white").save(path)
    return str(path)


@pytest.fixture()
def server():
    with OpenAITestServer() as srv:
        yield srv


def fast_captioner(url: str, **overrides: object) -> OpenAICaptioner:
    settings: dict[str, object] = {
        "api_key": SECRET,
        "timeout_s": 5.0,
        "backoff_base_s": 0.01,
        "max_concurrency": 4,
    }
    settings.update(overrides)
    return OpenAICaptioner(url, **settings)  # type: ignore[arg-type]


# -- validation ------------------------------------------------------------------------------

GOOD = ["hide layer", "create new folder", "external link", "document properties", "settings"]


def test_valid_phrases_pass() -> None:
    assert validate_phrases(GOOD) == []
    assert validate_phrases([*GOOD, "wi-fi", "c++ code", "q&a"]) == []


@pytest.mark.parametrize(
    ("phrases", "expected"),
    [
        (GOOD[:4], "expected 5-8 phrases, got 4"),
        ([*GOOD, "a", "b", "c", "d"], "expected 5-8 phrases, got 9"),
        ([*GOOD[:4], "open the shared project folder"], "has 5 words"),
        ([*GOOD[:4], "Hide Layer"], "is not lowercase"),
        ([*GOOD[:4], "hide layer"], "duplicate phrase 'hide layer'"),
        ([*GOOD[:4], "hide  layer"], "duplicate phrase 'hide layer'"),
        ([*GOOD[:4], "paper airplane icon"], "uses banned word 'icon'"),
        ([*GOOD[:4], "red circle icon"], "phrase 'red circle icon' uses banned word"),
        ([*GOOD[:4], "arrow pointing left"], "uses banned word 'pointing'"),
        ([*GOOD[:4], "circle with cross"], "uses banned phrase 'circle with'"),
        ([*GOOD[:4], "blue button"], "uses banned word 'blue'"),
        ([*GOOD[:4], "42"], "is a pure number"),
        ([*GOOD[:4], ""], "empty phrase"),
        ([*GOOD[:4], 7], "is not a string"),
        ([*GOOD[:4], "save|load"], "characters other than"),
        ("hide layer", "expected a list"),
    ],
)
def test_validation_problems(phrases: object, expected: str) -> None:
    problems = validate_phrases(phrases)
    assert any(expected in p for p in problems), problems


def test_banned_words_are_whole_words() -> None:
    # "iconic" and "redo" contain banned words but are not them.
    assert validate_phrases(["iconic landmark", "redo", "undo", "shapeshift", "blueprint"]) == []


def test_normalise_fixes_cosmetics_instead_of_rejecting() -> None:
    answer = [
        "Hide Layer",
        "  - Show   Layer. ",
        "hide layer",
        "1. Toggle Visibility",
        '"Layers Panel"',
        "",
        3,
    ]
    assert normalise_phrases(answer) == ["hide layer", "show layer", "toggle visibility", "layers panel"]


def test_model_answers_are_parsed_tolerantly() -> None:
    six = ["hide layer", "show layer", "toggle visibility", "layers panel", "visibility", "layer"]
    assert phrases_from_answer(json.dumps({"phrases": six})) == six
    fenced = "<think>the user wants...</think>\n```json\n" + json.dumps({"phrases": six}) + "\n```"
    assert phrases_from_answer(fenced) == six
    assert phrases_from_answer("Here you go: " + json.dumps({"phrases": six}) + " Hope it helps!") == six
    # One looks phrase among six good ones is dropped rather than paid for again.
    assert phrases_from_answer(json.dumps({"phrases": [*six, "eye icon"]})) == six
    assert phrases_from_answer(json.dumps({"phrases": [*six, "a", "b", "c"]})) == [*six, "a", "b"]
    with pytest.raises(UnusableAnswer, match="uses banned word 'icon'"):
        phrases_from_answer(json.dumps({"phrases": [*six, "eye icon"]}), salvage_partial=False)
    with pytest.raises(UnusableAnswer, match="expected 5-8 phrases, got 4"):
        phrases_from_answer(json.dumps({"phrases": six[:3] + ["blue eye"]}))
    with pytest.raises(UnusableAnswer, match="not valid JSON"):
        phrases_from_answer("hide layer, show layer")
    with pytest.raises(UnusableAnswer, match="empty answer"):
        phrases_from_answer(None)


# -- prompts ---------------------------------------------------------------------------------


def test_prompts_are_versioned_files() -> None:
    prompt = load_prompt("caption_text")
    assert prompt.version == "v1" and prompt.key == "caption_text.v1"
    system, user = prompt.render(
        name="folder plus", terms="folder, plus", tags="add, new", category="Document"
    )
    assert "never describe how it looks" in system.lower()
    assert "name: folder plus" in user and "tags: add, new" in user
    assert load_prompt("caption_vision", "v1").key == "caption_vision.v1"
    assert load_prompt("paraphrase").render(name="x", category="y", terms="a, b")[1]


def test_prompt_errors_name_the_problem() -> None:
    with pytest.raises(PromptError, match="no prompt named 'nope'"):
        load_prompt("nope")
    with pytest.raises(PromptError, match="has no version v9"):
        load_prompt("caption_text", "v9")
    with pytest.raises(PromptError, match=r"caption_text\.v1: no value for placeholder \$tags"):
        load_prompt("caption_text").render(name="x", terms="x", category="y")


# -- offline captioner -----------------------------------------------------------------------


def test_offline_captioner_on_the_whole_tabler_set(tabler_requests: list[CaptionRequest]) -> None:
    captioner = OfflineCaptioner()
    start = time.perf_counter()
    results = captioner.caption_many(tabler_requests)
    elapsed = time.perf_counter() - start
    valid = [r for r in results if r.ok and not validate_phrases(r.phrases)]
    rate = len(valid) / len(results)
    print(f"offline captioner: {len(results)} icons, {rate:.2%} valid, {len(results) / elapsed:,.0f} icons/s")
    assert rate >= 0.99, [r.error for r in results if not r.ok][:5]
    assert all(r.route == "offline" and r.attempts == 1 for r in results)

    # Deterministic: a new instance, fed in reverse order, says exactly the same.
    again = OfflineCaptioner().caption_many(list(reversed(tabler_requests)))
    assert {r.icon_id: r.phrases for r in again} == {r.icon_id: r.phrases for r in results}


def test_offline_captioner_follows_the_four_caption_patterns() -> None:
    captioner = OfflineCaptioner()
    folder_plus = captioner.caption(
        request_for("folder-plus", ["directory", "add", "new", "create"], "Document")
    )
    assert {"add folder", "new folder", "create new folder", "folder"} <= set(folder_plus.phrases)
    trash = captioner.caption(request_for("trash", ["garbage", "delete", "remove", "bin"], "System"))
    assert {"delete", "remove", "trash"} <= set(trash.phrases)
    github = captioner.caption(request_for("brand-github", ["git", "repository", "logo", "brand"], "Brand"))
    assert "github logo" in github.phrases
    vocabulary = load_vocabulary()
    for result in (folder_plus, trash, github):
        assert 5 <= len(result.phrases) <= 8 and validate_phrases(result.phrases) == []
        assert not any(w in vocabulary.visual_words for p in result.phrases for w in p.split())


def test_offline_captioner_reports_an_icon_with_nothing_to_say() -> None:
    result = OfflineCaptioner().caption(request_for("2", [], ""))
    assert not result.ok and result.phrases == []
    assert "'2'" in result.error and "expected 1-8 phrases, got 0" in result.error


def test_a_bare_name_without_tags_still_gets_its_phrases() -> None:
    """A designer's folder of SVGs has no tags: the name is all there is, and it is enough to find
    and train on (a model captioner would be held to 5-8)."""
    for name, expected in (("folder", "folder"), ("circle-2", "circle"), ("trash", "trash")):
        result = OfflineCaptioner().caption(request_for(name, [], ""))
        assert result.ok and expected in result.phrases, (name, result)
        assert validate_phrases(result.phrases, MIN_OFFLINE_PHRASES) == []


# -- the offline captioner does not contradict the icon ------------------------------------

# What a switched-off concept must never be called, whatever its tags say (microphone-off's tags
# include "unmute": the button's action, not what the icon shows).
VISIBLE = {"show", "view", "see", "reveal", "unhide", "visible"}
SWITCHED_ON = VISIBLE | {"enable", "enabled", "activate", "unmute"}
SWITCHED_ON_PHRASES = {"turn on", "switch on"}
# At least one of these words says the concept is off, disabled, hidden, muted or absent.
SAYS_OFF = {"off", "disable", "disabled", "hide", "hidden", "invisible", "mute", "muted", "silence", "no"}
NEGATORS = {"not", "no", "non", "without"}


@pytest.fixture(scope="module")
def tabler_icons(tabler_package: Path) -> dict[str, dict]:
    return json.loads((tabler_package / "icons.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pipeline_requests(tabler_icons: dict[str, dict]) -> dict[str, CaptionRequest]:
    """Requests as the icon_captions asset builds them: the lexicon mined over the whole library
    (one item per icon and style, like the catalog), then terms, tag terms and category per icon."""
    items = []
    for name, meta in tabler_icons.items():
        tags = [str(t) for t in meta["tags"] if t is not None]  # as the Tabler source reads them
        for style in meta.get("styles") or {"outline": {}}:
            items.append(NameItem(key=f"tabler:{style}:{name}", name=name, tags=tags, style=style))
    lexicon = mine_lexicon(items)
    requests = {}
    for name, meta in tabler_icons.items():
        style = next(iter(meta.get("styles") or {"outline": {}}))
        entry = lexicon.entries[f"tabler:{style}:{name}"]
        requests[name] = CaptionRequest(
            icon_id=entry.key,
            name=name,
            terms=list(entry.terms),
            tags=list(entry.tag_terms),
            category=meta["category"],
            useful_token_count=entry.useful_token_count,
            content_hash=f"hash-{name}",
        )
    return requests


def caption_of(requests: dict[str, CaptionRequest], name: str) -> list[str]:
    result = OfflineCaptioner().caption(requests[name])
    assert result.ok and validate_phrases(result.phrases) == [], (name, result)
    return result.phrases


def concept_actions(concept: str) -> set[str]:
    """The concept's own action, said alone: "view" for eye, "lock" for lock, "delete" for trash."""
    vocabulary = load_vocabulary()
    if "-" in concept:
        return set()
    actions = {concept} if concept in vocabulary.transitive_verbs else set()
    verb = vocabulary.roles.get(concept, {}).get("verb")
    if verb:
        actions |= {verb, *vocabulary.verb_synonyms.get(verb, [])}
    return actions


def switched_on_words(phrase: str, own_words: set[str]) -> set[str]:
    """On-side words of a phrase that are not negated ("not visible") and not the icon's own name."""
    words = phrase.split()
    found = {
        w
        for i, w in enumerate(words)
        if w in SWITCHED_ON and w not in own_words and not (i and words[i - 1] in NEGATORS)
    }
    return found | {p for p in SWITCHED_ON_PHRASES if f" {p} " in f" {phrase} "}


def test_eye_off_is_hidden_never_shown(pipeline_requests: dict[str, CaptionRequest]) -> None:
    phrases = caption_of(pipeline_requests, "eye-off")
    assert {"hide", "hidden", "invisible"} <= set(phrases), phrases
    assert not any(switched_on_words(p, {"eye"}) for p in phrases), phrases  # "not visible" is fine
    assert not {"show", "view", "see", "visible", "reveal"} & set(phrases), phrases
    # and the plain eye keeps its meaning: shown, never hidden
    eye = caption_of(pipeline_requests, "eye")
    assert {"view", "show"} <= set(eye) and not {"hide", "hidden"} & set(eye), eye


def test_bell_off_is_muted_notifications(pipeline_requests: dict[str, CaptionRequest]) -> None:
    phrases = caption_of(pipeline_requests, "bell-off")
    assert "mute notifications" in phrases and "silence notifications" in phrases, phrases
    assert any(p.startswith("disable ") for p in phrases) and "bell off" in phrases, phrases
    assert not any(switched_on_words(p, {"bell"}) for p in phrases), phrases
    assert not {"unmute", "notify", "enable notification", "turn on notification"} & set(phrases)


def test_brand_x_is_a_logo_not_a_delete_action(pipeline_requests: dict[str, CaptionRequest]) -> None:
    phrases = caption_of(pipeline_requests, "brand-x")
    assert {"x logo", "x brand", "twitter brand"} <= set(phrases), phrases
    actions = {"remove", "delete", "clear", "close", "cancel", "dismiss", "exit"}
    assert not actions & {w for p in phrases for w in p.split()}, phrases
    # an "x" on an object still removes it
    assert {"remove file", "delete file"} <= set(caption_of(pipeline_requests, "file-x"))


def test_no_brand_is_captioned_as_an_action(
    tabler_icons: dict[str, dict], pipeline_requests: dict[str, CaptionRequest]
) -> None:
    vocabulary = load_vocabulary()
    brands = [name for name, meta in tabler_icons.items() if meta["category"] == "Brand"]
    assert len(brands) > 300
    for name in brands:
        phrases = caption_of(pipeline_requests, name)
        brand = name.removeprefix("brand-").replace("-", " ")
        assert phrases[0] == f"{brand} logo" or len(brand.split()) > 3, (name, phrases)
        # "open source logo" names the brand; "save", "share", "remove brand" would be actions
        actions = [p for p in phrases if p.split()[0] in vocabulary.transitive_verbs]
        assert not [p for p in actions if not p.startswith(brand)], (name, phrases)


def test_every_off_icon_says_off_and_never_the_concept_switched_on(
    tabler_icons: dict[str, dict], pipeline_requests: dict[str, CaptionRequest]
) -> None:
    off_icons = [name for name in tabler_icons if name.endswith("-off")]
    assert len(off_icons) > 500
    problems: list[tuple[str, str, list[str]]] = []
    for name in off_icons:
        phrases = caption_of(pipeline_requests, name)
        concept = name.removesuffix("-off")
        own_words = set(concept.split("-"))
        positives = (SWITCHED_ON | SWITCHED_ON_PHRASES | concept_actions(concept)) - {"off"}
        if bare := [p for p in phrases if p in positives]:
            problems.append((name, f"bare positive action {bare}", phrases))
        if on := [p for p in phrases if switched_on_words(p, own_words)]:
            problems.append((name, f"says the concept is on: {on}", phrases))
        if not any(SAYS_OFF & set(p.split()) for p in phrases):
            problems.append((name, "no phrase says off, disabled, hidden, muted or no", phrases))
    assert not problems, problems[:10]
    # the ones whose concept has an action of its own say its opposite or stay off it
    assert "unlock" in caption_of(pipeline_requests, "lock-off")
    assert not {"lock", "secure"} & set(caption_of(pipeline_requests, "lock-off"))
    assert not {"delete", "remove", "trash"} & set(caption_of(pipeline_requests, "trash-off"))
    assert not {"search", "find"} & set(caption_of(pipeline_requests, "search-off"))
    microphone = caption_of(pipeline_requests, "microphone-off")
    assert "mute microphone" in microphone and "unmute" not in microphone  # "unmute" is one of its tags


def test_tags_are_evidence_and_off_inside_a_name_is_not_a_switch() -> None:
    captioner = OfflineCaptioner()
    # No negation mark, but the tags say hidden: the eye's "view" would contradict them.
    closed = captioner.caption(request_for("eye-closed", ["hide", "hidden", "password hide"], "System"))
    assert "hide" in closed.phrases and not {"view", "show", "see"} & set(closed.phrases), closed.phrases
    # "not visible" says hidden; the "visible" the lexicon splits off it is no evidence of its own
    peek_tags = ["not visible", "not", "visible", "secret", "private", "spy"]
    peek = captioner.caption(request_for("peek", peek_tags, "System"))
    assert "not visible" in peek.phrases and "visible" not in peek.phrases and "not" not in peek.phrases
    # Another library's "-slash" is a negation mark too.
    slash = captioner.caption(request_for("eye-slash", ["privacy"], "System"))
    assert slash.phrases[:3] == ["hide", "hidden", "invisible"] and "eye off" in slash.phrases
    # "off" in the middle of a name is a word of a phrase, not the off switch.
    road = captioner.caption(request_for("car-off-road", ["off road", "4x4", "jeep"], "Vehicles"))
    assert not any("disable" in p or "turn off" in p for p in road.phrases), road.phrases
    for result in (closed, peek, slash, road):
        assert validate_phrases(result.phrases) == []


def test_a_new_captioning_algorithm_invalidates_cached_captions() -> None:
    captioner = OfflineCaptioner()
    assert ALGORITHM_VERSION == "3" and captioner.model_id == "offline-v3"
    assert "algorithm=3;" in captioner.settings_key()


# -- OpenAI-compatible captioner -------------------------------------------------------------


def test_normal_answers_and_request_shape(server: OpenAITestServer, png_path: str) -> None:
    requests = [
        request_for("folder-plus", ["directory", "add", "new"], "Document"),
        request_for("user-check", ["person", "verified", "approved"], "System"),
        request_for("x", [], "System", useful_token_count=1, image_path=png_path),
    ]
    results = fast_captioner(server.url).caption_many(requests)
    assert [r.error for r in results] == [None, None, None]
    assert [r.icon_id for r in results] == [r.icon_id for r in requests]
    assert "folder plus" in results[0].phrases and validate_phrases(results[0].phrases) == []
    assert [r.route for r in results] == ["text", "text", "vision"]
    assert all(r.attempts == 1 for r in results)

    bodies = {b["model"]: b for b in server.requests}
    text_body = bodies["openai/gpt-oss-120b"]
    schema = text_body["response_format"]["json_schema"]["schema"]
    assert text_body["response_format"]["type"] == "json_schema"
    assert (
        schema["properties"]["phrases"]["minItems"] == 5 and schema["properties"]["phrases"]["maxItems"] == 8
    )
    assert text_body["reasoning_effort"] == "medium"
    assert "<icon>" in text_body["messages"][-1]["content"]
    assert "reasoning_effort" not in bodies["Qwen/Qwen3-VL-32B-Thinking"]


def test_routing_by_useful_token_count(server: OpenAITestServer, png_path: str) -> None:
    captioner = fast_captioner(server.url, max_concurrency=1)
    text = request_for("eye", ["view"], useful_token_count=3)
    vision = request_for("eye", ["view"], useful_token_count=2, image_path=png_path)
    results = captioner.caption_many([text, vision])
    assert [r.route for r in results] == ["text", "vision"] and all(r.ok for r in results)
    assert server.models == ["openai/gpt-oss-120b", "Qwen/Qwen3-VL-32B-Thinking"]
    parts = server.requests[1]["messages"][-1]["content"]
    image_part = next(p for p in parts if p["type"] == "image_url")
    assert decode_png_data_url(image_part["image_url"]["url"]) == (224, 224)
    assert server.images == [(224, 224)] and server.image_errors == []
    assert any(p["type"] == "text" and "name: eye" in p["text"] for p in parts)


def test_vision_without_an_image_fails_clearly_without_a_call(
    server: OpenAITestServer, tmp_path: Path
) -> None:
    not_png = tmp_path / "icon.png"
    not_png.write_text("<svg/>")
    results = fast_captioner(server.url).caption_many(
        [
            request_for("dot", [], useful_token_count=0, image_path=None),
            request_for("ring", [], useful_token_count=0, image_path=str(not_png)),
        ]
    )
    assert "icon 'dot'" in results[0].error and "needs a rendered PNG" in results[0].error
    assert "is not a PNG" in results[1].error
    assert server.call_count == 0


def test_malformed_json_is_regenerated(server: OpenAITestServer) -> None:
    server.script("malformed", "empty")
    [result] = fast_captioner(server.url).caption_many(
        [request_for("layers-hide", ["layer", "visibility", "x"])]
    )
    assert result.ok and result.attempts == 3
    # The retry tells the model what was wrong with its answer.
    assert "could not be used" in server.requests[1]["messages"][-1]["content"]


def test_malformed_json_every_time_is_a_recorded_failure() -> None:
    with OpenAITestServer(default="malformed") as server:
        [result] = fast_captioner(server.url).caption_many(
            [request_for("layers", ["layer", "stack", "order"])]
        )
        assert server.call_count == 3
    assert not result.ok and result.phrases == [] and result.attempts == 3
    assert result.error.startswith("invalid after 3 attempts: answer is not valid JSON")


def test_banned_words_every_time_is_a_recorded_failure() -> None:
    with OpenAITestServer(default="invalid") as server:
        [result] = fast_captioner(server.url, max_regenerations=1).caption_many(
            [request_for("send", ["paper", "plane", "message"])]
        )
    assert result.error.startswith("invalid after 2 attempts: phrase 'red circle icon' uses banned word")


def test_invalid_then_valid_recovers(server: OpenAITestServer) -> None:
    server.script("invalid")
    [result] = fast_captioner(server.url).caption_many([request_for("send", ["paper", "plane", "message"])])
    assert result.ok and result.attempts == 2


def test_rate_limit_waits_for_retry_after(server: OpenAITestServer) -> None:
    server.script("rate_limit")
    start = time.perf_counter()
    [result] = fast_captioner(server.url).caption_many([request_for("bell", ["alert", "notify", "alarm"])])
    assert result.ok and result.attempts == 2
    assert time.perf_counter() - start >= 0.9  # Retry-After: 1, not the 0.01 s backoff


def test_rate_limit_longer_than_allowed_fails_clearly() -> None:
    with OpenAITestServer(default="rate_limit", retry_after="3600") as server:
        [result] = fast_captioner(server.url, max_retry_after_s=10).caption_many(
            [request_for("bell", ["alert", "notify", "alarm"])]
        )
    assert "rate limited: server asks to wait 3600s" in result.error and result.attempts == 1


def test_server_errors_are_retried(server: OpenAITestServer) -> None:
    server.script("error", "error")
    [result] = fast_captioner(server.url).caption_many([request_for("cloud", ["upload", "storage", "sync"])])
    assert result.ok and result.attempts == 3


def test_server_errors_every_time_give_up_with_the_reason() -> None:
    with OpenAITestServer(default="error", error_status=503) as server:
        [result] = fast_captioner(server.url, max_retries=2).caption_many(
            [request_for("cloud", ["upload", "storage", "sync"])]
        )
        assert server.call_count == 3
    assert "HTTP 503" in result.error and "gave up after 3 tries" in result.error


def test_a_hang_past_the_timeout_is_retried() -> None:
    with OpenAITestServer(hang_s=20.0) as server:
        server.script("hang")
        start = time.perf_counter()
        [result] = fast_captioner(server.url, timeout_s=0.5).caption_many(
            [request_for("clock", ["time", "wait"])]
        )
        assert result.ok and result.attempts == 2
        assert time.perf_counter() - start < 15  # gave up on the hang, did not wait it out


def test_hanging_every_time_fails_with_timeout() -> None:
    with OpenAITestServer(default="hang", hang_s=3.0) as server:
        [result] = fast_captioner(server.url, timeout_s=0.5, max_retries=1).caption_many(
            [request_for("clock", ["time", "wait"])]
        )
    assert result.error.startswith("timed out after 0.5s") and result.attempts == 2


def test_unreachable_server_is_a_failure_not_a_crash() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    [result] = fast_captioner(f"http://127.0.0.1:{port}/v1", max_retries=1).caption_many(
        [request_for("plug", ["power", "connect", "socket"])]
    )
    assert "connection error" in result.error and f"127.0.0.1:{port}" in result.error


def test_concurrency_is_bounded() -> None:
    with OpenAITestServer(delay_s=0.1) as server:
        requests = [request_for(f"icon-{i}", ["alpha", "beta", "gamma"]) for i in range(12)]
        results = fast_captioner(server.url, max_concurrency=3).caption_many(requests)
        assert all(r.ok for r in results)
        assert 1 < server.max_in_flight <= 3


def test_api_key_only_in_the_authorization_header(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with OpenAITestServer(api_key=SECRET) as server:
        server.script("error")
        ok = fast_captioner(server.url).caption_many([request_for("key", ["password", "secret", "access"])])
        assert ok[0].ok
        assert all(h["authorization"] == f"Bearer {SECRET}" for h in server.headers)
        assert all(SECRET not in json.dumps(body) for body in server.requests)
        wrong = fast_captioner(server.url, api_key="sk-wrong-key-456").caption_many(
            [request_for("key", ["password", "secret", "access"])]
        )
    assert "HTTP 401" in wrong[0].error and "sk-wrong-key-456" not in wrong[0].error
    captioner = fast_captioner(server.url)
    assert SECRET not in repr(captioner) and SECRET not in captioner.settings_key()
    assert SECRET not in caplog.text and SECRET not in str(ok)


def test_captioners_satisfy_the_protocol() -> None:
    assert isinstance(OfflineCaptioner(), Captioner)
    assert isinstance(OpenAICaptioner("http://127.0.0.1:1"), Captioner)


# -- cache -----------------------------------------------------------------------------------


def test_cache_calls_only_for_what_changed(server: OpenAITestServer, tmp_path: Path) -> None:
    captioner = fast_captioner(server.url)
    requests = [request_for(f"icon-{i}", ["alpha", "beta", "gamma"]) for i in range(20)]
    with CaptionCache(tmp_path / "captions.sqlite") as cache:
        first, stats = caption_with_cache(captioner, requests, cache)
        assert (stats.hits, stats.misses, stats.calls, stats.failures) == (0, 20, 20, 0)
        assert server.call_count == 20 and len(cache) == 20

        second, stats = caption_with_cache(captioner, requests, cache)
        assert (stats.hits, stats.calls) == (20, 0) and server.call_count == 20
        assert [r.phrases for r in second] == [r.phrases for r in first]

        changed = list(requests)
        changed[7] = dataclasses.replace(changed[7], content_hash="edited")
        third, stats = caption_with_cache(captioner, changed, cache)
        assert (stats.hits, stats.misses, stats.calls) == (19, 1, 1) and server.call_count == 21
        assert [r.icon_id for r in third] == [r.icon_id for r in changed]

    # The file is durable: a new process (here: a new connection) sees every caption.
    with CaptionCache(tmp_path / "captions.sqlite") as reopened:
        _, stats = caption_with_cache(captioner, changed, reopened)
        assert stats.calls == 0 and server.call_count == 21


def test_failures_are_not_cached_and_are_retried(server: OpenAITestServer, tmp_path: Path) -> None:
    captioner = fast_captioner(server.url, max_concurrency=1, max_regenerations=0)
    requests = [request_for(f"icon-{i}", ["alpha", "beta", "gamma"]) for i in range(3)]
    server.script("invalid")  # the first icon's only try
    with CaptionCache(tmp_path / "captions.sqlite") as cache:
        results, stats = caption_with_cache(captioner, requests, cache)
        assert stats.failures == 1 and not results[0].ok and len(cache) == 2
        assert [f["icon_id"] for f in cache.failures()] == ["test:icon-0"]

        results, stats = caption_with_cache(captioner, requests, cache)
        assert (stats.hits, stats.calls, stats.failures) == (2, 1, 0) and all(r.ok for r in results)
        assert server.call_count == 4 and cache.failures() == []


def test_identical_icons_are_captioned_once(tmp_path: Path) -> None:
    twin = request_for("folder", ["directory", "files", "archive"])
    requests = [twin, dataclasses.replace(twin, icon_id="other:folder")]
    with CaptionCache(tmp_path / "c.sqlite") as cache:
        results, stats = caption_with_cache(OfflineCaptioner(), requests, cache)
    assert stats.misses == 2 and stats.calls == 1
    assert [r.icon_id for r in results] == ["test:folder", "other:folder"]
    assert results[0].phrases == results[1].phrases


def test_cache_key_parts(png_path: str) -> None:
    base = OpenAICaptioner("http://127.0.0.1:1")
    other_vision = OpenAICaptioner("http://127.0.0.1:1", vision_model="other/vlm")
    other_effort = OpenAICaptioner("http://127.0.0.1:1", reasoning_effort="high")
    text = request_for("folder-plus", ["directory", "add", "new"])
    vision = request_for("x", [], useful_token_count=1, image_path=png_path)
    # A text-routed icon keeps its key when only the vision model changes; a vision one does not.
    assert make_cache_key(base, text) == make_cache_key(other_vision, text)
    assert make_cache_key(base, vision) != make_cache_key(other_vision, vision)
    assert make_cache_key(base, text) != make_cache_key(other_effort, text)
    assert make_cache_key(base, text) != make_cache_key(base, text, lexicon_version="2")
    assert make_cache_key(base, text) != make_cache_key(base, dataclasses.replace(text, tags=["directory"]))
    # Where the server lives and which key it takes do not change what it answers.
    assert make_cache_key(base, text) == make_cache_key(
        OpenAICaptioner("http://other:8000", api_key="k"), text
    )


# -- the text-vs-vision threshold --------------------------------------------------------------


@pytest.mark.parametrize("min_text_tokens", [0, 2, 3, 6])
def test_the_configured_threshold_routes_and_is_reported_alike_by_lexicon_and_captions(
    min_text_tokens: int, tmp_path: Path
) -> None:
    """captions.min_text_tokens is the only threshold: the captioner's routes, the lexicon's
    routed_to_vision_share and the captions' routed_to_vision and check all follow it."""
    config = parse_config(
        "sources:\n  - kind: tabler\ncaptions:\n  captioner: openai\n  base_url: http://127.0.0.1:1\n"
        f"  min_text_tokens: {min_text_tokens}\n",
        tmp_path / "c.yaml",
    )
    settings = config.captions
    icons = {
        f"t:{name}": IconRecord(
            icon_id=f"t:{name}",
            source="t",
            name=name,
            raw_name=name,
            file_path=f"{name}.svg",
            format="svg",
            content_hash=name,
            tags=tuple(tags),
        )
        for name, tags in [
            ("eye-off", ["hide", "invisible", "private"]),
            ("x", []),
            ("folder-plus", ["directory", "add"]),
            ("bell", ["notification"]),
            ("mark-for-redaction", []),
        ]
    }
    lexicon = mine_lexicon([NameItem.from_icon(icon) for icon in icons.values()])
    useful = {key: entry.useful_token_count for key, entry in lexicon.entries.items()}
    assert len(set(useful.values())) > 2  # the thresholds above split these icons differently

    # The lexicon asset's figure: every entry's useful-token count against the configured threshold.
    lexicon_vision = vision_count(useful.values(), settings.min_text_tokens)
    # The captions asset's figures, from the same requests the captioner receives.
    requests = build_requests(icons, lexicon, {})
    captioner = CaptionerResource().captioner(settings)
    routed = [captioner.route_for(r).route for r in requests]
    results = [
        CaptionResult(r.icon_id, [], route, "m", 1, "not sent")
        for r, route in zip(requests, routed, strict=True)
    ]
    summary = summarise_batch(list(icons), requests, results, settings)
    vision_check = next(c for c in summary.checks if c.name == "vision_route_share")

    expected = sum(count < min_text_tokens for count in useful.values())
    assert lexicon_vision == summary.routed_to_vision == routed.count("vision") == expected
    assert vision_check.metadata["share"] == round(expected / len(icons), 4)
    assert vision_check.metadata["min_text_tokens"] == min_text_tokens


def test_one_captioner_routes_text_and_vision_to_their_own_servers(png_path: str, tmp_path: Path) -> None:
    with OpenAITestServer() as text_server, OpenAITestServer() as vision_server:
        config = parse_config(
            f"sources:\n  - kind: tabler\ncaptions:\n  captioner: openai\n  base_url: {text_server.url}\n"
            f"  vision_base_url: {vision_server.url}\n  max_retries: 0\n",
            tmp_path / "c.yaml",
        )
        captioner = CaptionerResource().captioner(config.captions)
        text = request_for("folder-plus", ["directory", "add", "new"], useful_token_count=3)
        vision = request_for("x", [], useful_token_count=0, image_path=png_path)
        results = captioner.caption_many([text, vision])
        assert [r.route for r in results] == ["text", "vision"] and all(r.ok for r in results)
        assert text_server.models == ["openai/gpt-oss-120b"]
        assert vision_server.models == ["Qwen/Qwen3-VL-32B-Thinking"]
