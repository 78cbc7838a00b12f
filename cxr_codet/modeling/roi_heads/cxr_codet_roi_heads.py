"""CXR-CoDet ROI heads: an FPN variant (StandardROIHeads) and the paper-faithful C4 variant (res5 head).

Both score regions with the open-vocabulary classifier and, in training, add CoDet's co-occurrence loss
over the batch's concept groups (passed in by the `CXRCoDet` meta-architecture). Inference is detectron2's,
against the classifier's active vocabulary (see `OpenVocabularyOutputLayers.set_vocabulary`).
"""
from typing import Dict, List

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads, StandardROIHeads
from detectron2.structures import Boxes

from .co_occurrence_branch import CoOccurrenceBranchMixin, build_co_occurrence_head, check_supported_heads
from .image_level_losses import ImageLevelLossSettings
from .open_vocab_fast_rcnn import OpenVocabularyOutputLayers


@ROI_HEADS_REGISTRY.register()
class CXRCoDetROIHeads(CoOccurrenceBranchMixin, StandardROIHeads):
    """FPN ROI heads (pooler + FC box head) with the open-vocabulary classifier and co-occurrence branch."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        check_supported_heads(cfg)
        ret = super().from_config(cfg, input_shape)
        ret["co_occurrence"] = build_co_occurrence_head(cfg)
        ret["image_level_losses"] = ImageLevelLossSettings.from_config(cfg)
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = OpenVocabularyOutputLayers(cfg, ret["box_head"].output_shape)
        return ret

    def _region_features(self, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> torch.Tensor:
        """Pooled FPN features through the box head: [R, FC_DIM]."""
        pooled = self.box_pooler([features[f] for f in self.box_in_features], boxes)
        return self.box_head(pooled)

    def forward(self, images, features, proposals, targets=None, concept_groups=None, box_supervised=None,
                captions=None):
        """detectron2's ROIHeads.forward; in training `concept_groups` (or None) drives the co-occurrence loss
        and `box_supervised` (per image, or None: all) selects the images with box losses."""
        if not self.training:
            return super().forward(images, features, proposals)
        return self._forward_train(features, proposals, targets, concept_groups, box_supervised, captions,
                                   images.image_sizes)


@ROI_HEADS_REGISTRY.register()
class CXRCoDetRes5ROIHeads(CoOccurrenceBranchMixin, Res5ROIHeads):
    """C4 ROI heads (CoDet's COCO setting): res5 on pooled res4 features, mean-pooled to 2048-d (R50)."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        check_supported_heads(cfg)
        ret = super().from_config(cfg, input_shape)
        out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 2**3  # res5 width, as Res5ROIHeads builds it
        ret["box_predictor"] = OpenVocabularyOutputLayers(
            cfg, ShapeSpec(channels=out_channels, height=1, width=1)
        )
        ret["co_occurrence"] = build_co_occurrence_head(cfg)
        ret["image_level_losses"] = ImageLevelLossSettings.from_config(cfg)
        return ret

    def _region_features(self, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> torch.Tensor:
        """res5 on the pooled regions, mean-pooled: [R, res5 channels]."""
        return self._shared_roi_transform([features[f] for f in self.in_features], boxes).mean(dim=[2, 3])

    def forward(self, images, features, proposals, targets=None, concept_groups=None, box_supervised=None,
                captions=None):
        """detectron2's Res5ROIHeads.forward; in training `concept_groups` drives the co-occurrence loss and
        `box_supervised` (per image, or None: all) selects the images with box losses."""
        if not self.training:
            return super().forward(images, features, proposals)
        _, losses = self._forward_train(features, proposals, targets, concept_groups, box_supervised, captions,
                                        images.image_sizes)
        return [], losses
