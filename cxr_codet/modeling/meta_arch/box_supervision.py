"""Per-image box supervision in a training batch: image-level-only images give no RPN or box loss.

Images marked "box_supervised": False (data/box_supervision.py) carry findings but no boxes; treating their
empty `instances` as "no object here" would teach the detector that their lesions are background. The RPN
still proposes on them (the co-occurrence branch needs their top proposals), but its losses, like the ROI
box losses, are computed on the box-supervised images only, normalised by their number.
"""
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.modeling.proposal_generator import RPN

from ...data.box_supervision import is_box_supervised


def box_supervised_mask(batched_inputs: Sequence[dict]) -> Optional[List[bool]]:
    """Per image, whether it has box supervision; None when every image has (the plain, unmasked path)."""
    mask = [is_box_supervised(x) for x in batched_inputs]
    return None if all(mask) else mask


def _zero_losses(pred_objectness_logits, pred_anchor_deltas) -> Dict[str, torch.Tensor]:
    """RPN losses of a batch without any box: zeros that still touch the head (every parameter used)."""
    zero = sum(x.sum() for x in pred_objectness_logits) * 0.0 + sum(x.sum() for x in pred_anchor_deltas) * 0.0
    return {"loss_rpn_cls": zero, "loss_rpn_loc": zero.clone()}


def rpn_forward(rpn: RPN, images, features, gt_instances, box_supervised: Optional[Sequence[bool]]):
    """(proposals for every image, RPN losses on the box-supervised images only); `box_supervised` None:
    `rpn(images, features, gt_instances)` unchanged. Follows detectron2's RPN.forward step by step."""
    if box_supervised is None:
        return rpn(images, features, gt_instances)
    if not isinstance(rpn, RPN):
        raise ValueError(
            f"image-level-only training images need detectron2's RPN (MODEL.PROPOSAL_GENERATOR.NAME 'RPN'), "
            f"got {type(rpn).__name__}"
        )
    level_features = [features[f] for f in rpn.in_features]
    anchors = rpn.anchor_generator(level_features)
    objectness, deltas = rpn.rpn_head(level_features)
    objectness = [score.permute(0, 2, 3, 1).flatten(1) for score in objectness]
    box_dim = rpn.anchor_generator.box_dim
    deltas = [
        x.view(x.shape[0], -1, box_dim, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
        for x in deltas
    ]
    boxed = [i for i, supervised in enumerate(box_supervised) if supervised]
    if boxed:
        gt_labels, gt_boxes = rpn.label_and_sample_anchors(anchors, [gt_instances[i] for i in boxed])
        losses = rpn.losses(anchors, [o[boxed] for o in objectness], gt_labels, [d[boxed] for d in deltas], gt_boxes)
    else:
        losses = _zero_losses(objectness, deltas)
    proposals = rpn.predict_proposals(anchors, objectness, deltas, images.image_sizes)
    return proposals, losses
