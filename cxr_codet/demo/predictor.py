"""`CXRPredictor`: batch-1 inference of a trained cxr-codet model on a grayscale image, with a chosen vocabulary.

The image gets the test-time resize of cfg.INPUT (as the test loader applies it) and is repeated to the
channels of cfg.INPUT.FORMAT (as `CXRDatasetMapper` does); boxes come back on any pixel grid that covers the
same field of view, e.g. the original DICOM's, because detectron2 rescales them to the requested height/width.
"""
import logging
import os
from typing import Sequence, Tuple

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Instances

from ..engine.checkpoint import AtomicDetectionCheckpointer
from ..modeling.vocabulary import training_class_names
from .vocabulary import custom_vocabulary_embeddings, has_description

logger = logging.getLogger(__name__)


class CXRPredictor:
    """Builds the model of `cfg`, loads cfg.MODEL.WEIGHTS, and predicts one image at a time."""

    def __init__(self, cfg):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if cfg.MODEL.WEIGHTS:
            if "://" not in cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
                raise FileNotFoundError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: no such checkpoint file")
            AtomicDetectionCheckpointer(self.model, trust_code=cfg.MODEL.TRUST_CHECKPOINT_CODE).load(cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: predicting with a randomly initialised model")
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.channels = 1 if cfg.INPUT.FORMAT == "L" else 3
        self.training_class_names = training_class_names(self.cfg)
        if len(self.training_class_names) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise ValueError(
                f"MODEL.ROI_HEADS.NUM_CLASSES = {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but DATASETS.TRAIN "
                f"{list(cfg.DATASETS.TRAIN)} names {len(self.training_class_names)} classes"
            )
        self.class_names = list(self.training_class_names)

    @property
    def open_vocabulary(self) -> bool:
        """True for models that can detect class names they were not trained on (CXR-CoDet)."""
        return hasattr(self.model, "set_test_vocabulary")

    def use_vocabulary(self, names: Sequence[str]) -> None:
        """Detect `names` from now on; a closed-vocabulary detector accepts only its own training classes."""
        names = list(names)
        if not self.open_vocabulary:
            if names != self.training_class_names:
                raise ValueError(
                    f"MODEL.META_ARCHITECTURE {self.cfg.MODEL.META_ARCHITECTURE} detects a fixed set of "
                    f"{len(self.training_class_names)} classes ({', '.join(self.training_class_names)}) and "
                    f"cannot switch to {names}; only an open-vocabulary model (MODEL.META_ARCHITECTURE CXRCoDet) "
                    "takes another --vocabulary or a --custom-vocabulary"
                )
            return
        if names == self.training_class_names or all(has_description(name) for name in names):
            self.model.set_test_vocabulary(names)  # encoded by the model's own class-name encoder
        else:
            self.model.set_test_vocabulary(custom_vocabulary_embeddings(self.cfg, names))
        self.class_names = names

    def prepare(self, pixels: np.ndarray) -> torch.Tensor:
        """The model's input tensor (C x H x W uint8) for a 2-D uint8 image; a ValueError if it cannot be resized."""
        try:
            resized = self.resize.get_transform(pixels).apply_image(pixels)
        except ValueError as e:  # e.g. 1 x 3000 pixels: the long side would shrink below one pixel
            raise ValueError(f"cannot resize an image of {pixels.shape[1]}x{pixels.shape[0]} pixels: {e}") from e
        return torch.as_tensor(np.ascontiguousarray(np.repeat(resized[None], self.channels, axis=0)))

    def predict(self, image: torch.Tensor, output_size: Tuple[int, int]) -> Instances:
        """Detections (on CPU) for a `prepare`d image, boxes on an output_size = (height, width) grid."""
        height, width = output_size
        with torch.no_grad():
            outputs = self.model([{"image": image, "height": height, "width": width}])
        return outputs[0]["instances"].to("cpu")
