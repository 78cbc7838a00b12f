"""Helpers shared by the image-text meta-architectures (AFLoc, PhraseGrounding, ContrastiveClassifier): their
common constructor arguments and which images of a batch are positives of each other."""
from typing import Dict, Sequence

import torch
from detectron2.modeling import build_backbone

from ..text.frozen_features import FrozenTextFeatures
from ..text import build_text_encoder
from ..vocabulary import training_class_names


def image_text_config(cfg) -> Dict:
    """Constructor arguments every image-text model here shares: backbone, frozen text features, training
    findings and input normalisation."""
    return {
        "backbone": build_backbone(cfg),
        "text_features": FrozenTextFeatures(build_text_encoder(cfg)),
        "class_names": training_class_names(cfg),
        "pixel_mean": cfg.MODEL.PIXEL_MEAN,
        "pixel_std": cfg.MODEL.PIXEL_STD,
    }


def positives_by_key(keys: Sequence) -> torch.Tensor:
    """[B, B] bool: True where two images have the same report key (same composed findings or report)."""
    return torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.bool)
