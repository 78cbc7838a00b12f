"""`CXRCoDet`: Faster R-CNN whose ROI heads classify in text space and learn from region co-occurrence.

Training is GeneralizedRCNN's (RPN + box-supervised ROI losses; "No finding" images give background
only), with the batch's concept groups passed on to the ROI heads for CoDet's co-occurrence loss.
Image-level-only images ("box_supervised": False) give no RPN or box loss (box_supervision.py). With the two-stream
loader (data/streams.py) a caption batch trains the image-level losses only: co-occurrence over its concept groups,
and, when enabled, Detic's caption loss (its captions embedded by the frozen text encoder, `CaptionEmbedder`) and
max-size loss; a box batch trains the RPN and box losses.
Inference is GeneralizedRCNN's, against the classifier's active vocabulary, which
`set_test_vocabulary` switches (e.g. to another dataset's class names) and `reset_test_vocabulary` restores.
"""
import logging
from typing import Dict, List, Optional, Sequence, Union

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage

from ...data.concept_groups import concept_groups_from_batch, image_labels
from ...data.streams import CAPTION_STREAM, batch_stream
from ..roi_heads.co_occurrence_branch import CoOccurrenceBranchMixin
from ..roi_heads.image_level_losses import CaptionTargets
from ..text.captions import CaptionEmbedder, record_caption
from ..vocabulary import ClassNameEncoder
from ..vocabulary import training_class_names as read_training_class_names
from .box_supervision import box_supervised_mask, rpn_forward

logger = logging.getLogger(__name__)

# The RPN and box losses, which box batches train; a caption batch trains the others (the image-level losses).
BOX_LOSSES = ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc")


@META_ARCH_REGISTRY.register()
class CXRCoDet(GeneralizedRCNN):
    """GeneralizedRCNN + concept groups for the co-occurrence loss + a switchable test vocabulary."""

    # Image-level-only training images are masked out of the box losses (checked by the trainer).
    trains_on_image_level_only = True

    @staticmethod
    def trains_on_caption_stream(cfg) -> bool:
        """Whether cfg trains any image-level loss on the two-stream loader's caption batches (else they are
        zero-gradient steps that read no image)."""
        return bool(cfg.MODEL.CO_OCCURRENCE.ENABLED or cfg.MODEL.CAPTION_LOSS.ENABLED or cfg.MODEL.MAX_SIZE_LOSS.ENABLED)

    @configurable
    def __init__(
        self,
        *,
        class_name_encoder=None,
        training_class_names: Sequence[str] = (),
        caption_embedder: Optional[CaptionEmbedder] = None,
        caption_granularity: str = "unelaborate",
        two_stream: bool = False,
        **kwargs,
    ):
        """
        Args:
            class_name_encoder: callable list[str] -> [C, D] text embeddings (`ClassNameEncoder`), used by
                `set_test_vocabulary` with class names; kept outside the module tree (no parameters).
            training_class_names: names of the training vocabulary; `set_test_vocabulary` with exactly
                these names restores the training vocabulary instead of re-encoding them.
            caption_embedder: embeds the captions of caption batches (the caption loss), or None when it is off.
            caption_granularity: which of a record's "captions" the caption loss reads (else its "caption").
            two_stream: batches come from the two-stream loader (box batches carry no concept groups).
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
        self._caption_embedder = caption_embedder
        self.caption_granularity = caption_granularity
        self.two_stream = bool(two_stream)
        self._warned_no_groups = False

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)  # the ROI heads' co-occurrence head refuses a CONCEPT_GROUP_SIZE below 2
        ret["class_name_encoder"] = ClassNameEncoder(cfg)
        ret["training_class_names"] = read_training_class_names(cfg)
        two_stream = cfg.DATALOADER.SAMPLER_TRAIN == "TwoStreamSampler"
        enabled = [f"MODEL.{name}.ENABLED" for name in ("CAPTION_LOSS", "MAX_SIZE_LOSS") if cfg.MODEL[name].ENABLED]
        if enabled and not two_stream:
            raise ValueError(f"{' and '.join(enabled)} train on caption batches: set DATALOADER.SAMPLER_TRAIN "
                             "'TwoStreamSampler'")
        ret["caption_embedder"] = CaptionEmbedder(cfg) if cfg.MODEL.CAPTION_LOSS.ENABLED else None
        ret["caption_granularity"] = cfg.MODEL.CAPTION_LOSS.GRANULARITY
        ret["two_stream"] = two_stream
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
        captions = self._caption_targets(batched_inputs) if batch_stream(batched_inputs) == CAPTION_STREAM else None
        _, detector_losses = self.roi_heads(
            images, features, proposals, gt_instances,
            concept_groups=self._concept_groups(batched_inputs), box_supervised=box_supervised, captions=captions,
        )
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        losses = {**detector_losses, **proposal_losses}
        return self._stream_losses(losses, captions is not None) if self.two_stream else losses

    @staticmethod
    def _stream_losses(losses: Dict[str, torch.Tensor], caption_batch: bool) -> Dict[str, torch.Tensor]:
        """The losses of the batch's stream only (box losses on box batches, image-level ones on caption batches), so
        the logs show each loss over the iterations that train it; the other stream's losses, zeros that touch their
        parameters (distributed training needs every parameter in every step), are added to the first one kept."""
        kept = {k: v for k, v in losses.items() if (k in BOX_LOSSES) != caption_batch}
        if not kept:
            return losses
        zeros = [v for k, v in losses.items() if k not in kept]
        first = next(iter(kept))
        kept[first] = kept[first] + sum(zeros) * 0.0
        return kept

    def _concept_groups(self, batched_inputs):
        """The batch's ConceptGroups for the co-occurrence branch; None (logged once) from a plain loader."""
        if self.roi_heads.co_occurrence is None:
            return None
        groups = concept_groups_from_batch(batched_inputs, self.concept_group_size)
        if groups is None and not self.two_stream and not self._warned_no_groups:
            logger.warning(
                "Training batches carry no 'concept_id' (DATALOADER.SAMPLER_TRAIN is not ConceptGroupSampler): "
                "the co-occurrence loss is skipped (reported as 0); only box-supervised losses train."
            )
            self._warned_no_groups = True
        return groups

    def _caption_targets(self, batched_inputs) -> CaptionTargets:
        """A caption batch's caption embeddings (when the caption loss is on), shared-caption mask and findings."""
        labels = [image_labels(x) for x in batched_inputs]
        if self._caption_embedder is None:
            return CaptionTargets(None, None, labels)
        texts = [record_caption(x, self.caption_granularity) for x in batched_inputs]
        same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.bool)
        return CaptionTargets(self._caption_embedder(texts), same, labels)

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
