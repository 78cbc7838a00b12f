"""`ContrastiveClassifier`: image-report contrastive pre-training, then an MLP head on the frozen embeddings
("Disease Detection in Chest X-rays using CLIP Features with Interpretable ROI Analysis").

Stage 1 (iterations < PRETRAIN_ITERS): the backbone's pooled feature (a linear projection) and the frozen
text encoder's report vector (a trainable linear projection) are aligned with InfoNCE in both directions
at temperature TEMPERATURE (the paper: 0.1); reports are composed from each image's findings where a
dataset has none, and images with the same report key count as positives of each other.
Stage 2 (later iterations): encoders and projections frozen (no gradients, eval mode; an image-projection
BatchNorm only re-estimates its statistics on the frozen encoder), an MLP head (two hidden layers of 512,
ReLU) on the L2-normalised image embedding, concatenated with a normalised text embedding unless HEAD_TEXT
is "none" (see contrastive_head_texts.py for which text, and the label leak of "report"), predicts "abnormal" and,
with PER_FINDING, each training finding (sigmoid outputs, BCE). The head's input is standardised by a
BatchNorm first: embeddings of a from-scratch encoder spread little around their mean, too little for SGD.
A run with PRETRAIN_ITERS = 0 trains the head only, on encoders loaded from MODEL.WEIGHTS.

Inference output per image: {"classification": {"labels": [...], "scores": [L] probabilities}}, and with
Grad-CAM on: "gradcam" {"labels", "heatmaps" [L, H, W] in [-1, 1] on the original image} and, with
PER_FINDING, "localization" (the findings' maps in the format of the localization evaluator).
"""
import logging
import random
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from torch import nn
from torch.nn import functional as F

from ...config import run_seed
from ...data.concept_groups import image_labels
from ...data.descriptions import check_granularity_list, compose_report
from .image_text import image_text_config, positives_by_key
from ..localization.maps import MapSettings, grid_to_heatmaps, normalized_heatmaps
from ..localization.matching import symmetric_contrastive_loss
from ..text.frozen_features import FrozenTextFeatures
from .contrastive_head_texts import HEAD_TEXTS
from ..gradcam import GradCAM

logger = logging.getLogger(__name__)

ABNORMAL = "abnormal"  # the normal-vs-abnormal output: positive when an image has any finding
STAGES = ("pretrain", "head")
# Grad-CAM maps are upsampled to the image without blurring.
_GRADCAM_MAP_SETTINGS = MapSettings(blur_sigma=0.0)
# cfg.MODEL.IMAGE_CLASSIFIER.IMAGE_PROJECTION_NORM -> norm after the image projection (BN: batch-centred
# embeddings, so a from-scratch backbone's nearly parallel pooled features do not collapse the InfoNCE logits).
PROJECTION_NORMS = {"": lambda dim: nn.Identity(), "BN": nn.BatchNorm1d}


