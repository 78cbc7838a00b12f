"""`ProgressionDetector`: per-region progression (improved / worsened / no change) between a prior and a current
image (after CheXLearner, "Text-Guided Fine-Grained Representation Learning for Progression Detection").

Both images go through one backbone; each anatomical region is ROI-aligned from its own box in either image
(so misregistration between the two exposures is absorbed by the boxes) and embedded by an MLP as a tangent
vector, mapped into the geometry of cfg.MODEL.PROGRESSION.GEOMETRY: the Poincare ball (exponential map at
the origin; CheXLearner's Med-Manifold alignment) or Euclidean space (the ablation). A region's change is
the gyrovector from its prior to its current point ((-prior) (+) current; current - prior in Euclidean
space); the classifier reads the change's tangent vector and the geodesic distance. Losses:
- "loss_progression": cross-entropy over the three labels;
- "loss_alignment": contrastive anatomical alignment: in the batch, each region's prior point must be
  nearer (geodesic distance) its own current point than any other region's (symmetric InfoNCE on -d/T);
- "loss_text": the region's description (e.g. "Increased consolidation in the right lower lung zone."),
  embedded by the frozen text encoder and a trainable projection into the same geometry, must be nearest
  its region's change point (symmetric InfoNCE on -d/T, identical descriptions being positives).
The description is training supervision only: inference reads no text, so it cannot leak the label.

Inference output per input: {"progression": {"regions": [names], "labels": PROGRESSION_LABELS,
"scores": [R, 3] probabilities}}.
"""
import logging
from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes, ImageList
from torch import nn
from torch.nn import functional as F

