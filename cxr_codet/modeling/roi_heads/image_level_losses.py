"""Image-level losses of the caption stream besides CoDet's co-occurrence loss, as Detic defines them.

- Caption loss (Detic's WITH_CAPTION): the feature of each image's whole-image box, projected and scored by the
  open-vocabulary classifier against the text embeddings of the batch's captions (temperature x cosine), is
  trained with binary cross-entropy to match its own caption and no other: per image the positive term plus
  `negative_weight` times the sum of the negative terms (Detic: weight 1 within one process's batch, 0.125 when
  the captions of every process are gathered), averaged over images.
- Max-size loss (Detic's IMAGE_LABEL_LOSS "max_size", the weak-label baseline CoDet compares with): each image
  label is assigned to the image's largest proposal, whose class logits are trained with binary cross-entropy
  against that label (summed over the C findings), averaged over the image's labels and then over images.
  Each label gets its own one-hot target, so on an image with two labels each term pushes the other label
  down on the same proposal (Detic's definition, kept as the baseline it is).
"""
from typing import Sequence

import torch
from torch.nn import functional as F


def caption_loss(caption_logits: torch.Tensor, negative_weight: float = 1.0) -> torch.Tensor:
    """Detic's caption loss from `caption_logits` [B, B]: row i scores image i against the B captions, and
    caption i is image i's own."""
    if caption_logits.dim() != 2 or caption_logits.shape[0] != caption_logits.shape[1]:
        raise ValueError(f"caption logits must be [B, B] (images x their captions), got {tuple(caption_logits.shape)}")
    if caption_logits.shape[0] == 0:
        return caption_logits.sum() * 0.0
    target = torch.eye(caption_logits.shape[0], dtype=caption_logits.dtype, device=caption_logits.device)
    per_entry = F.binary_cross_entropy_with_logits(caption_logits, target, reduction="none")
    positive = (per_entry * target).sum(dim=1)
    negative = (per_entry * (1 - target)).sum(dim=1)
    return (positive + float(negative_weight) * negative).mean()


def max_size_loss(class_logits: Sequence[torch.Tensor], proposal_areas: Sequence[torch.Tensor],
                  image_labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """Detic's max-size loss. Per image: `class_logits[i]` [n_i, C + 1] (the last column the background),
    `proposal_areas[i]` [n_i], `image_labels[i]` its findings (contiguous ids). Images without proposals or
    labels add nothing to the sum but count in the mean over images, as in Detic."""
    if not class_logits:
        raise ValueError("max_size_loss needs at least one image")
    total = class_logits[0].sum() * 0.0
    for logits, areas, labels in zip(class_logits, proposal_areas, image_labels):
        if len(logits) == 0 or not labels:
            total = total + logits.sum() * 0.0
            continue
        largest = int(torch.argmax(areas))
        foreground = logits[largest, :-1]
        for label in labels:
            target = torch.zeros_like(foreground)
            target[int(label)] = 1.0
            total = total + F.binary_cross_entropy_with_logits(foreground, target, reduction="sum") / len(labels)
    return total / len(class_logits)
