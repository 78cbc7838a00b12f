"""The frozen text encoder of the image-text models, kept out of the module tree, with per-text feature caches.

The encoder is frozen (AFLoc fine-tunes BERT; here only the heads' projections train, which keeps CPU
training cheap), so a text's features never change: each distinct text is encoded once and reused.
Holding the encoder in a plain object keeps its weights out of the optimizer and the checkpoints.
"""
from typing import Dict, List, NamedTuple, Sequence

import torch
from torch.nn import functional as F

from ...data.descriptions import GRANULARITIES, compose_report, finding_descriptions
from .base import TextEncoder

# Distinct texts kept per cache before it is emptied (composed reports and prompts repeat a lot).
MAX_CACHED_TEXTS = 20000


class TextLevels(NamedTuple):
    """Multi-level features of a batch of texts: `words` [N, W, D] with `word_mask` [N, W] (content words:
    punctuation left out), `sentences` [N, S, D] with `sentence_mask` [N, S], and `report` [N, D]."""

    words: torch.Tensor
    word_mask: torch.Tensor
    sentences: torch.Tensor
    sentence_mask: torch.Tensor
    report: torch.Tensor

    def to(self, device) -> "TextLevels":
        """The same features on `device`."""
        return TextLevels(*(tensor.to(device) for tensor in self))


def _is_content_word(word: str) -> bool:
    """A word with a letter or digit (".", ",", ":" are not words a region can show)."""
    return any(character.isalnum() for character in word)


def _pad_stack(rows: Sequence[torch.Tensor], dim: int):
    """[N, L, D] zero-padded stack of [L_i, D] rows and its [N, L] validity mask."""
    length = max(row.shape[0] for row in rows)
    stacked = torch.stack([F.pad(row, (0, 0, 0, length - row.shape[0])) for row in rows])
    mask = torch.arange(length).unsqueeze(0) < torch.tensor([row.shape[0] for row in rows]).unsqueeze(1)
    return stacked.reshape(len(rows), length, dim), mask


class FrozenTextFeatures:
    """Sentence vectors (`sentences`) and word/sentence/report features (`levels`) of texts, cached per text."""

    def __init__(self, encoder: TextEncoder):
        self.encoder = encoder
        self._sentence_cache: Dict[str, torch.Tensor] = {}
        self._level_cache: Dict[str, tuple] = {}

    @property
    def sentence_dim(self) -> int:
        """Width of `sentences` vectors."""
        return int(self.encoder.dim)

    @property
    def token_dim(self) -> int:
        """Width of `levels` features (the transformer's hidden size)."""
        return int(self.encoder.token_dim)

    def sentences(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, sentence_dim] float32 CPU: the encoder's (unnormalised) vector of each text."""
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._sentence_cache))
        if missing:
            _make_room(self._sentence_cache, len(missing))
            self._sentence_cache.update(zip(missing, self.encoder.encode(missing)))
        return torch.stack([self._sentence_cache[t] for t in texts]) if texts else torch.zeros(0, self.sentence_dim)

    def levels(self, texts: Sequence[str]) -> TextLevels:
        """Word, sentence and report features of `texts` (CPU), padded to the longest text of the batch.

        Raises ValueError naming a text that has no content word or no sentence (nothing to align).
        """
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._level_cache))
        if missing:
            _make_room(self._level_cache, len(missing))
            self._level_cache.update(zip(missing, self._encode_levels(missing)))
        entries = [self._level_cache[t] for t in texts]
        dim = self.token_dim
        words, padded = _pad_stack([e[0] for e in entries], dim)
        word_mask = torch.zeros_like(padded)
        for row, entry in enumerate(entries):
            word_mask[row, :len(entry[1])] = entry[1]
        sentences, sentence_mask = _pad_stack([e[2] for e in entries], dim)
        report = torch.stack([e[3] for e in entries])
        return TextLevels(words, word_mask, sentences, sentence_mask, report)

    def _encode_levels(self, texts: List[str]) -> List[tuple]:
        """Per text: (words [W, D], content-word flags [W], sentences [S, D], report [D])."""
        features = self.encoder.encode_reports(texts)
        entries = []
        for row, text in enumerate(texts):
            word_list = features.words.words[row]
            content = torch.tensor([_is_content_word(w) for w in word_list], dtype=torch.bool)
            num_sentences = int(features.sentence_mask[row].sum())
            if not content.any() or num_sentences == 0:
                raise ValueError(f"text {text!r} has no word or sentence to align with the image")
            entries.append((
                features.words.embeddings[row, :len(word_list)].clone(),
                content,
                features.sentences[row, :num_sentences].clone(),
                features.report[row].clone(),
            ))
        return entries


def reference_reports() -> List[str]:
    """A one-finding report per described finding and granularity: the texts whose word statistics
    standardise the frozen features (see `word_statistics`)."""
    return [compose_report([finding], granularity) for finding in finding_descriptions() for granularity in GRANULARITIES]


def word_statistics(text_features: FrozenTextFeatures, texts: Sequence[str]):
    """(mean [D], std [D]) of the content-word features of `texts`.

    Frozen transformer features share a large common component (reports of different findings have
    cosines of 0.5-0.9), which a freshly initialised projection cannot tell apart; standardising
    words, sentences and reports with one fixed (mean, std) keeps the three levels in one space (a
    sentence is still the mean of its words) while spreading the texts apart.
    """
    levels = text_features.levels(texts)
    words = levels.words[levels.word_mask]
    return words.mean(dim=0), words.std(dim=0).clamp(min=1e-6)


def _make_room(cache: dict, incoming: int) -> None:
    """Empty `cache` when `incoming` more entries would exceed MAX_CACHED_TEXTS."""
    if len(cache) + incoming > MAX_CACHED_TEXTS:
        cache.clear()