def build_mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear-ReLU layers of `hidden_dims`, then a Linear to `out_dim`."""
    layers, width = [], in_dim
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


@contextmanager
def eval_mode(*modules: nn.Module):
    """Run `modules` in eval mode (no BatchNorm statistics updates, no dropout), then restore their modes."""
    modes = [module.training for module in modules]
    for module in modules:
        module.train(False)
    try:
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


@META_ARCH_REGISTRY.register()
class ContrastiveClassifier(nn.Module):
    """Contrastive image-report pre-training, then a normal/abnormal (and per-finding) MLP head."""

    @configurable
    def __init__(self, *, backbone: nn.Module, text_features: FrozenTextFeatures, class_names: Sequence[str],
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], in_feature: str = "res5",
                 embed_dim: int = 128, temperature: float = 0.1, pretrain_iters: int = 0,
                 report_granularities: Sequence[str] = ("elaborate", "unelaborate"), head_text: str = "retrieved",
                 hidden_dims: Sequence[int] = (512, 512), per_finding: bool = True, image_projection_norm: str = "",
                 gradcam_layer: Optional[str] = None, seed: int = 0):
        """
        Args:
            backbone: a detectron2 backbone; its output `in_feature` is average-pooled into the image vector.
            text_features: the frozen text encoder with its cache (kept out of the module tree).
            class_names: the training findings (per-finding outputs, composed reports).
            pixel_mean, pixel_std: input normalisation, per channel.
            embed_dim: width of the joint image-report space.
            temperature: InfoNCE temperature (also of the "retrieved" text softmax).
            pretrain_iters: iterations of contrastive pre-training before the head trains.
            report_granularities: granularities of composed reports (one drawn per image in pre-training;
                the first is used for the head's "report" text).
            head_text: a HEAD_TEXTS name: the text beside the image in the head.
            hidden_dims: hidden layer widths of the MLP head.
            per_finding: add one output per training finding to "abnormal".
            image_projection_norm: a PROJECTION_NORMS name, the norm after the image projection.
            gradcam_layer: module name whose Grad-CAM maps inference returns; None: no maps.
            seed: seed of the report granularity draws (the run's SEED).
        """
        super().__init__()
        shapes = backbone.output_shape()
        if in_feature not in shapes:
            raise ValueError(f"cfg.MODEL.IMAGE_CLASSIFIER.IN_FEATURE {in_feature!r} is not a backbone output; "
                             f"the backbone gives {sorted(shapes)}")
        if head_text not in HEAD_TEXTS:
            raise ValueError(f"cfg.MODEL.IMAGE_CLASSIFIER.HEAD_TEXT must be one of {sorted(HEAD_TEXTS)}, got {head_text!r}")
        check_granularity_list(report_granularities, "MODEL.PROMPTS.TRAIN_GRANULARITIES")
        if image_projection_norm not in PROJECTION_NORMS:
            raise ValueError(f"cfg.MODEL.IMAGE_CLASSIFIER.IMAGE_PROJECTION_NORM must be one of {sorted(PROJECTION_NORMS)}, "
                             f"got {image_projection_norm!r}")
        if temperature <= 0 or pretrain_iters < 0 or not hidden_dims or min(hidden_dims) < 1:
            raise ValueError("cfg.MODEL.IMAGE_CLASSIFIER needs TEMPERATURE > 0, PRETRAIN_ITERS >= 0 and positive "
                             f"HIDDEN_DIMS; got {temperature}, {pretrain_iters}, {list(hidden_dims)}")
        self.backbone = backbone
        self.text = text_features
        self.class_names = list(class_names)
        self.in_feature = in_feature
        self.temperature = float(temperature)
        self.pretrain_iters = int(pretrain_iters)
        self.report_granularities = list(report_granularities)
        self.head_text = head_text
        self.output_labels = [ABNORMAL] + (self.class_names if per_finding else [])
        self.rng = random.Random(seed)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.image_projection = nn.Sequential(nn.Linear(shapes[in_feature].channels, embed_dim),
                                              PROJECTION_NORMS[image_projection_norm](embed_dim))
        self.text_projection = nn.Linear(self.text.sentence_dim, embed_dim)
        head_in = embed_dim * (1 if head_text == "none" else 2)
        self.head_norm = nn.BatchNorm1d(head_in)  # unit-scale inputs for SGD, whatever the embeddings' spread
        self.head = build_mlp(head_in, hidden_dims, len(self.output_labels))
        self.gradcam = GradCAM(self, gradcam_layer) if gradcam_layer else None
        self._stage = None

    @classmethod
    def from_config(cls, cfg) -> Dict:
        section = cfg.MODEL.IMAGE_CLASSIFIER
        return {
            **image_text_config(cfg),
            "in_feature": section.IN_FEATURE,
            "embed_dim": section.EMBED_DIM,
            "temperature": section.TEMPERATURE,
            "pretrain_iters": section.PRETRAIN_ITERS,
            "report_granularities": list(cfg.MODEL.PROMPTS.TRAIN_GRANULARITIES),
            "head_text": section.HEAD_TEXT,
            "hidden_dims": list(section.HIDDEN_DIMS),
            "per_finding": section.PER_FINDING,
            "image_projection_norm": section.IMAGE_PROJECTION_NORM,
            "gradcam_layer": section.GRADCAM.TARGET_LAYER if section.GRADCAM.ENABLED else None,
            "seed": run_seed(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[dict]) -> ImageList:
        """Normalised images of the batch, padded to one tensor."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def pooled_features(self, images: ImageList) -> torch.Tensor:
        """[B, C] the backbone output IN_FEATURE, average-pooled."""
        return self.backbone(images.tensor)[self.in_feature].mean(dim=(2, 3))

    def image_vectors(self, images: ImageList) -> torch.Tensor:
        """[B, E] L2-normalised image embeddings (projected, average-pooled backbone feature)."""
        return F.normalize(self.image_projection(self.pooled_features(images)), dim=1)

    def text_vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, E] L2-normalised text embeddings (frozen encoder, trainable projection)."""
        return F.normalize(self.text_projection(self.text.sentences(texts).to(self.device)), dim=1)

    def findings_of(self, record: dict) -> List[int]:
        """Finding ids of one input (its "image_labels", else its instances)."""
        return image_labels(record, len(self.class_names))

    def report_of(self, record: dict, granularity: str) -> str:
        """The input's "report", else one composed from its findings at `granularity`."""
        if "report" in record:
            return record["report"]
        return compose_report([self.class_names[i] for i in self.findings_of(record)], granularity)

    def targets(self, batched_inputs: List[dict]) -> torch.Tensor:
        """[B, L] 0/1 targets in `output_labels` order: abnormal (any finding), then each finding."""
        rows = []
        for record in batched_inputs:
            findings = self.findings_of(record)
            row = [float(bool(findings))]
            if len(self.output_labels) > 1:
                row += [float(i in findings) for i in range(len(self.class_names))]
            rows.append(row)
        return torch.tensor(rows, device=self.device)

    def training_stage(self) -> str:
        """"pretrain" before PRETRAIN_ITERS iterations, then "head" (the iteration of detectron2's EventStorage)."""
        try:
            iteration = get_event_storage().iter
        except AssertionError:
            raise RuntimeError("ContrastiveClassifier reads the training iteration from detectron2's EventStorage: "
                               "train it with CXRTrainer, or call it inside `with EventStorage(iteration):`") from None
        stage = STAGES[0] if iteration < self.pretrain_iters else STAGES[1]
        if stage != self._stage:
            logger.info("ContrastiveClassifier: %s stage from iteration %d", stage, iteration)
            if stage == "head":
                self._restart_projection_statistics()
            self._stage = stage
        return stage

    def _restart_projection_statistics(self) -> None:
        """Re-estimate the image projection's BatchNorm statistics on the frozen encoders (a cumulative average
        over the head stage's batches, as detectron2's PreciseBN does): the running averages of pre-training
        lag the moving backbone, and eval-mode embeddings would carry that lag as a large common offset."""
        for module in self.image_projection.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None

    def forward(self, batched_inputs: List[dict]):
        """Training: the loss of the current stage. Inference: per-image outputs (see the module doc)."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        if self.training_stage() == "pretrain":
            return self.contrastive_losses(images, batched_inputs)
        with torch.no_grad():
            with eval_mode(self.backbone):
                pooled = self.pooled_features(images)
            self.image_projection(pooled)  # in training mode: its BatchNorm statistics settle on the frozen encoder
            with eval_mode(self.image_projection, self.text_projection):
                image_vectors = F.normalize(self.image_projection(pooled), dim=1)
                features = self.head_features(image_vectors, batched_inputs)
        logits = self.classify(features)
        return {"loss_classifier": F.binary_cross_entropy_with_logits(logits, self.targets(batched_inputs))}

    def contrastive_losses(self, images: ImageList, batched_inputs: List[dict]) -> Dict[str, torch.Tensor]:
        """InfoNCE in both directions over the batch's image-report pairs (needs >= 2 images)."""
        if len(batched_inputs) < 2:
            raise ValueError("contrastive pre-training needs at least 2 images per batch (SOLVER.IMS_PER_BATCH)")
        reports, keys = [], []
        for record in batched_inputs:
            reports.append(self.report_of(record, self.rng.choice(self.report_granularities)))
            keys.append(("report", record["report"]) if "report" in record else ("findings", tuple(self.findings_of(record))))
        logits = self.image_vectors(images) @ self.text_vectors(reports).t() / self.temperature
        return {"loss_contrastive": symmetric_contrastive_loss(logits, positives_by_key(keys).to(self.device))}

    def head_features(self, image_vectors: torch.Tensor, batched_inputs: List[dict]) -> torch.Tensor:
        """[B, E or 2E] the head's input: the image embeddings, then the HEAD_TEXT embeddings if any."""
        text_vectors = HEAD_TEXTS[self.head_text](self, image_vectors, batched_inputs)
        return image_vectors if text_vectors is None else torch.cat([image_vectors, text_vectors], dim=1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """[B, L] logits of the MLP head (after standardising its input)."""
        return self.head(self.head_norm(features))

    def _logits(self, images: ImageList, batched_inputs: List[dict]) -> torch.Tensor:
        return self.classify(self.head_features(self.image_vectors(images), batched_inputs))

    def inference(self, batched_inputs: List[dict]) -> List[dict]:
        """Per image: output probabilities and, with Grad-CAM on, the maps of every output."""
        images = self.preprocess_image(batched_inputs)
        if self.gradcam is None:
            with torch.no_grad():
                logits, maps = self._logits(images, batched_inputs), None
        else:
            grid_shape, prefix = self._token_layout(tuple(images.tensor.shape[-2:]))
            logits, maps = self.gradcam(lambda: self._logits(images, batched_inputs), grid_shape, prefix)
        probabilities = logits.sigmoid().cpu()
        results = []
        for index, record in enumerate(batched_inputs):
            output = {"classification": {"labels": list(self.output_labels), "scores": probabilities[index]}}
            if maps is not None:
                heatmaps = self._heatmaps(maps[index], images, index, record)
                output["gradcam"] = {"labels": list(self.output_labels), "heatmaps": heatmaps}
                if len(self.output_labels) > 1:
                    output["localization"] = {"findings": list(self.class_names), "prompts": list(self.class_names),
                                              "heatmaps": heatmaps[1:]}
            results.append(output)
        return results

    def _token_layout(self, padded_size):
        """(patch grid, prefix tokens) for a ViT backbone's token activations; (None, 0) for CNNs."""
        if hasattr(self.backbone, "token_grid"):
            return self.backbone.token_grid(padded_size), self.backbone.num_prefix_tokens
        return None, 0

    @staticmethod
    def _heatmaps(grid_maps: torch.Tensor, images: ImageList, index: int, record: dict) -> torch.Tensor:
        """[L, H, W] maps on the original image, each min-max normalised to [-1, 1]."""
        image_size = tuple(images.image_sizes[index])
        output_size = (int(record.get("height", image_size[0])), int(record.get("width", image_size[1])))
        raw = grid_to_heatmaps(grid_maps, image_size, tuple(images.tensor.shape[-2:]), output_size,
                               _GRADCAM_MAP_SETTINGS)
        return normalized_heatmaps(raw)
