"""`PhraseGrounding`: a phrase in, a heat map and a box out, trained from box-annotated findings.

Patch features: the chosen backbone outputs, each projected by a 1x1 conv, upsampled to the finest of
them, summed and refined (3x3 conv, ReLU, 1x1 conv): one region feature per grid cell. Phrase
features: the frozen text encoder's sentence vector through a two-layer MLP. A cell's logit is the
region-phrase dot product over sqrt(D) plus a learned bias (a dot product, not a cosine: from-scratch
features start nearly parallel, and a cosine head collapses to a flat map); its sigmoid is the phrase's map,
spread back over the image by the shared upsampling (modeling/localization/maps.py), and its box comes from the
map's connected components.

Training: per image, one phrase per finding present (built from the finding descriptions at a random
granularity, as prompts are) with target the fraction of each cell covered by the union of that
finding's boxes, plus NEGATIVES_PER_IMAGE phrases of absent findings with an empty target; loss = a
class-balanced binary cross-entropy per phrase (half the weight on covered, half on uncovered cells).
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from ...data.concept_groups import image_labels
from ...data.descriptions import check_granularity_list
from .prompt_localizer import PromptLocalizer


def box_coverage(boxes: torch.Tensor, padded_size: Tuple[int, int], grid_size: Tuple[int, int]) -> torch.Tensor:
    """[h, w] fraction of each grid cell covered by the union of `boxes` (N x 4 xyxy, input pixels)."""
    height, width = padded_size
    mask = torch.zeros((height, width), device=boxes.device)
    for x0, y0, x1, y1 in boxes.round().long().tolist():
        mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 1.0
    return F.adaptive_avg_pool2d(mask[None, None], grid_size)[0, 0]


def balanced_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over phrases of a per-phrase BCE with half the weight on covered cells and half on uncovered
    ones (soft targets split by their values); a phrase with an empty target weighs its cells evenly."""
    losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1)
    covered, uncovered = targets.flatten(1), 1.0 - targets.flatten(1)
    covered_total = covered.sum(dim=1, keepdim=True)
    uncovered_weight = uncovered / uncovered.sum(dim=1, keepdim=True).clamp(min=1e-6)
    has_target = covered_total > 0
    weights = torch.where(has_target, 0.5 * covered / covered_total.clamp(min=1e-6) + 0.5 * uncovered_weight,
                          uncovered_weight)
    return (weights * losses).sum(dim=1).mean()


