"""Chest X-ray detection metrics beside COCO AP, in pure numpy: VOC-style AP at one IoU (the VinBigData
challenge's mAP@0.4) and FROC (sensitivity at fixed false positives per image, and their mean, the CPM).

Inputs are flat arrays: ground truth `(image_ids, boxes, labels)` and detections `(image_ids, boxes,
labels, scores)`, boxes as (x0, y0, x1, y1) in the same pixel frame. Results are fractions in [0, 1];
the evaluator reports them in percent like COCO AP.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # CAMELYON16/LUNA16 operating points
HIT_CRITERIA = ("iou", "center")


@dataclass(frozen=True)
class BoxSet:
    """Boxes of many images: image_ids (N,), boxes (N, 4) x0 y0 x1 y1, labels (N,), scores (N,) or None."""

    image_ids: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: Optional[np.ndarray] = None

    @classmethod
    def build(cls, image_ids, boxes, labels, scores=None):
        """Checked arrays: one row per box, boxes reshaped to (N, 4), scores required to match."""
        image_ids = np.asarray(image_ids).reshape(-1)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels).reshape(-1)
        n = len(image_ids)
        if len(boxes) != n or len(labels) != n:
            raise ValueError(f"BoxSet: {n} image ids, {len(boxes)} boxes and {len(labels)} labels must match")
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            if len(scores) != n:
                raise ValueError(f"BoxSet: {len(scores)} scores for {n} boxes")
        return cls(image_ids, boxes, labels, scores)

    def select(self, mask):
        return BoxSet(self.image_ids[mask], self.boxes[mask], self.labels[mask],
                      None if self.scores is None else self.scores[mask])


def box_iou(a, b):
    """(N, M) intersection over union of x0 y0 x1 y1 boxes: |A and B| / (|A| + |B| - |A and B|)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def center_inside(dets, gts):
    """(N, M) whether detection n's box centre lies inside (borders included) ground-truth box m."""
    dets, gts = np.asarray(dets, dtype=np.float64).reshape(-1, 4), np.asarray(gts, dtype=np.float64).reshape(-1, 4)
    cx, cy = (dets[:, 0] + dets[:, 2]) / 2, (dets[:, 1] + dets[:, 3]) / 2
    return ((cx[:, None] >= gts[None, :, 0]) & (cx[:, None] <= gts[None, :, 2])
            & (cy[:, None] >= gts[None, :, 1]) & (cy[:, None] <= gts[None, :, 3]))


def all_point_average_precision(recall, precision):
    """VOC 2010+ AP: the area under the precision envelope p_env(r) = max_{r' >= r} p(r'),
    AP = sum_i (r_i - r_{i-1}) p_env(r_i) over the recall steps (not VOC 2007's 11-point mean)."""
    r = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    p = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _by_score(dets):
    """Detection order by descending score; ties keep input order (stable), as the VOC devkit's sort."""
    return np.argsort(-dets.scores, kind="mergesort")


def voc_average_precision(dets: BoxSet, gts: BoxSet, label, iou_threshold=0.4) -> Optional[float]:
    """VOC AP of one class: detections in descending score each take the ground-truth box (same image,
    same class) of highest IoU; a TP if that IoU >= `iou_threshold` and the box is not yet taken, else an FP
    (VOC's rule: a duplicate is an FP even when another box overlaps enough). Precision = TP / (TP + FP),
    recall = TP / #GT after each detection; AP = `all_point_average_precision`. None without ground truth."""
    gts, dets = gts.select(gts.labels == label), dets.select(dets.labels == label)
    if len(gts.labels) == 0:
        return None
    gt_by_image = {}
    for index, image_id in enumerate(gts.image_ids.tolist()):
        gt_by_image.setdefault(image_id, []).append(index)
    taken = np.zeros(len(gts.labels), dtype=bool)
    order = _by_score(dets)
    tp = np.zeros(len(order))
    for rank, d in enumerate(order):
        candidates = gt_by_image.get(dets.image_ids[d].item(), [])
        if not candidates:
            continue
        ious = box_iou(dets.boxes[d], gts.boxes[candidates])[0]
        best = int(np.argmax(ious))
        if ious[best] >= iou_threshold and not taken[candidates[best]]:
            taken[candidates[best]] = True
            tp[rank] = 1
    tp_cum = np.cumsum(tp)
    recall = tp_cum / len(gts.labels)
    precision = tp_cum / np.arange(1, len(order) + 1)
    return all_point_average_precision(recall, precision)


