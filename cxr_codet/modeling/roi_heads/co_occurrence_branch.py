"""Training step shared by CXR-CoDet's FPN and C4 ROI heads: box losses plus the image-level losses.

One region-feature pass serves every loss: per image, the proposals sampled for the box losses, the top-N
proposals (by objectness, detached boxes) of images in concept groups (co-occurrence), and on caption batches the
whole-image box (caption loss) and the largest top proposal (max-size loss) are pooled together, so the image-level
losses reuse the box head instead of running it again (image_level_losses.py).
"""
from typing import List, Optional

import torch
from detectron2.config import configurable
from torch.nn import functional as F
from detectron2.structures import Boxes, Instances

from .co_occurrence_head import CoOccurrenceHead
from .image_level_losses import CaptionTargets, ImageLevelLossSettings, caption_loss, largest_proposals, max_size_loss


def build_co_occurrence_head(cfg) -> Optional[CoOccurrenceHead]:
    """The co-occurrence head from cfg.MODEL.CO_OCCURRENCE and DATALOADER.CONCEPT_GROUP_SIZE, or None when off."""
    section = cfg.MODEL.CO_OCCURRENCE
    if not section.ENABLED:
        return None
    return CoOccurrenceHead(
        num_proposals=section.NUM_PROPOSALS,
        group_size=cfg.DATALOADER.CONCEPT_GROUP_SIZE,
        use_text_guidance=section.TEXT_GUIDANCE,
        loss_weight=section.LOSS_WEIGHT,
        mask_other_findings=section.MASK_OTHER_FINDINGS,
        lr_multiplier=section.LR_MULTIPLIER,
    )


def check_supported_heads(cfg) -> None:
    """CXR-CoDet's ROI heads are box-only: refuse masks, keypoints and training on predicted boxes."""
    unsupported = {
        "MODEL.MASK_ON": cfg.MODEL.MASK_ON,
        "MODEL.KEYPOINT_ON": cfg.MODEL.KEYPOINT_ON,
        "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES,
    }
    enabled = [key for key, value in unsupported.items() if value]
    if enabled:
        raise ValueError(f"CXR-CoDet ROI heads detect boxes only; set {', '.join(enabled)} to False")


