"""Precomputed class embeddings from `.npy` / `.pt` files, as Detic and CoDet ship them (C x D).

Orientation rule: a matrix whose row count equals the number of classes is C x D; otherwise one whose
column count does is D x C and is transposed; anything else is an error naming the file, its shape and the
class count. A square C x C matrix is read as C x D. Such files hold one vector per class and nothing
else, so texts cannot be encoded with them.
"""
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ...safe_checkpoint import load_checkpoint_file
from .base import TextEncoder, register_text_encoder

SUFFIXES = (".npy", ".pt", ".pth")


def read_embedding_matrix(path: str) -> torch.Tensor:
    """The 2-D float32 matrix stored in `path` (.npy array, or .pt/.pth tensor or array), or a clear error."""
    file = Path(path)
    if file.suffix not in SUFFIXES:
        raise ValueError(f"embedding file {path}: unsupported suffix '{file.suffix}', expected one of {SUFFIXES}")
    if not file.is_file():
        raise FileNotFoundError(f"embedding file {path} does not exist")
    if file.suffix == ".npy":
        try:
            data = np.load(file, allow_pickle=False)
        except ValueError as e:
            if "allow_pickle" not in str(e):
                raise ValueError(f"embedding file {path} is not a readable .npy array ({e})") from None
            raise ValueError(f"embedding file {path} holds Python objects, which are read only as pickles (never "
                             "done here); save the C x D matrix as a float array") from None
    else:
        data = load_checkpoint_file(str(file), opt_in=None)  # tensors or arrays only, never code
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"embedding file {path} holds a {type(data).__name__}, expected a tensor or array")
    if data.dim() != 2:
        raise ValueError(f"embedding file {path} has shape {tuple(data.shape)}, expected a 2-D C x D matrix")
    return data.float()


def orient_class_matrix(matrix: torch.Tensor, num_classes: int, path: str) -> torch.Tensor:
    """`matrix` as C x D following the orientation rule in the module docstring."""
    rows, columns = matrix.shape
    if rows == num_classes:
        return matrix
    if columns == num_classes:
        return matrix.t().contiguous()
    raise ValueError(
        f"embedding file {path} has shape {tuple(matrix.shape)}, but neither its rows nor its columns match "
        f"the {num_classes} classes (expected C x D, e.g. {num_classes} x 512)"
    )


def load_class_embeddings(path: str, num_classes: int) -> torch.Tensor:
    """[num_classes, D] float32 class embeddings from a .npy/.pt file, not normalised (callers normalise)."""
    return orient_class_matrix(read_embedding_matrix(path), num_classes, path)


@register_text_encoder("precomputed")
class PrecomputedTextEncoder(TextEncoder):
    """Serves the class matrix of an embedding file; `dim` assumes C x D unless `num_classes` says otherwise."""

    ENCODES_TEXT = False

    def __init__(self, name_or_path: str = "", *, num_classes: Optional[int] = None, batch_size: int = 64,
                 device: str = "cpu"):
        super().__init__(name_or_path, batch_size=batch_size, device=device)
        if not self.name_or_path:
            raise ValueError("precomputed text encoder: MODEL.TEXT_ENCODER.NAME must be the .npy/.pt embedding file")
        matrix = read_embedding_matrix(self.name_or_path)
        if num_classes is not None:
            matrix = orient_class_matrix(matrix, num_classes, self.name_or_path)
        self.register_buffer("matrix", matrix, persistent=False)
        self.dim = int(matrix.shape[1])
        self._freeze()

    def fixed_class_embeddings(self, num_classes: int) -> torch.Tensor:
        return orient_class_matrix(self.matrix.cpu(), num_classes, self.name_or_path)

    def _encode_batch(self, texts: List[str]) -> torch.Tensor:
        raise NotImplementedError(
            f"precomputed text encoder ({self.name_or_path}) holds fixed class embeddings and cannot encode "
            f"new texts such as {texts[0]!r}; choose an encoder backend (e.g. sentence_transformers) for that"
        )
