"""`CXRDatasetMapper`: detectron2's DatasetMapper for chest X-rays (one gray channel repeated to the model's format).

Images are decoded once as a single gray channel (cfg.INPUT.GRAYSCALE), augmented as such (3x less work than
on RGB; colour-only augmentations such as RandomSaturation/RandomLighting do not apply to one channel), then
repeated to the channels of cfg.INPUT.FORMAT. Record fields such as "image_labels", "caption" and "captions"
pass through to the model inputs.
"""
import os

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image_io import decode_gray

# cfg.INPUT.FORMAT -> number of channels the gray image is repeated to
_GRAY_FORMAT_CHANNELS = {"BGR": 3, "RGB": 3, "L": 1}


def _describe(dataset_dict: dict) -> str:
    return f"image {dataset_dict.get('file_name')!r} (dataset record image_id={dataset_dict.get('image_id')!r})"


def read_gray_image(dataset_dict: dict) -> np.ndarray:
    """The record's image as a 2-D uint8 array (16-bit files windowed by `image_io`); errors name the file and
    the record."""
    file_name = dataset_dict["file_name"]
    if not os.path.isfile(file_name):
        raise FileNotFoundError(f"cannot read {_describe(dataset_dict)}: the file does not exist")
    with open(file_name, "rb") as f:
        data = f.read()
    try:
        return decode_gray(data)
    except ValueError as e:
        raise ValueError(f"cannot read {_describe(dataset_dict)}: {e}") from None


def _is_16_bit(file_name: str) -> bool:
    """True for a PNG that stores 16 bits per sample (bit depth byte of its IHDR chunk)."""
    with open(file_name, "rb") as f:
        header = f.read(25)
    return len(header) == 25 and header[:8] == b"\x89PNG\r\n\x1a\n" and header[24] == 16


class CXRDatasetMapper(DatasetMapper):
    """DatasetMapper that reads CXRs as grayscale, repeats them to cfg.INPUT.FORMAT and keeps caption/label fields."""

    @configurable
    def __init__(self, is_train: bool, *, grayscale: bool = True, **kwargs):
        """`grayscale`: read one channel and repeat it (else read in `image_format` like DatasetMapper)."""
        super().__init__(is_train, **kwargs)
        if grayscale and self.image_format not in _GRAY_FORMAT_CHANNELS:
            raise ValueError(
                f"INPUT.FORMAT {self.image_format!r} is not supported with INPUT.GRAYSCALE; "
                f"use one of {sorted(_GRAY_FORMAT_CHANNELS)}"
            )
        self.grayscale = grayscale

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        """DatasetMapper's settings plus cfg.INPUT.GRAYSCALE (declared by add_cxr_codet_config)."""
        if "GRAYSCALE" not in cfg.INPUT:
            raise KeyError("cfg.INPUT.GRAYSCALE is missing: call cxr_codet.add_cxr_codet_config(cfg) first")
        ret = super().from_config(cfg, is_train)
        ret["grayscale"] = cfg.INPUT.GRAYSCALE
        return ret

    def _read(self, dataset_dict: dict) -> np.ndarray:
        """The image before augmentation: 2-D gray, or HxWxC in image_format."""
        if self.grayscale:
            return read_gray_image(dataset_dict)
        try:
            if _is_16_bit(dataset_dict["file_name"]):  # Pillow would clip it; window it as one gray channel
                gray = read_gray_image(dataset_dict)
                return np.repeat(gray[:, :, None], _GRAY_FORMAT_CHANNELS[self.image_format], axis=2)
            return utils.read_image(dataset_dict["file_name"], format=self.image_format)
        except (OSError, ValueError) as e:
            raise type(e)(f"cannot read {_describe(dataset_dict)}: {e}") from e

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """CxHxW uint8 tensor; a gray image is repeated to the channels of image_format."""
        if image.ndim == 2:
            image = np.repeat(image[None], _GRAY_FORMAT_CHANNELS[self.image_format], axis=0)
        else:
            image = image.transpose(2, 0, 1)
        return torch.as_tensor(np.ascontiguousarray(image))

    def __call__(self, dataset_dict: dict) -> dict:
        """Read, augment and tensorise one record; in training also turn its annotations into `instances`."""
        dataset_dict = dict(dataset_dict)  # shallow: only "annotations" is modified below, and it is copied
        if "annotations" in dataset_dict:
            dataset_dict["annotations"] = [dict(a) for a in dataset_dict["annotations"]]
        image = self._read(dataset_dict)
        utils.check_image_size(dataset_dict, image)

        aug_input = T.AugInput(image)
        try:
            transforms = self.augmentations(aug_input)
        except ValueError as e:  # e.g. a 1 x 3000 image whose short side cannot be resized
            raise ValueError(f"cannot augment {_describe(dataset_dict)} of size {image.shape[:2]}: {e}") from e
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = self._to_tensor(image)

        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