class CoOccurrenceBranchMixin:
    """Mixed into a detectron2 ROIHeads (before it in the bases) that has `box_predictor`
    (OpenVocabularyOutputLayers) and `_region_features(features, boxes) -> [R, F]`; adds `co_occurrence`."""

    @configurable
    def __init__(self, *, co_occurrence=None, image_level_losses: ImageLevelLossSettings = ImageLevelLossSettings(),
                 **kwargs):
        """`co_occurrence`: a CoOccurrenceHead, or None (no co-occurrence loss); `image_level_losses`: which of
        Detic's caption and max-size losses train on caption batches."""
        super().__init__(**kwargs)
        self.co_occurrence = co_occurrence
        self.image_level_losses = image_level_losses

    def _top_proposal_boxes(self, proposals: List[Instances], concept_groups) -> Optional[List[Boxes]]:
        """Per image, the top-N RPN proposals by objectness (detached) for images in groups, else none."""
        if self.co_occurrence is None or concept_groups is None or concept_groups.num_groups == 0:
            return None
        in_groups = set(concept_groups.image_indices.flatten().tolist())
        num_props = self.co_occurrence.num_proposals
        top = []
        for index, p in enumerate(proposals):
            boxes = p.proposal_boxes.tensor
            if index in in_groups and len(p) > 0:
                order = p.objectness_logits.topk(min(num_props, len(p))).indices
                top.append(Boxes(boxes[order].detach()))
            else:
                top.append(Boxes(boxes.new_zeros((0, 4))))
        return top

    def _sample_box_supervised(self, proposals, targets, box_supervised) -> List[Instances]:
        """`label_and_sample_proposals` on the box-supervised images; image-level-only ones get no sample,
        so they add nothing to the box losses (instead of only background). `box_supervised` None: all."""
        if box_supervised is None:
            return self.label_and_sample_proposals(proposals, targets)
        boxed = [i for i, supervised in enumerate(box_supervised) if supervised]
        sampled = iter(
            self.label_and_sample_proposals([proposals[i] for i in boxed], [targets[i] for i in boxed])
            if boxed else []
        )
        out = []
        for index, p in enumerate(proposals):
            if box_supervised[index]:
                out.append(next(sampled))
                continue
            empty = p[:0]
            empty.gt_classes = torch.zeros(0, dtype=torch.long, device=p.proposal_boxes.device)
            empty.gt_boxes = Boxes(p.proposal_boxes.tensor.new_zeros((0, 4)))
            out.append(empty)
        return out

    def _forward_train(self, features, proposals, targets, concept_groups, box_supervised=None,
                       captions: Optional[CaptionTargets] = None, image_sizes=None):
        """Box losses on sampled proposals of box-supervised images, the co-occurrence loss on all images in groups
        and, with `captions` (a caption batch), the caption and max-size losses; returns (sampled proposals, losses)."""
        if not targets:
            raise ValueError("ROI heads need ground-truth 'instances' in training")
        sampled = self._sample_box_supervised(proposals, targets, box_supervised)
        extra = {}  # name -> per image the boxes pooled beside the sampled ones
        top_boxes = self._top_proposal_boxes(proposals, concept_groups)
        if top_boxes is not None:
            extra["co_occurrence"] = top_boxes
        settings = self.image_level_losses
        if captions is not None and settings.caption and captions.embeddings is not None:
            extra["caption"] = [Boxes(torch.tensor([[0.0, 0.0, w, h]], device=p.proposal_boxes.device))
                                for p, (h, w) in zip(proposals, image_sizes)]
        if captions is not None and settings.max_size:
            extra["max_size"] = largest_proposals(proposals, settings.max_size_proposals)
        names = list(extra)
        joint = [Boxes.cat([s.proposal_boxes] + [extra[n][i] for n in names]) for i, s in enumerate(sampled)]
        sizes = [len(b) for i, s in enumerate(sampled) for b in [s.proposal_boxes] + [extra[n][i] for n in names]]
        chunks = self._region_features(features, joint).split(sizes)
        stride = len(names) + 1
        box_features = torch.cat(chunks[0::stride])
        pooled = {n: list(chunks[k + 1::stride]) for k, n in enumerate(names)}
        predictions = self.box_predictor(box_features)
        losses = self.box_predictor.losses(predictions, sampled)
        if self.co_occurrence is not None:
            top = pooled.get("co_occurrence")
            losses["loss_cooccurrence"] = self._co_occurrence_loss(
                None if top is None else torch.cat(top), None if top is None else [len(t) for t in top_boxes],
                concept_groups)
        zero = box_features.sum() * 0.0
        if settings.caption:
            losses["loss_caption"] = (self._caption_loss(torch.cat(pooled["caption"]), captions) * settings.caption_weight
                                      if "caption" in pooled else zero)
        if settings.max_size:
            losses["loss_max_size"] = (self._max_size_loss(pooled["max_size"], captions) * settings.max_size_weight
                                       if "max_size" in pooled else zero)
        return sampled, losses

    def _caption_loss(self, image_features: torch.Tensor, captions: CaptionTargets) -> torch.Tensor:
        """Detic's caption loss: each whole-image feature, projected, against the batch's caption embeddings."""
        classifier = self.box_predictor.cls_score
        embeddings = F.normalize(captions.embeddings.to(image_features.device).float(), dim=-1)
        logits = classifier.norm_temperature * F.normalize(classifier.project(image_features), dim=-1) @ embeddings.t()
        return caption_loss(logits, self.image_level_losses.caption_negative_weight,
                            captions.same_caption.to(image_features.device))

    def _max_size_loss(self, largest_features: List[torch.Tensor], captions: CaptionTargets) -> torch.Tensor:
        """Detic's max-size loss from each image's largest top proposal (none: that image adds nothing)."""
        logits = [self.box_predictor.cls_score(f) if len(f) else f.new_zeros((0,)) for f in largest_features]
        return max_size_loss(logits, captions.image_labels)

    def _co_occurrence_loss(self, top_features, top_counts, concept_groups) -> torch.Tensor:
        """The co-occurrence loss from the region features of each image's top proposals.

        Without groups in the batch the loss is a zero that still touches the MLP, so distributed
        training sees every parameter used on every process.
        """
        head = self.co_occurrence
        if top_features is None:
            return sum(p.sum() for p in head.parameters()) * 0.0
        classifier = self.box_predictor.cls_score
        largest = int(concept_groups.concept_ids.max())
        if largest >= classifier.num_training_classes:
            raise ValueError(
                f"concept_id {largest} in the batch is not a training class (ids 0..{classifier.num_training_classes - 1})"
            )
        projected = classifier.project(top_features)  # [sum n_i, D]
        device, num_images, num_props = projected.device, len(top_counts), head.num_proposals
        # Row r of `projected` goes to (image_index[r], slot[r]) of the zero-padded [images, N, D] tensor;
        # the indices are built on the CPU from the counts, so no device synchronisation is needed.
        counts = torch.as_tensor(top_counts)
        image_index = torch.repeat_interleave(torch.arange(num_images), counts)
        slot = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        image_index, slot = image_index.to(device), slot.to(device)
        padded = projected.new_zeros(num_images, num_props, projected.shape[1])
        padded = padded.index_put((image_index, slot), projected)
        valid = torch.zeros(num_images, num_props, dtype=torch.bool, device=device)
        valid[image_index, slot] = True
        groups = concept_groups.image_indices.to(device)
        other_findings = concept_groups.other_findings_mask(classifier.num_training_classes).to(device)
        return head(padded[groups], valid[groups], concept_groups.concept_ids.to(device), classifier, other_findings)
