"""The open icon sets by name and role, standard library only: the config refuses an unknown,
banned or misused set when it is read (core/config.py), before any stage runs. The packages,
versions and readers of each set are library/sources/icon_sets.py's.

Lucide (any lucide-* package) and Feather (feather-icons, Lucide's origin) are kept for an
independent held-out check: `check_allowed` refuses them everywhere a set is named.
"""

from __future__ import annotations

import re
from typing import Literal

Role = Literal["corpus", "benchmark"]

# Never used for anything by the project: an independent held-out check uses them.
BANNED_PATTERNS = (re.compile(r"lucide", re.I), re.compile(r"feather", re.I))

# corpus sets teach the model; benchmark sets are queries nobody on the project wrote. Never mixed.
SET_ROLES: dict[str, Role] = {
    "mdi": "corpus",
    "iconoir": "corpus",
    "remixicon": "corpus",
    "material-symbols": "corpus",
    "phosphor": "benchmark",
    "fontawesome": "benchmark",
}


class IconSetError(ValueError):
    """A set that cannot be used: unknown, banned, not fetched, or a package not as expected."""


def check_allowed(name: str) -> None:
    """Refuse Lucide and Feather by name or package, whatever the spelling."""
    if any(pattern.search(name) for pattern in BANNED_PATTERNS):
        raise IconSetError(
            f"{name!r}: Lucide and Feather are never used by this project (not for training, tuning, "
            "vocabulary or tests); an independent held-out check uses them"
        )


def check_set_name(name: str, role: Role | None = None) -> Role:
    """The role of the set `name`; IconSetError naming the choices for an unknown or banned one,
    or one of another role (a benchmark set is never a training set, nor the reverse)."""
    check_allowed(name)
    known = SET_ROLES.get(name)
    if known is None:
        raise IconSetError(f"unknown icon set {name!r}; known: {', '.join(SET_ROLES)}")
    if role is not None and known != role:
        raise IconSetError(
            f"{name} is a {known} set, not a {role} set: the external benchmark's sets are never "
            "trained on, and the corpus is never a benchmark"
        )
    return known
