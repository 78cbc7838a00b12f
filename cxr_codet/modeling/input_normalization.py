"""Which input normalisation a pretrained checkpoint expects, and the start-up check that the config matches it.

A checkpoint trained on caffe-style inputs (BGR means, std 1) gives garbage on torchvision-style ones and the
other way round, without any error: `check_input_normalization` refuses a config whose MODEL.PIXEL_MEAN /
PIXEL_STD differ from what its MODEL.WEIGHTS or MODEL.INIT.WEIGHTS were trained with, when the checkpoint's
path says which (CHECKPOINT_NORMALIZATION), or from what the EfficientNet-Lite backbone's ImageNet weights
expect (MODEL.EFFICIENTNET.WEIGHTS), and a torchvision bottleneck ResNet under the MSRA stride layout.
"""
import re
from typing import List, Optional, Tuple

import numpy as np

from .backbone.torchvision_resnet import TORCHVISION_RESNET_FILE


# detectron2's caffe-style input (BGR means, std 1), which MSRA R-50.pkl and the OV-COCO Detic/CoDet models use.
CAFFE_NORMALIZATION = ([103.530, 116.280, 123.675], [1.0, 1.0, 1.0])
# torchvision-style input (RGB ImageNet mean and std x 255), as CoDet/Detic's LVIS ResNet-50-21k models use.
TORCHVISION_NORMALIZATION = ([123.675, 116.280, 103.530], [58.395, 57.120, 57.375])

# TF-Lite's (x - 127) / 128, as the EfficientNet-Lite ImageNet weights expect (modeling/backbone/efficientnet_lite.py).
TFLITE_NORMALIZATION = ([127.0, 127.0, 127.0], [128.0, 128.0, 128.0])

# (checkpoint-path pattern, (PIXEL_MEAN, PIXEL_STD) the weights were trained with, source); first match wins.
CHECKPOINT_NORMALIZATION: List[Tuple[re.Pattern, Tuple[List[float], List[float]], str]] = [
    (TORCHVISION_RESNET_FILE, TORCHVISION_NORMALIZATION, "torchvision's ImageNet ResNets"),
    (re.compile(r"ImageNetPretrained/MSRA/"), CAFFE_NORMALIZATION, "detectron2's MSRA ImageNet models"),
    (re.compile(r"OVCOCO"), CAFFE_NORMALIZATION, "CoDet/Detic OV-COCO configs (detectron2 defaults)"),
    (re.compile(r"OVLVIS_R5021k|resnet50_miil_21k"), TORCHVISION_NORMALIZATION,
     "CoDet/Detic Base_OVLVIS_R5021k_4x.yaml"),
]


def expected_input_normalization(path: str) -> Optional[Tuple[List[float], List[float], str]]:
    """(PIXEL_MEAN, PIXEL_STD, source) that the checkpoint at `path` expects, or None when it is not known."""
    for pattern, (mean, std), source in CHECKPOINT_NORMALIZATION:
        if pattern.search(path):
            return list(mean), list(std), source
    return None


def _weights_and_expected_normalization(cfg):
    """(config key, weights, (PIXEL_MEAN, PIXEL_STD, source)) for every weights setting whose input is known."""
    for key, path in (("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS), ("MODEL.INIT.WEIGHTS", cfg.MODEL.INIT.WEIGHTS)):
        expected = expected_input_normalization(path) if path else None
        if expected is not None:
            yield key, path, expected
    if "efficientnet_lite" in cfg.MODEL.BACKBONE.NAME and cfg.MODEL.EFFICIENTNET.WEIGHTS:
        mean, std = TFLITE_NORMALIZATION
        yield "MODEL.EFFICIENTNET.WEIGHTS", cfg.MODEL.EFFICIENTNET.WEIGHTS, (list(mean), list(std),
                                                                              "EfficientNet-Lite's TF-Lite input")


def check_input_normalization(cfg) -> None:
    """Refuse a config whose MODEL.PIXEL_MEAN/PIXEL_STD differ from what its MODEL.WEIGHTS, MODEL.INIT.WEIGHTS or
    MODEL.EFFICIENTNET.WEIGHTS were trained with (inputs would arrive scaled wrongly), naming both; and a torchvision
    bottleneck ResNet (R-50 and deeper) under MODEL.RESNETS.STRIDE_IN_1X1 True (its stride is on the 3x3 conv)."""
    for key, path, (mean, std, source) in _weights_and_expected_normalization(cfg):
        if not (np.allclose(cfg.MODEL.PIXEL_MEAN, mean) and np.allclose(cfg.MODEL.PIXEL_STD, std)):
            raise ValueError(
                f"{key} = {path} expects MODEL.PIXEL_MEAN {mean} and MODEL.PIXEL_STD {std} ({source}), but the "
                f"config sets {list(cfg.MODEL.PIXEL_MEAN)} and {list(cfg.MODEL.PIXEL_STD)}: set them to match"
            )
    weights = cfg.MODEL.WEIGHTS
    if TORCHVISION_RESNET_FILE.search(weights or "") and cfg.MODEL.RESNETS.DEPTH >= 50 and cfg.MODEL.RESNETS.STRIDE_IN_1X1:
        raise ValueError(
            f"MODEL.WEIGHTS = {weights} is a torchvision ResNet-{cfg.MODEL.RESNETS.DEPTH}, whose bottleneck blocks "
            "stride on the 3x3 convolution: set MODEL.RESNETS.STRIDE_IN_1X1 False (True is MSRA's R-50.pkl layout)"
        )
