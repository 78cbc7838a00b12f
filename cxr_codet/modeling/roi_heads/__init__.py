"""CXR-CoDet ROI heads (registered in detectron2's ROI_HEADS_REGISTRY) and their open-vocabulary box predictor."""
from .cxr_codet_roi_heads import CXRCoDetRes5ROIHeads, CXRCoDetROIHeads
from .open_vocab_fast_rcnn import OpenVocabularyOutputLayers

__all__ = ["CXRCoDetROIHeads", "CXRCoDetRes5ROIHeads", "OpenVocabularyOutputLayers"]
