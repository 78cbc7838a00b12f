"""`ImagePairMapper`: the mapper of image-pair datasets (metadata `mapper` "image_pair"), for ProgressionDetector.

A comparison record (see cxr_codet/data/datasets/imagenome.py) names two images, "prior_file_name" and
"file_name" (current), and its "regions", each with a box in either image and a progression label. The
mapper reads both images as gray (repeated to INPUT.FORMAT's channels), resizes each as INPUT.MIN_SIZE_* /
MAX_SIZE_* say, and in training flips both the same way (INPUT.RANDOM_FLIP); boxes follow their image.

The data layer picks it for training and test from the datasets' metadata (build.py: `build_mapper`); training
draws the records with detectron2's TrainingSampler, without aspect-ratio grouping (the progression configs set
DATALOADER.ASPECT_RATIO_GROUPING False: a pair has two aspect ratios).
"""
from typing import Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T

from .mapper import read_gray_image

FLIP_TRANSFORMS = {
    "horizontal": lambda image: T.HFlipTransform(image.shape[1]),
    "vertical": lambda image: T.VFlipTransform(image.shape[0]),
}
_CHANNELS = {"BGR": 3, "RGB": 3, "L": 1}  # cfg.INPUT.FORMAT -> channels of the repeated gray image


def _boxes(record: dict, key: str) -> np.ndarray:
    """[R, 4] XYXY boxes of the record's regions in one image ("prior_box" or "current_box")."""
    boxes = [region[key] for region in record["regions"]]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


class ImagePairMapper:
    """Maps a comparison record to model inputs: "image", "prior_image" (uint8 [C, H, W]), "current_boxes",
    "prior_boxes" ([R, 4] float, on the mapped images) and "progression_labels" ([R] long)."""

    @configurable
    def __init__(self, is_train: bool, *, resize: T.Augmentation, flip: str = "none", image_format: str = "BGR"):
        """`resize`: the augmentation applied to each image; `flip`: "none", "horizontal" or "vertical"
        (one draw per pair, applied to both images); `image_format`: channels of the output tensors."""
        if flip not in ("none", *FLIP_TRANSFORMS):
            raise ValueError(f"INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'vertical', got {flip!r}")
        if image_format not in _CHANNELS:
            raise ValueError(f"INPUT.FORMAT {image_format!r} is not supported for image pairs; use one of {sorted(_CHANNELS)}")
        self.is_train = is_train
        self.resize = resize
        self.flip = flip if is_train else "none"
        self.channels = _CHANNELS[image_format]

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        if is_train:
            resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                          cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
        else:
            resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
        return {"is_train": is_train, "resize": resize, "flip": cfg.INPUT.RANDOM_FLIP, "image_format": cfg.INPUT.FORMAT}

    def _map_image(self, record: dict, file_key: str, size_keys: Tuple[str, str], boxes: np.ndarray, flip: bool):
        """One image of the pair as a [C, H, W] uint8 tensor, and its boxes on it."""
        image = read_gray_image({"file_name": record[file_key], "image_id": record.get("image_id")})
        expected = tuple(record.get(key) for key in size_keys)
        if None not in expected and expected != image.shape[:2]:
            raise ValueError(f"{record[file_key]} is {image.shape[0]} x {image.shape[1]} pixels but the comparison "
                             f"record {record.get('image_id')!r} says {expected[0]} x {expected[1]} (height x width)")
        aug_input = T.AugInput(image, boxes=boxes)
        self.resize(aug_input)
        if flip:
            aug_input.transform(FLIP_TRANSFORMS[self.flip](aug_input.image))
        tensor = torch.as_tensor(np.ascontiguousarray(np.repeat(aug_input.image[None], self.channels, axis=0)))
        return tensor, torch.as_tensor(aug_input.boxes, dtype=torch.float32).reshape(-1, 4)

    def __call__(self, record: dict) -> dict:
        if "prior_file_name" not in record or "regions" not in record:
            raise KeyError(f"record {record.get('image_id')!r} is not an image-pair comparison record: it needs "
                           "'file_name', 'prior_file_name' and 'regions' (see cxr_codet/data/datasets/imagenome.py)")
        mapped = dict(record)
        flip = self.flip != "none" and np.random.rand() < 0.5
        mapped["image"], mapped["current_boxes"] = self._map_image(
            record, "file_name", ("height", "width"), _boxes(record, "current_box"), flip)
        mapped["prior_image"], mapped["prior_boxes"] = self._map_image(
            record, "prior_file_name", ("prior_height", "prior_width"), _boxes(record, "prior_box"), flip)
        mapped["progression_labels"] = torch.tensor([int(r["label"]) for r in record["regions"]], dtype=torch.long)
        return mapped
