"""How closely a text query names an icon: what puts "settings" -> settings first in hybrid search.

Levels, from the library's own names and tags (no hand list of icons):

- EXACT: the icon's name, less a style word the catalog uses ("settings-filled", "Settings (filled)"),
  is the query as typed (stop words of a longer query dropped), or, when no name is, its singular or
  plural ("Shopping carts" -> shopping-cart; "star" is star, and stars only NEAR).
- NEAR: the name holds every word of a query of two words or more ("shopping cart" ->
  shopping-cart-plus), or the icon's first tag, its library's primary synonym, is the query
  (Tabler's trash: "delete").
- none: anything else, and any icon whose name adds a negation the query does not say ("copy" never
  makes copy-off or copy-x a match; "copy off" does).

Hybrid search ranks EXACT icons first, then NEAR ones, each tier ordered by the fused score
(fusion.fuse): the channels still decide among icons that name the query equally well.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from icon_pipeline.library.naming import name_key, words
from icon_pipeline.search.keywords import search_words

EXACT = 2
NEAR = 1


def plain_name(name: str, styles: Collection[str] = ()) -> str:
    """The name as comparable words without a trailing style word ("settings-filled" -> "settings");
    a name that is only a style word ("outline") keeps it."""
    key = name_key(name).split()
    style_words = {name_key(s) for s in styles if s} | search_words().styles
    while len(key) > 1 and key[-1] in style_words:
        key.pop()
    return " ".join(key)


def spelled_name(name: str, styles: Collection[str] = ()) -> str:
    """A name as a designer types it: its words, a trailing style word dropped ("Settings-Filled" ->
    "settings"); plurals kept ("stars" is not "star")."""
    return " ".join(words(name)[: len(plain_name(name, styles).split())])


@dataclass
class NameMatcher:
    """Every icon's plain name and first tag, indexed for `levels`."""

    plain: dict[str, str]  # icon_id -> plain name key
    first_tag: dict[str, str] = field(default_factory=dict)  # icon_id -> its first tag's key
    spelled: dict[str, str] = field(default_factory=dict)  # icon_id -> spelled_name

    def __post_init__(self) -> None:
        self.by_name: dict[str, list[str]] = {}
        self.by_spelling: dict[str, list[str]] = {}
        for icon_id, spelled in sorted(self.spelled.items()):
            self.by_spelling.setdefault(spelled, []).append(icon_id)
        self.by_word: dict[str, set[str]] = {}
        self.by_first_tag: dict[str, list[str]] = {}
        for icon_id, key in sorted(self.plain.items()):
            self.by_name.setdefault(key, []).append(icon_id)
            for word in key.split():
                self.by_word.setdefault(word, set()).add(icon_id)
        for icon_id, key in sorted(self.first_tag.items()):
            if key:
                self.by_first_tag.setdefault(key, []).append(icon_id)

    @classmethod
    def build(
        cls,
        names: Mapping[str, str],
        tags: Mapping[str, Sequence[str]] | None = None,
        styles: Collection[str] = (),
    ) -> NameMatcher:
        """`names`: icon_id -> name; `tags`: icon_id -> its tags in the library's order; `styles`: the
        style values the catalog uses (Tabler: outline, filled), dropped from the end of a name."""
        tags = tags or {}
        return cls(
            plain={i: plain_name(n, styles) for i, n in names.items()},
            first_tag={i: name_key(str(t[0])) for i, t in tags.items() if len(t)},
            spelled={i: spelled_name(n, styles) for i, n in names.items()},
        )

    def levels(self, query: str) -> dict[str, int]:
        """icon_id -> EXACT or NEAR for the icons the query names; absent: not named."""
        every = name_key(query).split()
        content = [w for w in every if w not in search_words().query_stopwords] or every
        if not content:
            return {}
        found: dict[str, int] = {}
        said = set(every)
        spelled = words(query)
        typed = [w for w in spelled if w not in search_words().query_stopwords] or spelled
        for key, spelled_key in ((" ".join(every), " ".join(spelled)), (" ".join(content), " ".join(typed))):
            # The name as typed; failing that, its singular or plural ("shopping carts").
            named = self.by_spelling.get(spelled_key) or self.by_name.get(key, ())
            for icon_id in named:
                found[icon_id] = EXACT
            for icon_id in self.by_name.get(key, ()):
                found.setdefault(icon_id, NEAR)  # "stars" for "star": after the icon typed
        # Names holding every word: only for two words or more ("shopping cart" -> shopping-cart-plus);
        # every name with "gear" in it ahead of the rest lost the external benchmark's tag queries.
        holders = set()
        if len(content) > 1:
            holders = set.intersection(*(self.by_word.get(w, set()) for w in set(content)))
        holders |= set(self.by_first_tag.get(" ".join(content), ()))
        for icon_id in holders:
            added = set(self.plain[icon_id].split()) - said
            if icon_id not in found and not added & search_words().negations:
                found[icon_id] = NEAR
        return found
