"""Captions that contradict their icon's own name and tags, and what a reviewer's edit changed
(icon_pipeline.captions.review): pure functions, Tabler's real names and tags, no database."""

from __future__ import annotations

import pytest

from icon_pipeline.captions import CaptionRequest, OfflineCaptioner
from icon_pipeline.captions.review import WHOLE_CAPTION, caption_flags, phrase_diff

# Tabler 3.51's own tags for these icons.
EYE_OFF = ["hide", "hidden", "invisible", "visibility-off", "eye-slash", "unseen", "password-hide"]
EYE_OFF += ["private", "not-visible", "eye", "off"]
EYE = ["eye", "view", "visibility", "show", "see", "preview", "visible", "watch", "vision", "password-show"]
BELL_OFF = ["notification", "alert", "reminder", "notify", "alarm", "mute", "silent", "do-not-disturb"]
BELL_OFF += ["disabled", "notifications-off", "bell", "off"]
BRAND_X = ["x", "twitter", "tweet", "social", "social-media", "microblog", "logo", "brand"]
TRASH = ["delete", "remove", "bin", "garbage", "rubbish", "waste-basket", "trash-can", "recycle-bin", "trash"]


def test_an_off_icon_captioned_with_show_is_flagged() -> None:
    flags = caption_flags("eye-off", EYE_OFF, ["show", "hide password", "eye off"], "System")
    assert [(f.phrase, f.reason) for f in flags] == [("show", "says show, but 'eye-off' is switched off")]
    # nothing in it says off: the whole caption is flagged too
    flags = caption_flags("eye-off", EYE_OFF, ["Show", "eye", "password"], "System")
    assert [f.phrase for f in flags] == ["show", WHOLE_CAPTION]
    assert "no phrase says off, disable, hide or mute" in str(flags[-1])


def test_an_off_icon_captioned_as_on_is_flagged() -> None:
    flags = caption_flags("bell-off", BELL_OFF, ["notifications on", "bell", "alarm"], "System")
    assert [str(f) for f in flags] == [
        "\"notifications on\": says on, but 'bell-off' is switched off",
        "'bell-off' is switched off, but no phrase says off, disable, hide or mute",
    ]
    # "no notifications" and "mute notifications" do say off
    assert caption_flags("bell-off", BELL_OFF, ["no notifications", "bell"]) == []
    assert caption_flags("bell-off", BELL_OFF, ["mute notifications", "alarm"]) == []


def test_a_brand_captioned_as_an_action_is_flagged() -> None:
    flags = caption_flags("brand-x", BRAND_X, ["delete brand", "x logo", "twitter brand"], "Brand")
    assert [(f.phrase, f.reason) for f in flags] == [
        ("delete brand", "reads as an action (delete), but a brand icon is a logo")
    ]
    # the name prefix makes a brand even without the category; a brand's own name is not an action
    assert [f.phrase for f in caption_flags("brand-x", BRAND_X, ["remove x", "x"])] == ["remove x"]
    assert caption_flags("brand-campaignmonitor", [], ["campaign monitor", "email marketing"], "Brand") == []


def test_tags_on_one_side_of_a_switch_deny_the_other() -> None:
    flags = caption_flags("eye", EYE, ["view", "hide password"], "System")
    assert [str(f) for f in flags] == ['"hide password": says hide, but the tags say view, show, see']
    # a trash can's caption may say delete: only brands and off icons forbid actions
    assert caption_flags("trash", TRASH, ["delete", "remove item", "trash can"]) == []


@pytest.mark.parametrize(
    ("name", "tags", "category"),
    [
        ("eye-off", EYE_OFF, "System"),
        ("eye", EYE, "System"),
        ("bell-off", BELL_OFF, "System"),
        ("brand-x", BRAND_X, "Brand"),
        ("trash", TRASH, "System"),
        ("view-360-off", ["panorama", "off"], "Photography"),
        ("edit-circle-off", ["pencil", "off"], "Design"),
    ],
)
def test_the_offline_captioners_own_captions_are_not_flagged(
    name: str, tags: list[str], category: str
) -> None:
    request = CaptionRequest(icon_id=name, name=name, tags=tags, category=category)
    phrases = OfflineCaptioner().caption(request).phrases
    assert phrases and caption_flags(name, tags, phrases, category) == []


def test_no_phrases_no_flags() -> None:
    assert caption_flags("eye-off", EYE_OFF, []) == caption_flags("eye-off", EYE_OFF, ["", "  "]) == []


def test_phrase_diff_says_what_was_removed_added_and_kept() -> None:
    generated = ["notification bell", "alarm", "ring bell", "alert"]
    edited = ["notification bell", "doorbell", "alert", "ring bell"]
    assert phrase_diff(generated, edited) == [
        ("kept", "notification bell"),
        ("removed", "alarm"),
        ("added", "doorbell"),
        ("kept", "alert"),
        ("kept", "ring bell"),
    ]
    assert phrase_diff(generated, generated) == [("kept", p) for p in generated]
    assert phrase_diff([], ["a b"]) == [("added", "a b")]
