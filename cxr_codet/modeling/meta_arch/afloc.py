"""AFLoc ("Generalizable vision-language pre-training for annotation-free pathology localization").

Image side: three backbone taps projected into one joint space: a shallow map (res3, 1x1 conv) for words,
a deep map (res4, 1x1 conv) for sentences, and the average-pooled res5 (linear) for the report; no
nonlinearity, and no norm unless IMAGE_PROJECTION_NORM asks for one ("BN" centres the embeddings over the
batch, which a from-scratch backbone needs: its features start nearly parallel and the cosines collapse). Text side: the frozen text encoder's word features (sub-word pieces merged, last four
layers summed), sentences (mean of their words) and report (mean of all words), standardised with fixed
word statistics (see `word_statistics`) and mapped by one trainable linear projection shared by the three
levels (so they stay in one space, as BERT's outputs do in AFLoc; the encoder itself is frozen here to
keep CPU training cheap). Three contrastive losses, summed with
weights: GLoRIA localized matching of words with the shallow map and of sentences with the deep map, and
the global cosine of report and image vector (see modeling/localization/matching.py). Datasets without reports get
reports composed from each image's findings (`compose_report`, granularity drawn per image).

Localization: a prompt's report vector dotted with the deep map (not a cosine), then blur, upsampling,
NaN border and [-1, 1] normalisation (modeling/localization/maps.py).
"""
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ...data.concept_groups import image_labels
from ...data.descriptions import check_granularity_list, compose_report
from .image_text import positives_by_key
from .prompt_localizer import PromptLocalizer
from ..localization.matching import (
    AGGREGATIONS,
    ATTENTION_SIMILARITIES,
    global_scores,
    localized_scores,
    symmetric_contrastive_loss,
)
from ..text.frozen_features import reference_reports, word_statistics

LOSS_NAMES = ("loss_afloc_word", "loss_afloc_sentence", "loss_afloc_report")

# cfg.MODEL.AFLOC.IMAGE_PROJECTION_NORM -> (norm after the 1x1 convs, norm after the linear layer) builders.
PROJECTION_NORMS = {
    "": (lambda dim: nn.Identity(), lambda dim: nn.Identity()),
    "BN": (nn.BatchNorm2d, nn.BatchNorm1d),
}


