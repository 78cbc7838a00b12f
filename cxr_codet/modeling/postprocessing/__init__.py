"""Post-processing of localization maps that works on any head's output (numpy or torch maps)."""
from .bimodal_bias_merging import (
    MERGE_MODES,
    bezier_blend,
    bezier_control_point,
    bias_confidence,
    bimodal_bias_merging,
    gmm_threshold,
    gmm_threshold_mask,
    linear_blend,
    merge_biases,
    minmax_normalize,
    ssim,
)

__all__ = [
    "MERGE_MODES",
    "bezier_blend",
    "bezier_control_point",
    "bias_confidence",
    "bimodal_bias_merging",
    "gmm_threshold",
    "gmm_threshold_mask",
    "linear_blend",
    "merge_biases",
    "minmax_normalize",
    "ssim",
]
