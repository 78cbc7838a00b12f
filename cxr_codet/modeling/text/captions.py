"""Caption embeddings for Detic's caption loss: a record's caption, embedded by the frozen text encoder, cached.

The encoder is cfg.MODEL.TEXT_ENCODER's (the one the class embeddings come from, so captions and classes share a
space), built on first use and kept outside the module tree (no parameters, nothing in checkpoints). Captions
composed from findings repeat, so each distinct text is encoded once per process.
"""
from typing import Dict, List, Sequence

import torch
from torch.nn import functional as F

from ...data.descriptions import GRANULARITIES

# Distinct captions kept before the cache is emptied.
MAX_CACHED_CAPTIONS = 50000


def record_caption(record: dict, granularity: str) -> str:
    """The caption of a record or mapped input: its "captions" entry at `granularity`, else its "caption"; a record
    with neither is a ValueError naming its file."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"MODEL.CAPTION_LOSS.GRANULARITY must be one of {list(GRANULARITIES)}, got {granularity!r}")
    captions = record.get("captions") or {}
    text = captions.get(granularity) or record.get("caption")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"training image {record.get('file_name', record.get('image_id', '?'))!r} has no caption: the "
                         "caption loss needs a \"caption\" or \"captions\" entry in every caption-stream image")
    return text


class CaptionEmbedder:
    """Callable list[str] -> [N, D] L2-normalised embeddings of captions (CPU), cached per text."""

    def __init__(self, cfg):
        self._cfg = cfg.clone()
        self._encoder = None
        self._cache: Dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        missing: List[str] = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            if self._encoder is None:
                from .build import build_text_encoder

                self._encoder = build_text_encoder(self._cfg)
            if len(self._cache) + len(missing) > MAX_CACHED_CAPTIONS:
                self._cache.clear()
            with torch.no_grad():
                encoded = F.normalize(self._encoder.encode(missing).float().cpu(), dim=-1)
            self._cache.update(zip(missing, encoded))
        return torch.stack([self._cache[t] for t in texts])
