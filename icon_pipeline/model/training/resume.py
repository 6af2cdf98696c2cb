"""Which checkpoint to resume from: the latest complete `checkpoint-N` in the output dir.

A kill during a save leaves `checkpoint-N` half-written (the Trainer writes the weights, then the
optimizer, scheduler and RNG states, and `trainer_state.json` last). Resuming from it fails, and
so would every later run; instead it is skipped, with the reason, for the previous complete one.
Nothing is deleted: the Trainer overwrites the folder when it saves step N again.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open

CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
TRAINER_STATE = "trainer_state.json"
SAFE_WEIGHTS, SAFE_WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
# Written by torch.save (zip archives): a truncated one has lost its central directory at the end.
OPTIMIZER_STATES = ("optimizer.pt", "scheduler.pt")


@dataclass
class ResumeChoice:
    checkpoint: Path | None  # None: no complete checkpoint, start fresh
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (folder name, why), newest first

    def describe(self) -> str | None:
        """'checkpoint-8 is incomplete (why); resuming from checkpoint-4', or None if nothing was skipped."""
        if not self.skipped:
            return None
        incomplete = "; ".join(f"{name} is incomplete ({why})" for name, why in self.skipped)
        if self.checkpoint is None:
            return f"{incomplete}; no complete checkpoint left, starting fresh"
        return f"{incomplete}; resuming from {self.checkpoint.name}"


def choose_checkpoint(output_dir: Path) -> ResumeChoice:
    """The newest checkpoint-N in `output_dir` that is complete, and the newer ones that are not."""
    found = []
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            match = CHECKPOINT_DIR.fullmatch(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
    choice = ResumeChoice(checkpoint=None)
    for step, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path, step)
        if problem is None:
            choice.checkpoint = path
            break
        choice.skipped.append((path.name, problem))
    return choice


def checkpoint_problem(path: Path, step: int) -> str | None:
    """Why the Trainer could not resume from `path` (one short reason), or None if it can."""
    return _state_problem(path / TRAINER_STATE, step) or _weights_problem(path) or _optimizer_problem(path)


def _state_problem(state_file: Path, step: int) -> str | None:
    if not state_file.is_file():
        return f"no {TRAINER_STATE}"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{TRAINER_STATE} is unreadable: {type(exc).__name__}"
    saved_step = state.get("global_step") if isinstance(state, dict) else None
    if saved_step != step:
        return f"{TRAINER_STATE} records step {saved_step!r}, not {step}"
    return None


def _weights_problem(path: Path) -> str | None:
    if (path / SAFE_WEIGHTS_INDEX).is_file():
        try:
            index = json.loads((path / SAFE_WEIGHTS_INDEX).read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            return f"{SAFE_WEIGHTS_INDEX} is unreadable"
        return next((p for shard in shards if (p := _safetensors_problem(path / shard))), None)
    if (path / SAFE_WEIGHTS).is_file():
        return _safetensors_problem(path / SAFE_WEIGHTS)
    if (path / TORCH_WEIGHTS).is_file():
        return _zip_problem(path / TORCH_WEIGHTS)
    return f"no model weights ({SAFE_WEIGHTS})"


def _safetensors_problem(weights: Path) -> str | None:
    """Reads the header only; safetensors checks that it covers the whole file (a truncated one does not)."""
    if not weights.is_file():
        return f"no {weights.name}"
    try:
        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as exc:
        return f"{weights.name} is unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


def _optimizer_problem(path: Path) -> str | None:
    for name in OPTIMIZER_STATES:
        if not (path / name).is_file():
            return f"no {name}"
        problem = _zip_problem(path / name)
        if problem:
            return problem
    return None


def _zip_problem(archive: Path) -> str | None:
    try:
        with zipfile.ZipFile(archive) as opened:
            if not opened.namelist():
                return f"{archive.name} is empty"
    except (zipfile.BadZipFile, OSError):
        return f"{archive.name} is truncated or not a torch.save file"
    return None
