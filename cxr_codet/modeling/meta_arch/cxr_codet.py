"""`CXRCoDet`: Faster R-CNN whose ROI heads classify in text space and learn from region co-occurrence.

Training is GeneralizedRCNN's (RPN + box-supervised ROI losses; "No finding" images give background
only), with the batch's concept groups passed on to the ROI heads for CoDet's co-occurrence loss.
Image-level-only images ("box_supervised": False) give no RPN or box loss (box_supervision.py).
Inference is GeneralizedRCNN's, against the classifier's active vocabulary, which
`set_test_vocabulary` switches (e.g. to another dataset's class names) and `reset_test_vocabulary` restores.
"""
import logging
from typing import Dict, List, Sequence, Union

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage

from ...data.concept_groups import concept_groups_from_batch
from ..roi_heads.co_occurrence_branch import CoOccurrenceBranchMixin
from ..vocabulary import ClassNameEncoder
from ..vocabulary import training_class_names as read_training_class_names
from .box_supervision import box_supervised_mask, rpn_forward

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class CXRCoDet(GeneralizedRCNN):
    """GeneralizedRCNN + concept groups for the co-occurrence loss + a switchable test vocabulary."""

    # Image-level-only training images are masked out of the box losses (checked by the trainer).
    trains_on_image_level_only = True

    @configurable
    def __init__(
        self,
        *,
        class_name_encoder=None,
        training_class_names: Sequence[str] = (),
        **kwargs,
    ):
        """
        Args:
            class_name_encoder: callable list[str] -> [C, D] text embeddings (`ClassNameEncoder`), used by
                `set_test_vocabulary` with class names; kept outside the module tree (no parameters).
            training_class_names: names of the training vocabulary; `set_test_vocabulary` with exactly
                these names restores the training vocabulary instead of re-encoding them.
            kwargs: as GeneralizedRCNN.
        """
        super().__init__(**kwargs)
        if not isinstance(self.roi_heads, CoOccurrenceBranchMixin):
            raise ValueError(
                f"MODEL.META_ARCHITECTURE CXRCoDet needs CXR-CoDet ROI heads (MODEL.ROI_HEADS.NAME "
                f"'CXRCoDetROIHeads' or 'CXRCoDetRes5ROIHeads'), got {type(self.roi_heads).__name__}"
            )
        # G of the concept groups, as the co-occurrence head was built for (0 when the branch is off).
        head = self.roi_heads.co_occurrence
        self.concept_group_size = 0 if head is None else head.group_size
        self._class_name_encoder = class_name_encoder
        self.training_class_names = list(training_class_names)
        self._warned_no_groups = False

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)  # the ROI heads' co-occurrence head refuses a CONCEPT_GROUP_SIZE below 2
        ret["class_name_encoder"] = ClassNameEncoder(cfg)
        ret["training_class_names"] = read_training_class_names(cfg)
        return ret

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """Losses in training (incl. "loss_cooccurrence" when the branch is on); detections in eval mode."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError("CXRCoDet trains on box-annotated images: every batch dict needs 'instances'")
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        box_supervised = box_supervised_mask(batched_inputs)
        proposals, proposal_losses = rpn_forward(
            self.proposal_generator, images, features, gt_instances, box_supervised
        )
        _, detector_losses = self.roi_heads(
            images, features, proposals, gt_instances,
            concept_groups=self._concept_groups(batched_inputs), box_supervised=box_supervised,
        )
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        return {**detector_losses, **proposal_losses}

    def _concept_groups(self, batched_inputs):
        """The batch's ConceptGroups for the co-occurrence branch; None (logged once) from a plain loader."""
        if self.roi_heads.co_occurrence is None:
            return None
        groups = concept_groups_from_batch(batched_inputs, self.concept_group_size)
        if groups is None and not self._warned_no_groups:
            logger.warning(
                "Training batches carry no 'concept_id' (DATALOADER.SAMPLER_TRAIN is not ConceptGroupSampler): "
                "the co-occurrence loss is skipped (reported as 0); only box-supervised losses train."
            )
            self._warned_no_groups = True
        return groups

    def set_test_vocabulary(self, vocabulary: Union[Sequence[str], torch.Tensor]) -> None:
        """Classify with `vocabulary` at inference: class names (encoded with the configured text encoder,
        descriptions and template) or a [C', D] embedding tensor. Predicted class ids index `vocabulary`.
        The training class names themselves select the training vocabulary (no re-encoding)."""
        if isinstance(vocabulary, torch.Tensor):
            embeddings = vocabulary
        else:
            names = list(vocabulary)
            if not names or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"test vocabulary must be a non-empty list of class names; got {names!r}")
            if names == self.training_class_names:
                self.reset_test_vocabulary()
                return
            if self._class_name_encoder is None:
                raise ValueError("this model was built without a text encoder: pass embeddings, not names")
            embeddings = self._class_name_encoder(names)
            logger.info("Test vocabulary: %d classes (%s)", len(names), ", ".join(names))
        self.roi_heads.box_predictor.set_vocabulary(embeddings)

    def reset_test_vocabulary(self) -> None:
        """Classify with the training vocabulary again at inference."""
        self.roi_heads.box_predictor.reset_vocabulary()
