"""Image-level losses of the caption stream besides CoDet's co-occurrence loss, as Detic defines them.

- Caption loss (Detic's WITH_CAPTION): the feature of each image's whole-image box, projected and scored by the
  open-vocabulary classifier against the text embeddings of the batch's captions (temperature x cosine), is
  trained with binary cross-entropy to match its own caption and no other: per image the positive terms plus
  `negative_weight` times the negative terms (Detic: weight 1 within one process's batch, 0.125 when the captions
  of every process are gathered), averaged over images. Captions composed from findings repeat, so images whose
  captions are the same text are each other's positives (Detic's free-text captions do not repeat).
- Max-size loss (Detic's IMAGE_LABEL_LOSS "max_size", the weak-label baseline CoDet compares with): each image
  label is assigned to the image's largest proposal, whose class logits are trained with binary cross-entropy
  against that label (summed over the C findings), averaged over the image's labels and then over images.
  Each label gets its own one-hot target, so on an image with two labels each term pushes the other label
  down on the same proposal (Detic's definition, kept as the baseline it is).
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from detectron2.structures import Boxes, Instances
from torch.nn import functional as F


@dataclass(frozen=True)
class ImageLevelLossSettings:
    """Which Detic losses the caption stream trains besides co-occurrence, and their weights."""

    caption_weight: float = 0.0  # 0: the caption loss is off
    caption_negative_weight: float = 1.0
    max_size_weight: float = 0.0  # 0: the max-size loss is off
    max_size_proposals: int = 128

    @classmethod
    def from_config(cls, cfg) -> "ImageLevelLossSettings":
        caption, max_size = cfg.MODEL.CAPTION_LOSS, cfg.MODEL.MAX_SIZE_LOSS
        for key, value in (("MODEL.CAPTION_LOSS.LOSS_WEIGHT", caption.LOSS_WEIGHT),
                           ("MODEL.CAPTION_LOSS.NEGATIVE_WEIGHT", caption.NEGATIVE_WEIGHT),
                           ("MODEL.MAX_SIZE_LOSS.LOSS_WEIGHT", max_size.LOSS_WEIGHT)):
            if not value >= 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
        if max_size.NUM_PROPOSALS < 1:
            raise ValueError(f"MODEL.MAX_SIZE_LOSS.NUM_PROPOSALS must be >= 1, got {max_size.NUM_PROPOSALS}")
        return cls(caption_weight=float(caption.LOSS_WEIGHT) if caption.ENABLED else 0.0,
                   caption_negative_weight=float(caption.NEGATIVE_WEIGHT),
                   max_size_weight=float(max_size.LOSS_WEIGHT) if max_size.ENABLED else 0.0,
                   max_size_proposals=int(max_size.NUM_PROPOSALS))

    @property
    def caption(self) -> bool:
        return self.caption_weight > 0

    @property
    def max_size(self) -> bool:
        return self.max_size_weight > 0


@dataclass
class CaptionTargets:
    """A caption batch's targets for the caption and max-size losses: caption embeddings [B, D] (None when the
    caption loss is off), which images share a caption [B, B] (bool), and each image's findings."""

    embeddings: Optional[torch.Tensor]
    same_caption: Optional[torch.Tensor]
    image_labels: Sequence[Sequence[int]]


def caption_loss(caption_logits: torch.Tensor, negative_weight: float = 1.0,
                 positives: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Detic's caption loss from `caption_logits` [B, B]: row i scores image i against the B captions; caption j
    is a positive of image i where `positives[i, j]` (default: j == i)."""
    if caption_logits.dim() != 2 or caption_logits.shape[0] != caption_logits.shape[1]:
        raise ValueError(f"caption logits must be [B, B] (images x their captions), got {tuple(caption_logits.shape)}")
    if caption_logits.shape[0] == 0:
        return caption_logits.sum() * 0.0
    if positives is None:
        positives = torch.eye(caption_logits.shape[0], dtype=torch.bool, device=caption_logits.device)
    target = positives.to(caption_logits.dtype)
    per_entry = F.binary_cross_entropy_with_logits(caption_logits, target, reduction="none")
    positive = (per_entry * target).sum(dim=1)
    negative = (per_entry * (1 - target)).sum(dim=1)
    return (positive + float(negative_weight) * negative).mean()


def largest_proposals(proposals: Sequence[Instances], num_proposals: int) -> List[Boxes]:
    """Per image, the largest (by area) of its `num_proposals` top proposals by objectness, detached (one box), or
    no box when it has no proposal."""
    out = []
    for p in proposals:
        boxes = p.proposal_boxes.tensor
        if len(p) == 0:
            out.append(Boxes(boxes.new_zeros((0, 4))))
            continue
        top = boxes[p.objectness_logits.topk(min(num_proposals, len(p))).indices]
        areas = (top[:, 2] - top[:, 0]) * (top[:, 3] - top[:, 1])
        out.append(Boxes(top[int(torch.argmax(areas))].detach().unsqueeze(0)))
    return out


def max_size_loss(class_logits: Sequence[torch.Tensor], image_labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """Detic's max-size loss. Per image: `class_logits[i]`, the [C + 1] logits of its largest proposal (empty
    without a proposal; the last column the background), and `image_labels[i]`, its findings (contiguous ids).
    Images without a proposal or labels add nothing but count in the mean over images, as in Detic."""
    if not class_logits:
        raise ValueError("max_size_loss needs at least one image")
    total = class_logits[0].sum() * 0.0
    for logits, labels in zip(class_logits, image_labels):
        if logits.numel() == 0 or not labels:
            total = total + logits.sum() * 0.0
            continue
        foreground = logits.reshape(-1)[:-1]
        for label in labels:
            target = torch.zeros_like(foreground)
            target[int(label)] = 1.0
            total = total + F.binary_cross_entropy_with_logits(foreground, target, reduction="sum") / len(labels)
    return total / len(class_logits)
