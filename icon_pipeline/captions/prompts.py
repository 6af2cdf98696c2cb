"""Versioned prompt files: `icon_pipeline/prompts/<name>.v<N>.md`.

The version lives in the file name and goes into the caption cache key, so editing a prompt
means adding `<name>.v<N+1>.md`: old captions stay valid until the new version is chosen. A file
holds the system message, a line `=== USER ===`, then the user message with `$field`
placeholders (string.Template, so JSON braces in the text need no escaping).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template

from icon_pipeline.core.package_data import package_file

USER_SEPARATOR = "=== USER ==="
_FILE_NAME = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.md$")


class PromptError(ValueError):
    """A prompt that cannot be found or filled; the message names the prompt and what is missing."""


@dataclass(frozen=True)
class Prompt:
    """One prompt file: its text, name and version ("v1")."""

    text: str
    version: str
    name: str = ""

    @property
    def key(self) -> str:
        """`caption_text.v1`: what the cache key records."""
        return f"{self.name}.{self.version}"

    @property
    def system(self) -> str:
        return self.text.split(USER_SEPARATOR, 1)[0].strip() if USER_SEPARATOR in self.text else ""

    @property
    def user_template(self) -> str:
        return self.text.split(USER_SEPARATOR, 1)[1].strip() if USER_SEPARATOR in self.text else self.text

    def render(self, **fields: object) -> tuple[str, str]:
        """(system, user) with every `$field` filled; a missing field is an error, not a blank."""
        try:
            user = Template(self.user_template).substitute({k: str(v) for k, v in fields.items()})
        except KeyError as exc:
            raise PromptError(f"prompt {self.key}: no value for placeholder ${exc.args[0]}") from None
        return self.system, user


def _prompt_dir() -> Path:
    return package_file("prompts")


def available_prompts() -> dict[str, list[int]]:
    """name -> sorted versions found in the prompts folder."""
    found: dict[str, list[int]] = {}
    for entry in _prompt_dir().iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.setdefault(match["name"], []).append(int(match["version"]))
    return {name: sorted(versions) for name, versions in found.items()}


@lru_cache(maxsize=32)
def load_prompt(name: str, version: str | int | None = None) -> Prompt:
    """The prompt `name` at `version` ("v2", 2) or, by default, its highest version."""
    versions = available_prompts().get(name)
    if not versions:
        known = ", ".join(sorted(available_prompts())) or "none"
        raise PromptError(f"no prompt named {name!r} in icon_pipeline/prompts (known: {known})")
    if version is None:
        number = versions[-1]
    else:
        number = int(str(version).lstrip("v"))
        if number not in versions:
            raise PromptError(f"prompt {name!r} has no version v{number} (have: {versions})")
    text = _prompt_dir().joinpath(f"{name}.v{number}.md").read_text(encoding="utf-8")
    return Prompt(text=text, version=f"v{number}", name=name)
