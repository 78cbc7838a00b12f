"""The frozen text-encoder interface every backend implements, and the registry that names the backends.

A backend turns a list of texts into one vector per text. Backends are frozen feature extractors: no
gradients, always in eval mode (a detector's `model.train()` does not switch their dropout back on).
"""
from typing import List, Optional

import torch
from detectron2.utils.registry import Registry
from torch import nn
from tqdm import tqdm

from .word_features import ReportEmbeddings, TokenEmbeddings, concat_token_embeddings, pool_sentences_and_report

TEXT_ENCODER_REGISTRY = Registry("TEXT_ENCODER")
TEXT_ENCODER_REGISTRY.__doc__ = """
Frozen text-encoder backends, keyed by the short name used in cfg.MODEL.TEXT_ENCODER.BACKEND
("open_clip", "transformers", "sentence_transformers", "precomputed"). Each entry is a `TextEncoder`
subclass called as `cls(name_or_path, **kwargs)`.
"""

# Batches of texts above which `encode` shows a progress bar (caption dumps run to thousands of texts).
_PROGRESS_MIN_BATCHES = 10


def register_text_encoder(backend: str):
    """Class decorator registering a `TextEncoder` subclass under `backend` (fvcore keys by __name__ otherwise)."""

    def deco(cls):
        cls.backend = backend
        TEXT_ENCODER_REGISTRY._do_register(backend, cls)
        return cls

    return deco


class TextEncoder(nn.Module):
    """Abstract frozen text encoder: `encode(texts)` -> [N, dim] float32 CPU tensor that callers L2-normalise
    (the interface does not; a model whose own pipeline normalises, such as MiniLM, returns unit vectors).

    Subclasses set `self.dim`, implement `_encode_batch`, and call `self._freeze()` at the end of
    `__init__`. BERT-family backends also implement `_encode_tokens_batch` (word-level features).
    """

    backend = "abstract"
    # Used when cfg.MODEL.TEXT_ENCODER.NAME is empty; None means the backend needs an explicit name.
    DEFAULT_NAME: Optional[str] = None
    # Constructor keyword -> cfg.MODEL.TEXT_ENCODER key, read by `text_encoder_spec(cfg)`.
    CONFIG_KEYS = {"batch_size": "BATCH_SIZE", "device": "DEVICE"}
    # False for backends that only serve stored class vectors (no text is ever encoded).
    ENCODES_TEXT = True

    def __init__(self, name_or_path: str = "", *, batch_size: int = 64, device: str = "cpu"):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"{type(self).__name__}: batch_size must be >= 1, got {batch_size}")
        self.name_or_path = name_or_path or self.DEFAULT_NAME or ""
        self.batch_size = int(batch_size)
        # How the encoder was built; `build_text_encoder_from_spec` records its full spec here.
        self.spec = {"backend": self.backend, "name_or_path": self.name_or_path}
        self.initial_device = device
        self.dim = 0

    def _freeze(self):
        """Stop gradients, switch to eval mode and move to the requested device; call last in `__init__`."""
        for param in self.parameters():
            param.requires_grad_(False)
        self.to(self.initial_device)
        self.eval()

    def train(self, mode: bool = True):
        """Frozen: stays in eval mode whatever `mode` a parent module passes down."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        """Where the weights live now (a parent `.to(...)` may have moved them)."""
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def encode(self, texts: List[str]) -> torch.Tensor:
        """Embed `texts` in batches of `batch_size`: [N, dim] float32 on CPU, not normalised here."""
        texts = _check_texts(texts, type(self).__name__)
        if not texts:
            return torch.zeros(0, self.dim)
        starts = range(0, len(texts), self.batch_size)
        chunks = []
        with torch.no_grad():
            for start in tqdm(starts, desc=f"{self.backend} text encoder", unit="batch",
                              disable=len(starts) < _PROGRESS_MIN_BATCHES):
                chunks.append(self._encode_batch(texts[start:start + self.batch_size]).float().cpu())
        return torch.cat(chunks)

    def encode_tokens(self, texts: List[str]) -> TokenEmbeddings:
        """Word-level features: sub-word pieces summed into words, last hidden layers summed (BERT backends)."""
        texts = _check_texts(texts, type(self).__name__)
        parts = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                parts.append(self._encode_tokens_batch(texts[start:start + self.batch_size]))
        return concat_token_embeddings(parts, self.token_dim)

    def encode_reports(self, texts: List[str]) -> ReportEmbeddings:
        """Word, sentence (mean of its words) and report (mean of all words) features of each text."""
        return pool_sentences_and_report(self.encode_tokens(texts))

    @property
    def token_dim(self) -> int:
        """Width of `encode_tokens` features (the transformer's hidden size; may differ from `dim`)."""
        return self.dim

    def _encode_batch(self, texts: List[str]) -> torch.Tensor:
        """Embed one batch (inside no_grad); returns [len(texts), dim] on any device and float dtype."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _encode_batch")

    def _encode_tokens_batch(self, texts: List[str]) -> TokenEmbeddings:
        """Word-level features of one batch; only BERT-family backends provide them."""
        raise NotImplementedError(
            f"text encoder backend '{self.backend}' ({self.name_or_path}) gives no word-level features; "
            "use the 'transformers' or 'sentence_transformers' backend with a BERT-family model"
        )

    def fixed_class_embeddings(self, num_classes: int) -> Optional[torch.Tensor]:
        """A stored [num_classes, dim] class matrix if the backend holds one (precomputed files), else None."""
        return None

    def extra_repr(self) -> str:
        return f"backend={self.backend}, name={self.name_or_path!r}, dim={self.dim}"


def _check_texts(texts, owner: str) -> List[str]:
    """`texts` as a list of str, or a TypeError naming the offending position."""
    if isinstance(texts, str):
        raise TypeError(f"{owner}: expected a list of texts, got a single str {texts[:60]!r}")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{owner}: text {index} is a {type(text).__name__}, expected str: {text!r}")
    return texts
