"""Open-vocabulary region classifier: region features scored against fixed class text embeddings.

As in Detic/CoDet: Linear(region feature -> text dim), L2-normalise, x temperature, dot with L2-normalised
class embeddings, plus a background logit that is always 0 (an all-zero background embedding). The
training vocabulary is fixed at build time; an inference vocabulary can be switched in for evaluation
(e.g. NIH ChestX-ray14's 8 findings on a model trained on VinDr-CXR's 14) without touching training.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F


def normalized_class_embeddings(embeddings: torch.Tensor, what: str = "class embeddings") -> torch.Tensor:
    """Validate a [C, D] embedding matrix (2-D, C >= 1, finite, no zero rows) and L2-normalise its rows."""
    if not isinstance(embeddings, torch.Tensor):
        embeddings = torch.as_tensor(embeddings)
    if embeddings.dim() != 2 or embeddings.shape[0] < 1 or embeddings.shape[1] < 1:
        raise ValueError(f"{what} must be a [num_classes, dim] matrix; got shape {tuple(embeddings.shape)}")
    embeddings = embeddings.detach().float()
    if not torch.isfinite(embeddings).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    zero_rows = (embeddings.norm(dim=1) == 0).nonzero().flatten().tolist()
    if zero_rows:
        raise ValueError(f"{what}: rows {zero_rows} are all zero and cannot be normalised")
    return F.normalize(embeddings, p=2, dim=1)


class OpenVocabularyClassifier(nn.Module):
    """Cosine classifier in text space with a zero background logit (Detic/CoDet's zero-shot classifier).

    `class_embeddings` (buffer, D x C, saved with the model) is the training vocabulary;
    `test_class_embeddings` (D x C', not saved) replaces it in eval mode once `set_vocabulary` was called.
    Training always scores against the training vocabulary.
    """

    def __init__(self, input_size: int, class_embeddings: torch.Tensor, norm_temperature: float = 50.0):
        """`class_embeddings`: [C, D] text embeddings of the training classes (normalised here)."""
        super().__init__()
        embeddings = normalized_class_embeddings(class_embeddings, "training class embeddings")
        self.norm_temperature = float(norm_temperature)
        self.proj = nn.Linear(input_size, embeddings.shape[1])
        self.register_buffer("class_embeddings", embeddings.t().contiguous())
        self.register_buffer("test_class_embeddings", None, persistent=False)

    @property
    def embedding_dim(self) -> int:
        """D, the text-embedding width."""
        return self.class_embeddings.shape[0]

    @property
    def num_training_classes(self) -> int:
        """C, the size of the training vocabulary."""
        return self.class_embeddings.shape[1]

    def active_embeddings(self) -> torch.Tensor:
        """The D x C vocabulary in use: the test vocabulary in eval mode when one is set, else the training one."""
        if not self.training and self.test_class_embeddings is not None:
            return self.test_class_embeddings
        return self.class_embeddings

    @property
    def num_active_classes(self) -> int:
        """Number of foreground classes the classifier currently scores."""
        return self.active_embeddings().shape[1]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Region features [R, F] -> unnormalised text-space features [R, D]."""
        return self.proj(x)

    def score(self, projected: torch.Tensor, embeddings: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Text-space features [..., D] -> logits [..., C + 1]: temperature x cosine, then a 0 background logit."""
        embeddings = self.active_embeddings() if embeddings is None else embeddings
        logits = self.norm_temperature * F.normalize(projected, p=2, dim=-1) @ embeddings
        return torch.cat([logits, logits.new_zeros(logits.shape[:-1] + (1,))], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Region features [R, F] -> logits [R, C + 1] against the active vocabulary."""
        return self.score(self.project(x))

    def set_vocabulary(self, embeddings: torch.Tensor) -> None:
        """Use `embeddings` ([C', D] text embeddings) as the inference vocabulary; training is unaffected."""
        embeddings = normalized_class_embeddings(embeddings, "test vocabulary embeddings")
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(
                f"test vocabulary embeddings have dimension {embeddings.shape[1]}, but the classifier was "
                f"built for {self.embedding_dim}-d text embeddings: encode the names with the model's text encoder"
            )
        self.test_class_embeddings = embeddings.t().contiguous().to(self.class_embeddings.device)

    def reset_vocabulary(self) -> None:
        """Evaluate with the training vocabulary again."""
        self.test_class_embeddings = None
