"""Matching another icon set's icons to the library's, by normalised name and alias.

The rule: a set's icon matches every library icon whose name, as comparable words (`name_key`:
separators and case split, plurals folded), equals the set icon's name or one of its aliases. So
Font Awesome's `house` (alias `home`) matches Tabler's `home`, Phosphor's `magnifying-glass`
matches a library's `magnifying-glass`, and `arrow-left` matches `arrow-left` whatever the style.
Nothing fuzzier: a near name (`home-2`, `bell-ringing`) is another concept, and a wrong match would
count a right answer as a miss. A renamed icon in a new version of a set simply matches something
else, or nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from icon_pipeline.library.naming import name_key


@dataclass
class NameIndex:
    """The library's icons by name key."""

    by_key: dict[str, set[str]] = field(default_factory=dict)  # name_key -> icon ids

    @classmethod
    def build(cls, names: Mapping[str, str]) -> NameIndex:
        """`names`: icon_id -> the icon's name."""
        index = cls()
        for icon_id, name in names.items():
            key = name_key(name)
            if key:
                index.by_key.setdefault(key, set()).add(icon_id)
        return index

    def match(self, name: str, aliases: Iterable[str] = ()) -> frozenset[str]:
        """The library icons a set's icon `name` (or one of its `aliases`) names."""
        found: set[str] = set()
        for text in (name, *aliases):
            found |= self.by_key.get(name_key(text), set())
        return frozenset(found)
