"""Sentence vectors of many texts with a cache file keyed by text: a refreshed caption set only
pays a forward pass for the texts it has not embedded before."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from icon_pipeline.model.sentence_encoder import load_sentence_encoder

CHUNK = 2048  # texts per encoder call, each reported in the log


def cached_text_vectors(texts: list[str], cache: Path, log: Callable[[str], None]) -> np.ndarray:
    """Sentence vectors for `texts`, computing only those not in the cache file (keyed by text)."""
    encoder = load_sentence_encoder()
    known: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["model"]) == encoder.model_id:
                known = dict(zip(stored["texts"].tolist(), stored["vectors"], strict=True))
    missing = sorted(set(texts) - set(known))
    if missing:
        log(f"embedding {len(missing)} new texts with {encoder.model_id} ({len(known)} cached)")
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            known.update(zip(chunk, encoder.embed(chunk), strict=True))
            log(f"embedded {min(start + CHUNK, len(missing))}/{len(missing)} texts")
        ordered = sorted(known)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
        os.close(fd)
        np.savez(
            tmp,
            model=encoder.model_id,
            texts=np.array(ordered),
            vectors=np.stack([known[t] for t in ordered]),
        )
        os.replace(tmp, cache)
    return np.stack([known[t] for t in texts])
