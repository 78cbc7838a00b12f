"""Caption embeddings for Detic's caption loss: a record's caption, embedded by the frozen text encoder, cached.

The encoder is cfg.MODEL.TEXT_ENCODER's (the one the class embeddings come from, so captions and classes share a
space), built on first use and kept outside the module tree (no parameters, nothing in checkpoints). Captions
composed from findings repeat, so each distinct text is encoded once per process, on its own.
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
            # Building the encoder initialises layers from torch's generator: keep training's draws (region
            # sampling) where they are, so a run draws the same whenever its first caption batch comes (e.g. resumed).
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                if self._encoder is None:
                    from .build import build_text_encoder

                    self._encoder = build_text_encoder(self._cfg)
                if len(self._cache) + len(missing) > MAX_CACHED_CAPTIONS:
                    self._cache.clear()
                # one text per forward pass: a batch pads its texts to the longest, which moves the last digits of
                # an embedding with its batch-mates (a resumed run would then not repeat the uninterrupted one)
                encoded = F.normalize(torch.cat([self._encoder.encode([t]).float().cpu() for t in missing]), dim=-1)
            self._cache.update(zip(missing, encoded))
        return torch.stack([self._cache[t] for t in texts])