def mean_voc_average_precision(dets: BoxSet, gts: BoxSet, labels: Sequence, iou_threshold=0.4):
    """(mean over the classes with ground truth, {label: AP or None}): the VinBigData challenge's mAP at
    IoU 0.4 ("PASCAL VOC 2010 mAP at IoU > 0.4", i.e. all-point AP) when `iou_threshold` is 0.4."""
    per_class = {label: voc_average_precision(dets, gts, label, iou_threshold) for label in labels}
    values = [ap for ap in per_class.values() if ap is not None]
    return (float(np.mean(values)) if values else None), per_class


@dataclass(frozen=True)
class FROCResult:
    """An FROC curve (false positives per image, sensitivity; both non-decreasing, from (0, 0)), the
    sensitivity at each of `fp_rates`, and their mean, the competition performance metric (CPM)."""

    fp_per_image: np.ndarray
    sensitivity: np.ndarray
    fp_rates: tuple
    sensitivity_at: tuple
    cpm: float


def _group(ids):
    """{id: indices of `ids` equal to it}, in one sort instead of one scan per id."""
    order = np.argsort(ids, kind="mergesort")
    unique, starts = np.unique(ids[order], return_index=True)
    return dict(zip(unique.tolist(), np.split(order, starts[1:])))


def _first_hits(dets: BoxSet, gts: BoxSet, hit, iou_threshold):
    """For detections in rank order: per GT box the rank of the first detection hitting it (len(dets)
    when none does), and per detection whether it hits no GT. A hit needs the same image and class and
    IoU >= threshold (`hit` "iou") or the detection's centre inside the GT box (`hit` "center")."""
    if hit not in HIT_CRITERIA:
        raise ValueError(f"FROC hit criterion (TEST.FROC.HIT_CRITERION) must be one of {HIT_CRITERIA}, "
                         f"got {hit!r}")
    first_hit = np.full(len(gts.labels), len(dets.labels))
    false_positive = np.ones(len(dets.labels), dtype=bool)
    dets_of = _group(dets.image_ids)
    for image_id, g in _group(gts.image_ids).items():
        d = dets_of.get(image_id)
        if d is None:
            continue
        geometric = (box_iou(dets.boxes[d], gts.boxes[g]) >= iou_threshold if hit == "iou"
                     else center_inside(dets.boxes[d], gts.boxes[g]))
        hits = geometric & (dets.labels[d][:, None] == gts.labels[g][None, :])
        false_positive[d] = ~hits.any(axis=1)
        first_hit[g] = np.where(hits, d[:, None], len(dets.labels)).min(axis=0)
    return first_hit, false_positive


def froc(dets: BoxSet, gts: BoxSet, num_images, hit="iou", iou_threshold=0.4,
         fp_rates=FROC_FP_RATES) -> Optional[FROCResult]:
    """FROC over all given boxes (select one class first for a per-finding curve). Lowering the score
    threshold t through the detections' scores: sensitivity(t) = #GT hit by a detection scoring >= t / #GT,
    FPPI(t) = #detections scoring >= t that hit no GT / `num_images`. A detection hitting a GT box is never
    an FP, also when the box was already hit (duplicates on a found lesion are ignored, as in LUNA16 and
    CAMELYON16). Sensitivity at rate f = the highest sensitivity reached with FPPI <= f (no interpolation);
    CPM = mean over `fp_rates`. None without ground truth."""
    if num_images <= 0:
        raise ValueError(f"FROC needs a positive number of images, got {num_images}")
    if len(gts.labels) == 0:
        return None
    order = _by_score(dets)
    dets = dets.select(order)
    first_hit, false_positive = _first_hits(dets, gts, hit, iou_threshold)
    # Evaluate only at the last detection of each group of equal scores (one threshold per group).
    last_of_group = np.nonzero(np.append(dets.scores[1:] != dets.scores[:-1], True))[0][: len(order)]
    fp_count = np.cumsum(false_positive)
    found = np.cumsum(np.bincount(first_hit, minlength=len(order) + 1)[: len(order)])
    fppi = np.concatenate(([0.0], fp_count[last_of_group] / num_images))
    sensitivity = np.concatenate(([0.0], found[last_of_group] / len(gts.labels)))
    sens_at = tuple(float(sensitivity[fppi <= f].max()) for f in fp_rates)
    return FROCResult(fppi, sensitivity, tuple(fp_rates), sens_at, float(np.mean(sens_at)))


def froc_by_class(dets: BoxSet, gts: BoxSet, labels, num_images, **kwargs) -> Dict:
    """{label: FROCResult or None} on each class's detections and ground truth, and under key None the
    overall curve: every class's boxes pooled (hits still need the same class)."""
    results = {label: froc(dets.select(dets.labels == label), gts.select(gts.labels == label), num_images, **kwargs)
               for label in labels}
    results[None] = froc(dets, gts, num_images, **kwargs)
    return results
