"""Post-processing of localization maps that works on any head's output (numpy or torch maps): bimodal bias
merging, the GMM threshold, and heat maps to normalised maps and boxes."""
from . import bimodal_bias_merging as _merging, heatmap_boxes as _boxes
from .bimodal_bias_merging import *  # noqa: F401,F403 (each module's __all__ is this package's API)
from .heatmap_boxes import *  # noqa: F401,F403

__all__ = _merging.__all__ + _boxes.__all__
