"""Backbones registered in detectron2's BACKBONE_REGISTRY beyond its own ResNets and FPNs."""
from .vit import ViTBackbone, build_vit_backbone, load_vit_weights

__all__ = ["ViTBackbone", "build_vit_backbone", "load_vit_weights"]