@META_ARCH_REGISTRY.register()
class PhraseGrounding(PromptLocalizer):
    """Region-phrase similarity over the backbone's grid; trained on box-annotated findings."""

    @configurable
    def __init__(self, *, in_features: Sequence[str] = ("res3", "res4"), embed_dim: int = 128,
                 negatives_per_image: int = 2, phrase_granularities: Sequence[str] = ("elaborate", "unelaborate"),
                 logit_bias_init: float = -2.0, **kwargs):
        """
        Args:
            in_features: backbone outputs fused into the patch features.
            embed_dim: width of the joint patch-phrase space.
            negatives_per_image: phrases of absent findings per image in training.
            phrase_granularities: description granularities of the training phrases.
            logit_bias_init: initial bias of the cell logits (sigmoid(-2) = 0.12: most cells are outside).
            kwargs: as PromptLocalizer.
        """
        super().__init__(**kwargs)
        shapes = self.backbone.output_shape()
        missing = [name for name in in_features if name not in shapes]
        if missing or not in_features:
            raise ValueError(f"MODEL.PHRASE_GROUNDING.IN_FEATURES {list(in_features)}: the backbone gives "
                             f"{sorted(shapes)} (missing {missing})")
        check_granularity_list(phrase_granularities, "MODEL.PROMPTS.TRAIN_GRANULARITIES")
        if negatives_per_image < 0:
            raise ValueError(f"MODEL.PHRASE_GROUNDING.NEGATIVES_PER_IMAGE must be >= 0, got {negatives_per_image}")
        self.in_features = list(in_features)
        self.negatives_per_image = int(negatives_per_image)
        self.phrase_granularities = list(phrase_granularities)
        self.feature_projections = nn.ModuleDict(
            {name: nn.Conv2d(shapes[name].channels, embed_dim, kernel_size=1) for name in self.in_features}
        )
        self.refine = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(embed_dim, embed_dim, kernel_size=1),
        )
        self.phrase_projection = nn.Sequential(
            nn.Linear(self.text.sentence_dim, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, embed_dim)
        )
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias_init)))

    @classmethod
    def from_config(cls, cfg) -> Dict:
        section = cfg.MODEL.PHRASE_GROUNDING
        return {
            **cls.base_config(cfg),
            "in_features": list(section.IN_FEATURES),
            "embed_dim": section.EMBED_DIM,
            "negatives_per_image": section.NEGATIVES_PER_IMAGE,
            "phrase_granularities": list(cfg.MODEL.PROMPTS.TRAIN_GRANULARITIES),
            "logit_bias_init": section.LOGIT_BIAS_INIT,
        }

    def patch_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, D, h, w] region features on the finest grid of IN_FEATURES."""
        projected = [self.feature_projections[name](features[name]) for name in self.in_features]
        size = max((p.shape[-2:] for p in projected), key=lambda s: s[0] * s[1])
        fused = sum(p if p.shape[-2:] == size else F.interpolate(p, size=size, mode="bilinear", align_corners=False)
                    for p in projected)
        return self.refine(fused)

    def phrase_vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """[P, D] phrase features."""
        return self.phrase_projection(self.text.sentences(texts).to(self.device))

    def _logits(self, patches: torch.Tensor, phrases: torch.Tensor) -> torch.Tensor:
        """[B, P, h, w] logits of every image's cells with every phrase."""
        return torch.einsum("bdhw,pd->bphw", patches, phrases) / math.sqrt(patches.shape[1]) + self.logit_bias

    def grid_maps(self, features: Dict[str, torch.Tensor], texts: Sequence[str]) -> torch.Tensor:
        """[B, P, h, w] probability that a cell lies inside the phrase's region."""
        return self._logits(self.patch_features(features), self.phrase_vectors(texts)).sigmoid()

    def training_phrases(self, record: dict) -> List[Tuple[str, int, bool]]:
        """(phrase, finding id, has boxes) of one image: every finding with boxes, then sampled findings
        absent from the image (a finding it shows without a box is neither)."""
        num_classes = len(self.training_class_names)
        present = sorted({int(c) for c in record["instances"].gt_classes.tolist()})
        shown = set(present) | set(image_labels(record, num_classes))
        absent = [c for c in range(num_classes) if c not in shown]
        negatives = self.rng.sample(absent, min(self.negatives_per_image, len(absent)))
        return [
            (self.prompt(self.training_class_names[c], self.rng.choice(self.phrase_granularities)), c, c in present)
            for c in present + negatives
        ]

    def losses(self, images, features: Dict[str, torch.Tensor], batched_inputs: List[dict]) -> Dict[str, torch.Tensor]:
        """Balanced BCE of each (image, phrase) map against the cell coverage of the phrase's boxes."""
        patches = self.patch_features(features)
        grid_size = tuple(patches.shape[-2:])
        padded_size = tuple(images.tensor.shape[-2:])
        texts, image_index, targets = [], [], []
        missing = [record.get("file_name", "?") for record in batched_inputs if "instances" not in record]
        if missing:
            raise ValueError(f"PhraseGrounding trains on boxes: input {missing[0]!r} has no 'instances'")
        for index, record in enumerate(batched_inputs):
            instances = record["instances"].to(self.device)
            for phrase, class_id, present in self.training_phrases(record):
                boxes = instances.gt_boxes.tensor[instances.gt_classes == class_id]
                texts.append(phrase)
                image_index.append(index)
                targets.append(box_coverage(boxes, padded_size, grid_size) if present
                               else torch.zeros(grid_size, device=self.device))
        if not texts:
            return {"loss_grounding": patches.sum() * 0.0}
        phrases = self.phrase_vectors(texts)
        selected = patches[torch.tensor(image_index, device=self.device)]
        logits = (selected * phrases[:, :, None, None]).sum(dim=1) / math.sqrt(patches.shape[1]) + self.logit_bias
        return {"loss_grounding": balanced_bce(logits, torch.stack(targets))}
