"""The weak-label regime: keep boxes on a seeded fraction of the training images, image-level labels elsewhere.

`split_box_supervision` turns the dicts of any detection dataset into a partially box-annotated one:
of the images with at least one finding, exactly round(fraction x count) keep their boxes (a seeded
permutation's first ones, so for one seed a smaller fraction's boxed images are a subset of a larger
one's); the others lose their boxes but keep "image_labels", "caption" and "captions", and are marked
"box_supervised": False. Images without findings keep "box_supervised" True: their empty annotation is
complete. Images a loader already marked image-level-only (every box skipped, findings kept) stay so.
Models that train on image-level-only images (CXR-CoDet) skip them in the RPN and box losses;
detectors that cannot (plain Faster R-CNN) get them dropped (DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY).
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..config import run_seed
from .concept_groups import image_labels

logger = logging.getLogger(__name__)

BOX_SUPERVISED = "box_supervised"  # a record's (and mapped input's) flag: False on image-level-only images


def is_box_supervised(record: dict) -> bool:
    """False only for images marked image-level-only (see the module doc); without the key, True."""
    return bool(record.get(BOX_SUPERVISED, True))


@dataclass
class BoxSupervisionSummary:
    """What a split did: image counts, boxes removed, and findings left without any boxed image."""

    boxed_with_findings: int = 0
    no_finding: int = 0
    image_level_only: int = 0
    boxes_removed: int = 0
    dropped: int = 0
    findings_without_boxes: List[int] = field(default_factory=list)

    def describe(self, fraction: float, seed: int) -> str:
        text = (
            f"DATASETS.TRAIN_BOX_FRACTION = {fraction} (seed {seed}): {self.boxed_with_findings} images with "
            f"findings keep their boxes, {self.image_level_only} become image-level-only "
            f"({self.boxes_removed} boxes removed; findings and captions kept), {self.no_finding} No-finding "
            "images stay as they are"
        )
        if self.dropped:
            text += f"; {self.dropped} image-level-only images dropped (DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY)"
        return text


def _check_fraction(fraction: float) -> float:
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"DATASETS.TRAIN_BOX_FRACTION = {fraction} must lie in [0, 1]")
    return fraction


def boxed_positions(dataset_dicts: Sequence[dict], fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """(positions of images with findings that keep boxes, positions that become image-level-only)."""
    fraction = _check_fraction(fraction)
    # images a loader already left without boxes (findings kept, "box_supervised" False) have none to keep
    with_findings, already = [], []
    for i, record in enumerate(dataset_dicts):
        if image_labels(record):
            (with_findings if is_box_supervised(record) else already).append(i)
    num_boxed = int(np.floor(fraction * len(with_findings) + 0.5))
    order = np.random.default_rng([int(seed), 0xB0C5]).permutation(len(with_findings))
    boxed = sorted(with_findings[i] for i in order[:num_boxed])
    image_level = sorted([with_findings[i] for i in order[num_boxed:]] + already)
    return boxed, image_level


def split_box_supervision(
    dataset_dicts: Sequence[dict], fraction: float, seed: int, drop_image_level_only: bool = False
) -> Tuple[List[dict], BoxSupervisionSummary]:
    """New dicts (inputs untouched) with boxes on `fraction` of the images with findings; see the module doc.

    With `drop_image_level_only` the image-level-only images are left out instead of kept.
    """
    boxed, image_level = boxed_positions(dataset_dicts, fraction, seed)
    image_level = set(image_level)
    summary = BoxSupervisionSummary(boxed_with_findings=len(boxed), image_level_only=len(image_level))
    out: List[dict] = []
    with_boxes: Dict[int, int] = {}
    for position, record in enumerate(dataset_dicts):
        concepts = image_labels(record)
        record = dict(record, image_labels=concepts)
        if not concepts:
            summary.no_finding += 1
        if position in image_level:
            summary.boxes_removed += len(record.get("annotations", []))
            if drop_image_level_only:
                summary.dropped += 1
                continue
            record.update(annotations=[], **{BOX_SUPERVISED: False})
        else:
            record[BOX_SUPERVISED] = True
            for concept in concepts:
                with_boxes[concept] = with_boxes.get(concept, 0) + 1
        out.append(record)
    present = {c for record in dataset_dicts for c in image_labels(record)}
    summary.findings_without_boxes = sorted(present - set(with_boxes))
    return out, summary


def apply_box_fraction(cfg, dataset_dicts: Sequence[dict]) -> List[dict]:
    """The training dicts under cfg.DATASETS.TRAIN_BOX_FRACTION / TRAIN_BOX_SEED / TRAIN_DROP_IMAGE_LEVEL_ONLY.

    Fraction 1 returns the dicts unchanged. Logs the counts; raises ValueError when nothing is left.
    """
    fraction = _check_fraction(cfg.DATASETS.TRAIN_BOX_FRACTION)
    if fraction == 1.0:
        return list(dataset_dicts)
    seed = cfg.DATASETS.TRAIN_BOX_SEED
    if seed < 0:
        seed = run_seed(cfg)
    drop = cfg.DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY
    records, summary = split_box_supervision(dataset_dicts, fraction, seed, drop)
    logger.info(summary.describe(fraction, seed))
    if summary.findings_without_boxes:
        logger.warning(
            "%d finding(s) have no box-annotated training image (class ids %s): they can be learnt only "
            "from image-level labels", len(summary.findings_without_boxes), summary.findings_without_boxes,
        )
    if not records:
        raise ValueError(
            f"no training image is left: DATASETS.TRAIN_BOX_FRACTION = {fraction} keeps no box and "
            "DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY drops every image-level-only image"
        )
    return records