@META_ARCH_REGISTRY.register()
class AFLoc(PromptLocalizer):
    """Image-report alignment at word, sentence and report level; localizes findings from text prompts."""

    @configurable
    def __init__(self, *, word_feature: str = "res3", sentence_feature: str = "res4", global_feature: str = "res5",
                 embed_dim: int = 256, tau1: float = 4.0, tau2: float = 5.0, tau3: float = 10.0,
                 loss_weights: Sequence[float] = (1.0, 1.0, 1.0),
                 report_granularities: Sequence[str] = ("elaborate", "unelaborate"),
                 image_projection_norm: str = "", unit_aggregation: str = "sum", attention: str = "dot", **kwargs):
        """
        Args:
            word_feature, sentence_feature, global_feature: backbone outputs aligned with words, sentences
                and the report.
            embed_dim: width of the joint space.
            tau1, tau2, tau3: GLoRIA's temperatures (attention sharpening, unit aggregation, logits).
            loss_weights: weights of the word, sentence and report losses.
            report_granularities: description granularities reports are composed from.
            image_projection_norm: norm after the image projections, a key of PROJECTION_NORMS.
            unit_aggregation: "sum" (GLoRIA) or "mean", how localized matching aggregates a text's units.
            attention: "dot" (GLoRIA), "scaled_dot" or "cosine": the region-unit similarity inside localized
                matching (see modeling/localization/matching.py).
            kwargs: as PromptLocalizer.
        """
        super().__init__(**kwargs)
        shapes = self.backbone.output_shape()
        taps = {"word": word_feature, "sentence": sentence_feature, "global": global_feature}
        missing = {level: name for level, name in taps.items() if name not in shapes}
        if missing:
            raise ValueError(f"AFLoc reads backbone outputs {missing}, but the backbone gives {sorted(shapes)}; "
                             "set MODEL.RESNETS.OUT_FEATURES (and MODEL.BACKBONE.NAME 'build_resnet_backbone')")
        if len(loss_weights) != 3:
            raise ValueError(f"MODEL.AFLOC.LOSS_WEIGHTS needs 3 weights (word, sentence, report), got {list(loss_weights)}")
        check_granularity_list(report_granularities, "MODEL.PROMPTS.TRAIN_GRANULARITIES")
        if image_projection_norm not in PROJECTION_NORMS:
            raise ValueError(f"MODEL.AFLOC.IMAGE_PROJECTION_NORM must be one of {sorted(PROJECTION_NORMS)}, "
                             f"got {image_projection_norm!r}")
        if unit_aggregation not in AGGREGATIONS:
            raise ValueError(f"MODEL.AFLOC.UNIT_AGGREGATION must be one of {list(AGGREGATIONS)}, got {unit_aggregation!r}")
        if attention not in ATTENTION_SIMILARITIES:
            raise ValueError(f"MODEL.AFLOC.ATTENTION must be one of {list(ATTENTION_SIMILARITIES)}, got {attention!r}")
        self.unit_aggregation = unit_aggregation
        self.attention = attention
        map_norm, vector_norm = PROJECTION_NORMS[image_projection_norm]
        self.taps = taps
        self.tau1, self.tau2, self.tau3 = float(tau1), float(tau2), float(tau3)
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.report_granularities = list(report_granularities)
        self.word_projection = nn.Sequential(
            nn.Conv2d(shapes[word_feature].channels, embed_dim, kernel_size=1), map_norm(embed_dim))
        self.sentence_projection = nn.Sequential(
            nn.Conv2d(shapes[sentence_feature].channels, embed_dim, kernel_size=1), map_norm(embed_dim))
        self.global_projection = nn.Sequential(
            nn.Linear(shapes[global_feature].channels, embed_dim), vector_norm(embed_dim))
        self.text_projection = nn.Linear(self.text.token_dim, embed_dim)
        mean, std = word_statistics(self.text, reference_reports())
        self.register_buffer("text_mean", mean)
        self.register_buffer("text_std", std)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        section = cfg.MODEL.AFLOC
        return {
            **cls.base_config(cfg),
            "word_feature": section.WORD_FEATURE,
            "sentence_feature": section.SENTENCE_FEATURE,
            "global_feature": section.GLOBAL_FEATURE,
            "embed_dim": section.EMBED_DIM,
            "tau1": section.TAU1,
            "tau2": section.TAU2,
            "tau3": section.TAU3,
            "loss_weights": list(section.LOSS_WEIGHTS),
            "report_granularities": list(cfg.MODEL.PROMPTS.TRAIN_GRANULARITIES),
            "image_projection_norm": section.IMAGE_PROJECTION_NORM,
            "unit_aggregation": section.UNIT_AGGREGATION,
            "attention": section.ATTENTION,
        }

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        """Frozen text features (any level) standardised with the fixed word statistics, then projected."""
        return self.text_projection((features - self.text_mean) / self.text_std)

    def training_report(self, record: dict) -> Tuple[str, tuple]:
        """(report, key) of one input: its "report", else one composed from its findings at a random
        granularity. Images with equal keys count as matching pairs in the contrastive losses."""
        if "report" in record:
            return record["report"], ("report", record["report"])
        labels = image_labels(record, len(self.training_class_names))
        names = [self.training_class_names[label] for label in labels]
        return compose_report(names, self.rng.choice(self.report_granularities)), ("findings", tuple(labels))

    def losses(self, images, features: Dict[str, torch.Tensor], batched_inputs: List[dict]) -> Dict[str, torch.Tensor]:
        """The three contrastive losses over the batch's image-report pairs (needs >= 2 images)."""
        if len(batched_inputs) < 2:
            raise ValueError("AFLoc's contrastive losses need at least 2 images per batch (SOLVER.IMS_PER_BATCH)")
        reports, keys = zip(*(self.training_report(record) for record in batched_inputs))
        positives = positives_by_key(keys).to(self.device)
        text = self.text.levels(reports).to(self.device)
        words, sentences, report = (self.project_text(level) for level in (text.words, text.sentences, text.report))
        word_map = self.word_projection(features[self.taps["word"]])
        sentence_map = self.sentence_projection(features[self.taps["sentence"]])
        image_vector = self.global_projection(features[self.taps["global"]].mean(dim=(2, 3)))
        logits = (
            localized_scores(word_map, words, text.word_mask, self.tau1, self.tau2, self.unit_aggregation,
                             self.attention),
            localized_scores(sentence_map, sentences, text.sentence_mask, self.tau1, self.tau2,
                             self.unit_aggregation, self.attention),
            global_scores(image_vector, report),
        )
        return {
            name: weight * symmetric_contrastive_loss(self.tau3 * level_logits, positives)
            for name, weight, level_logits in zip(LOSS_NAMES, self.loss_weights, logits)
        }

    def grid_maps(self, features: Dict[str, torch.Tensor], texts: Sequence[str]) -> torch.Tensor:
        """[B, P, h, w]: each text's projected report vector dotted with the projected deep (sentence) map."""
        vectors = self.project_text(self.text.levels(texts).report.to(self.device))
        sentence_map = self.sentence_projection(features[self.taps["sentence"]])
        return torch.einsum("pd,bdhw->bphw", vectors, sentence_map)
