"""BERT-family encoders (BioClinicalBERT, CXR-BERT, PubMedBERT, ...) through Hugging Face transformers.

Sentence features pool the last hidden layer: "cls" takes the [CLS] token's hidden state (not BERT's
next-sentence pooler, which many checkpoints lack), "mean" averages every non-padding token, [CLS] and
[SEP] included (as sentence-transformers does). Word features: see word_features.py.
"""
from typing import List

import torch

from .base import TextEncoder, register_text_encoder
from .word_features import TokenEmbeddings, bert_word_features, resolve_max_length

POOLINGS = ("cls", "mean")


def offline_hint(name_or_path: str) -> str:
    """The advice appended to load errors: where the weights must be when there is no network."""
    return (
        f"could not load '{name_or_path}'. Without network access (HF_HUB_OFFLINE=1) a hub id loads only from "
        "the local Hugging Face cache; otherwise download the model once and set MODEL.TEXT_ENCODER.NAME to "
        "its local directory"
    )


@register_text_encoder("transformers")
class TransformersTextEncoder(TextEncoder):
    """A Hugging Face BERT-family model with a stated sentence pooling ("cls" or "mean")."""

    DEFAULT_NAME = "emilyalsentzer/Bio_ClinicalBERT"
    CONFIG_KEYS = {**TextEncoder.CONFIG_KEYS, "pooling": "POOLING", "max_length": "MAX_LENGTH"}

    def __init__(
        self,
        name_or_path: str = "",
        *,
        pooling: str = "mean",
        max_length: int = 0,
        token_layers: int = 4,
        trust_remote_code: bool = False,
        batch_size: int = 64,
        device: str = "cpu",
    ):
        super().__init__(name_or_path, batch_size=batch_size, device=device)
        if pooling not in POOLINGS:
            raise ValueError(f"transformers text encoder: POOLING must be one of {POOLINGS}, got {pooling!r}")
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=trust_remote_code)
            self.model = AutoModel.from_pretrained(self.name_or_path, trust_remote_code=trust_remote_code)
        except OSError as error:
            raise OSError(f"transformers text encoder: {offline_hint(self.name_or_path)} ({error})") from error
        self.pooling = pooling
        self.token_layers = int(token_layers)
        self.max_length = resolve_max_length(max_length, self.tokenizer, self.model.config,
                                             "transformers text encoder")
        self.dim = int(self.model.config.hidden_size)
        self._freeze()

    def _encode_batch(self, texts: List[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {key: value.to(self.device) for key, value in batch.items()}
        hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)

    def _encode_tokens_batch(self, texts: List[str]) -> TokenEmbeddings:
        return bert_word_features(self.tokenizer, self.model, texts, self.max_length, self.token_layers)