from ...data.datasets.imagenome import PROGRESSION_LABELS
from ..localization.matching import symmetric_contrastive_loss
from ..text.frozen_features import FrozenTextFeatures
from ..text import build_text_encoder
from ..hyperbolic import build_geometry, pairwise_distances

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class ProgressionDetector(nn.Module):
    """Region features of an image pair compared in hyperbolic (or Euclidean) space, classified per region."""

    @configurable
    def __init__(self, *, backbone: nn.Module, text_features: FrozenTextFeatures, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], in_feature: str = "res4",
                 pooler_resolution: int = 4, hidden_dim: int = 256, embed_dim: int = 64, geometry: str = "poincare",
                 curvature: float = 1.0, clip_radius: float = 2.0, temperature: float = 0.1,
                 align_loss_weight: float = 0.5, text_loss_weight: float = 0.5):
        """
        Args:
            backbone: a detectron2 backbone; its output `in_feature` is ROI-aligned per region.
            text_features: the frozen text encoder (region descriptions), kept out of the module tree.
            pixel_mean, pixel_std: input normalisation, per channel.
            pooler_resolution: side of the ROI-aligned grid per region.
            hidden_dim, embed_dim: widths of the region and classifier MLPs and of the embedding.
            geometry, curvature, clip_radius: see hyperbolic.py.
            temperature: of the alignment and text contrastive losses (on negative distances).
            align_loss_weight, text_loss_weight: weights of "loss_alignment" and "loss_text" (0 = off).
        """
        super().__init__()
        shapes = backbone.output_shape()
        if in_feature not in shapes:
            raise ValueError(f"cfg.MODEL.PROGRESSION.IN_FEATURE {in_feature!r} is not a backbone output; "
                             f"the backbone gives {sorted(shapes)}")
        if temperature <= 0 or align_loss_weight < 0 or text_loss_weight < 0:
            raise ValueError("cfg.MODEL.PROGRESSION needs TEMPERATURE > 0 and loss weights >= 0; got "
                             f"{temperature}, {align_loss_weight}, {text_loss_weight}")
        self.backbone = backbone
        self.text = text_features
        self.in_feature = in_feature
        self.geometry = build_geometry(geometry, curvature, clip_radius)
        self.temperature = float(temperature)
        self.align_loss_weight = float(align_loss_weight)
        self.text_loss_weight = float(text_loss_weight)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.pooler = ROIPooler((pooler_resolution, pooler_resolution), (1.0 / shapes[in_feature].stride,),
                                sampling_ratio=0, pooler_type="ROIAlignV2")
        region_in = shapes[in_feature].channels * pooler_resolution ** 2
        self.region_head = nn.Sequential(nn.Flatten(), nn.Linear(region_in, hidden_dim), nn.ReLU(inplace=True),
                                         nn.Linear(hidden_dim, embed_dim))
        self.classifier = nn.Sequential(nn.Linear(embed_dim + 1, hidden_dim), nn.ReLU(inplace=True),
                                        nn.Linear(hidden_dim, len(PROGRESSION_LABELS)))
        self.text_projection = nn.Linear(self.text.sentence_dim, embed_dim)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        section = cfg.MODEL.PROGRESSION
        return {
            "backbone": build_backbone(cfg),
            "text_features": FrozenTextFeatures(build_text_encoder(cfg)),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "in_feature": section.IN_FEATURE,
            "pooler_resolution": section.POOLER_RESOLUTION,
            "hidden_dim": section.HIDDEN_DIM,
            "embed_dim": section.EMBED_DIM,
            "geometry": section.GEOMETRY,
            "curvature": section.CURVATURE,
            "clip_radius": section.CLIP_RADIUS,
            "temperature": section.TEMPERATURE,
            "align_loss_weight": section.ALIGN_LOSS_WEIGHT,
            "text_loss_weight": section.TEXT_LOSS_WEIGHT,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @staticmethod
    def check_pair_inputs(batched_inputs: List[dict]) -> None:
        """Refuse inputs without both images: the data layer maps pair datasets (metadata mapper "image_pair",
        cxr_codet/data/image_pairs.py) for training and test, and this model reads nothing from disk."""
        single = [x.get("file_name", "?") for x in batched_inputs if "prior_image" not in x]
        if single:
            raise ValueError(f"ProgressionDetector reads image pairs, but input {single[0]!r} has no 'prior_image': "
                             "use a comparison dataset (its metadata mapper 'image_pair' maps both images and their "
                             "region boxes, e.g. cxr_phantom_pairs_train)")

    def _features(self, tensors: List[torch.Tensor]) -> torch.Tensor:
        """The backbone feature `in_feature` of a batch of uint8 images (normalised, padded)."""
        images = [(t.to(self.device) - self.pixel_mean) / self.pixel_std for t in tensors]
        images = ImageList.from_tensors(images, self.backbone.size_divisibility)
        return self.backbone(images.tensor)[self.in_feature]

    def region_points(self, batched_inputs: List[dict]):
        """(prior points [R, E], current points [R, E]) of every region of the batch, in input order."""
        prior_map = self._features([x["prior_image"] for x in batched_inputs])
        current_map = self._features([x["image"] for x in batched_inputs])
        prior_boxes = [Boxes(x["prior_boxes"].to(self.device)) for x in batched_inputs]
        current_boxes = [Boxes(x["current_boxes"].to(self.device)) for x in batched_inputs]
        prior = self.geometry.to_manifold(self.region_head(self.pooler([prior_map], prior_boxes)))
        current = self.geometry.to_manifold(self.region_head(self.pooler([current_map], current_boxes)))
        return prior, current

    def change_logits(self, prior: torch.Tensor, current: torch.Tensor):
        """(change points [R, E], logits [R, 3]) from the regions' prior and current points."""
        change = self.geometry.change(prior, current)
        distance = self.geometry.distance(prior, current)[:, None]
        return change, self.classifier(torch.cat([self.geometry.to_tangent(change), distance], dim=1))

    def forward(self, batched_inputs: List[dict]):
        """Training: the three losses. Inference: per-region probabilities (see the module doc)."""
        self.check_pair_inputs(batched_inputs)
        prior, current = self.region_points(batched_inputs)
        change, logits = self.change_logits(prior, current)
        if not self.training:
            return self._outputs(batched_inputs, logits)
        labels = torch.cat([x["progression_labels"] for x in batched_inputs]).to(self.device)
        losses = {"loss_progression": F.cross_entropy(logits, labels)}
        if self.align_loss_weight:
            logits_align = -pairwise_distances(self.geometry, prior, current) / self.temperature
            identity = torch.eye(len(prior), dtype=torch.bool, device=self.device)
            losses["loss_alignment"] = self.align_loss_weight * symmetric_contrastive_loss(logits_align, identity)
        if self.text_loss_weight:
            descriptions = [region["description"] for x in batched_inputs for region in x["regions"]]
            text = self.geometry.to_manifold(self.text_projection(self.text.sentences(descriptions).to(self.device)))
            same = torch.tensor([[a == b for b in descriptions] for a in descriptions], device=self.device)
            logits_text = -pairwise_distances(self.geometry, change, text) / self.temperature
            losses["loss_text"] = self.text_loss_weight * symmetric_contrastive_loss(logits_text, same)
        return losses

    def _outputs(self, batched_inputs: List[dict], logits: torch.Tensor) -> List[dict]:
        probabilities = logits.softmax(dim=1).cpu()
        results, start = [], 0
        for x in batched_inputs:
            count = len(x["regions"])
            results.append({"progression": {"regions": [r["name"] for r in x["regions"]],
                                            "labels": list(PROGRESSION_LABELS),
                                            "scores": probabilities[start:start + count]}})
            start += count
        return results
