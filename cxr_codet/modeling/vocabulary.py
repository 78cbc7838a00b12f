"""Class vocabularies as text embeddings: the training vocabulary a model is built with, and test vocabularies.

The training vocabulary is the class names of cfg.DATASETS.TRAIN, encoded by the configured frozen text
encoder (descriptions and prompt template from cfg.MODEL.TEXT_ENCODER), or read from
cfg.MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH when that is set. The encoder is built lazily and kept out of
the detector's module tree, so it adds no parameters to the optimizer or the checkpoint.
"""
import logging
from typing import List, Sequence

import torch
from detectron2.data import MetadataCatalog

logger = logging.getLogger(__name__)


def training_class_names(cfg) -> List[str]:
    """thing_classes shared by every dataset of cfg.DATASETS.TRAIN (a clear error when they differ)."""
    if not cfg.DATASETS.TRAIN:
        raise ValueError("cfg.DATASETS.TRAIN is empty: the training vocabulary comes from its class names")
    vocabularies = {name: list(MetadataCatalog.get(name).get("thing_classes", [])) for name in cfg.DATASETS.TRAIN}
    first_name, first = next(iter(vocabularies.items()))
    for name, classes in vocabularies.items():
        if not classes:
            raise ValueError(f"training dataset {name!r} has no thing_classes in its metadata")
        if classes != first:
            raise ValueError(
                f"training datasets {first_name!r} and {name!r} have different thing_classes "
                f"({first} vs {classes}); CXR-CoDet trains one vocabulary"
            )
    return first


class ClassNameEncoder:
    """Callable list[str] -> [C, D] embeddings of new class names (test vocabularies) with the text encoder,
    descriptions and template of cfg.MODEL.TEXT_ENCODER; the encoder is built on first use and kept."""

    def __init__(self, cfg):
        self._cfg = cfg.clone()
        self._cfg.defrost()
        self._cfg.MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH = ""  # that file holds the training classes only
        self._encoder = None
        self._precomputed_training = bool(cfg.MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH)

    def __call__(self, class_names: Sequence[str]) -> torch.Tensor:
        from .text import build_class_embeddings, build_text_encoder, text_encoder_backend

        backend = self._cfg.MODEL.TEXT_ENCODER.BACKEND
        if not getattr(text_encoder_backend(backend), "ENCODES_TEXT", True):
            raise ValueError(
                f"MODEL.TEXT_ENCODER.BACKEND {backend!r} cannot encode new class names {list(class_names)}: "
                "configure a text encoder, or pass the test vocabulary as an embedding tensor"
            )
        if self._precomputed_training:
            logger.warning(
                "Encoding test class names with the %s text encoder while the training vocabulary came from "
                "MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH: both must come from the same encoder", backend
            )
        if self._encoder is None:
            self._encoder = build_text_encoder(self._cfg)
        return build_class_embeddings(self._cfg, list(class_names), encoder=self._encoder).float()


def training_class_embeddings(cfg) -> torch.Tensor:
    """[C, D] text embeddings of the training classes (C = cfg.MODEL.ROI_HEADS.NUM_CLASSES), as
    cfg.MODEL.TEXT_ENCODER asks: CLASS_EMBEDDINGS_PATH, the embedding cache, or the text encoder."""
    from .text import build_class_embeddings

    names = training_class_names(cfg)
    if len(names) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES = {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but the training datasets "
            f"{list(cfg.DATASETS.TRAIN)} have {len(names)} classes"
        )
    embeddings = build_class_embeddings(cfg, names).float()
    logger.info("Training vocabulary: %d classes, %d-d text embeddings", len(names), embeddings.shape[1])
    return embeddings
