"""Image-level heads: the image-report contrastive classifier with Grad-CAM and progression detection on image
pairs (both registered in detectron2's META_ARCH_REGISTRY), with the Grad-CAM module and the Poincare-ball
operations they use."""
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

__all__ = [
    "ABNORMAL",
    "ContrastiveClassifier",
    "EuclideanSpace",
    "GEOMETRIES",
    "GradCAM",
    "PoincareBall",
    "ProgressionDetector",
    "activation_grid",
    "build_geometry",
    "expmap0",
    "find_module",
    "logmap0",
    "mobius_add",
    "poincare_distance",
]
