"""Image-level heads: the image-report contrastive classifier with Grad-CAM and progression detection on image
pairs (both registered in detectron2's META_ARCH_REGISTRY), with the ViT backbone, the Grad-CAM module, the
Poincare-ball operations they use."""
from .contrastive_classifier import ABNORMAL, ContrastiveClassifier
from .gradcam import GradCAM, activation_grid, find_module
from .hyperbolic import (
    GEOMETRIES,
    EuclideanSpace,
    PoincareBall,
    build_geometry,
    expmap0,
    logmap0,
    mobius_add,
    poincare_distance,
)
from .progression import ProgressionDetector
from .vit_backbone import ViTBackbone, build_vit_backbone, load_vit_weights

__all__ = [
    "ABNORMAL",
    "ContrastiveClassifier",
    "EuclideanSpace",
    "GEOMETRIES",
    "GradCAM",
    "PoincareBall",
    "ProgressionDetector",
    "ViTBackbone",
    "activation_grid",
    "build_geometry",
    "build_vit_backbone",
    "expmap0",
    "find_module",
    "load_vit_weights",
    "logmap0",
    "mobius_add",
    "poincare_distance",
]
