"""Box-free side heads that localize findings from text: AFLoc and phrase grounding (registered in
detectron2's META_ARCH_REGISTRY), with the shared prompt, text-feature and heat-map code."""
from .afloc import AFLoc
from .base import PromptLocalizer
from .grounding import PhraseGrounding
from .localization_maps import MapSettings, bias_merged_grid_maps, grid_to_heatmaps, heatmap_instances
from .localized_matching import global_scores, localized_scores, symmetric_contrastive_loss
from .prompts import finding_prompts
from .text_features import FrozenTextFeatures, TextLevels

__all__ = [
    "AFLoc",
    "FrozenTextFeatures",
    "MapSettings",
    "PhraseGrounding",
    "PromptLocalizer",
    "TextLevels",
    "bias_merged_grid_maps",
    "finding_prompts",
    "global_scores",
    "grid_to_heatmaps",
    "heatmap_instances",
    "localized_scores",
    "symmetric_contrastive_loss",
]
