"""Localization machinery of the box-free models (AFLoc, PhraseGrounding) and the contrastive classifier's
Grad-CAM maps: finding prompts, GLoRIA-style localized matching, and grid maps to heat maps and boxes."""
from .maps import MapSettings, bias_merged_grid_maps, grid_to_heatmaps, heatmap_instances
from .matching import global_scores, localized_scores, symmetric_contrastive_loss
from .prompts import finding_prompts

__all__ = [
    "MapSettings",
    "bias_merged_grid_maps",
    "finding_prompts",
    "global_scores",
    "grid_to_heatmaps",
    "heatmap_instances",
    "localized_scores",
    "symmetric_contrastive_loss",
]
