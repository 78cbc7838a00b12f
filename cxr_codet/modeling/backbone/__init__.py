"""Backbones registered in detectron2's BACKBONE_REGISTRY beyond its own ResNets and FPNs."""
from .efficientnet_lite import (
    EfficientNetLite,
    build_efficientnet_lite_backbone,
    build_efficientnet_lite_fpn_backbone,
    load_efficientnet_lite_weights,
)
from .vit import ViTBackbone, build_vit_backbone, load_vit_weights

__all__ = [
    "EfficientNetLite",
    "ViTBackbone",
    "build_efficientnet_lite_backbone",
    "build_efficientnet_lite_fpn_backbone",
    "build_vit_backbone",
    "load_efficientnet_lite_weights",
    "load_vit_weights",
]
