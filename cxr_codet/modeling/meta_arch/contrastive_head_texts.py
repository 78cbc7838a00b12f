"""Which text the contrastive classifier's MLP head sees beside the image (cfg.MODEL.IMAGE_CLASSIFIER.HEAD_TEXT).

- "none": no text, the image-only variant.
- "retrieved": the reports nearest the image in the joint space: a softmax (at the contrastive
  temperature) over candidate reports, one per training finding plus a normal report, composed at every
  pre-training granularity. It depends on the image alone, so it cannot leak the label.
- "report": the image's own report ("report" field, else composed from its findings, as in
  pre-training). It names the findings, so it leaks the label at test time: this reproduces the paper's
  image+report setting, whose score is an upper bound, not a diagnosis from the image.

Each entry is a function (model, image vectors [B, E] L2-normalised, batched inputs) -> text vectors
[B, E] L2-normalised, or None for no text.
"""
from typing import Callable, Dict, List, Optional

import torch
from torch.nn import functional as F

from ...data.descriptions import compose_report


def _no_text(model, image_vectors: torch.Tensor, batched_inputs: List[dict]) -> Optional[torch.Tensor]:
    return None


def candidate_reports(class_names, granularities) -> List[str]:
    """The retrieval candidates: a normal report and one report per finding, at each granularity."""
    return [compose_report(findings, granularity) for granularity in granularities
            for findings in [[]] + [[name] for name in class_names]]


def _retrieved_text(model, image_vectors: torch.Tensor, batched_inputs: List[dict]) -> torch.Tensor:
    candidates = model.text_vectors(candidate_reports(model.class_names, model.report_granularities))
    weights = (image_vectors @ candidates.t() / model.temperature).softmax(dim=1)
    return F.normalize(weights @ candidates, dim=1)


def _own_report(model, image_vectors: torch.Tensor, batched_inputs: List[dict]) -> torch.Tensor:
    reports = [model.report_of(record, model.report_granularities[0]) for record in batched_inputs]
    return model.text_vectors(reports)


# cfg.MODEL.IMAGE_CLASSIFIER.HEAD_TEXT -> text function (see the module docstring).
HEAD_TEXTS: Dict[str, Callable] = {"none": _no_text, "retrieved": _retrieved_text, "report": _own_report}
