"""Localization accuracy by IoBB, the protocol of Wang et al. 2017 (ChestX-ray8, Table 4), for heat maps.

A heat map of a finding becomes boxes: the bounding boxes of the connected components of the map, min-max
normalised to [-1, 1], above `map_threshold` (Wang et al. threshold the [0, 255]-scaled map at 180, i.e.
0.41 here). IoBB of a ground-truth box and a predicted box is their intersection over the *predicted* box's
area. A ground-truth box is localized at threshold T when some predicted box of its finding has IoBB > T;
the accuracy of a finding at T is the share of its ground-truth boxes localized, over every (image, finding)
pair that has boxes. Wang et al. report T in {0.1, 0.25, 0.5, 0.75, 0.9}.
"""
from collections import defaultdict
from typing import Dict, List, Sequence

import numpy as np

from ..modeling.postprocessing import heatmap_to_boxes

WANG_IOBB_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
WANG_MAP_THRESHOLD = 2 * 180 / 255 - 1  # their 180 of 255, on our [-1, 1] normalised maps


def iobb(gt_boxes: np.ndarray, pred_boxes: np.ndarray) -> np.ndarray:
    """[G, P] intersection of each ground-truth box with each predicted box over the predicted box's area (xyxy)."""
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(gt[:, None, 2], pred[None, :, 2]) - np.maximum(gt[:, None, 0], pred[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(gt[:, None, 3], pred[None, :, 3]) - np.maximum(gt[:, None, 1], pred[None, :, 1]), 0, None)
    area = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    return np.where(area[None, :] > 0, ix * iy / np.maximum(area[None, :], 1e-12), 0.0)


class IoBBAccumulator:
    """Per finding, which ground-truth boxes a heat map localizes at each IoBB threshold."""

    def __init__(self, thresholds: Sequence[float] = WANG_IOBB_THRESHOLDS, map_threshold: float = WANG_MAP_THRESHOLD):
        if not thresholds or not all(0.0 <= t < 1.0 for t in thresholds):
            raise ValueError(f"TEST.LOCALIZATION.IOBB_THRESHOLDS must be values in [0, 1), got {list(thresholds)}")
        if not -1.0 <= map_threshold < 1.0:
            raise ValueError(f"TEST.LOCALIZATION.IOBB_MAP_THRESHOLD must lie in [-1, 1), got {map_threshold}")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.map_threshold = float(map_threshold)
        self._best: Dict[str, List[float]] = defaultdict(list)  # finding -> best IoBB of each ground-truth box

    def add(self, finding: str, heatmap, gt_boxes: np.ndarray) -> np.ndarray:
        """Score the ground-truth boxes of one (image, finding) pair; returns each box's best IoBB."""
        predicted, _ = heatmap_to_boxes(heatmap, threshold=self.map_threshold)
        best = iobb(gt_boxes, predicted).max(axis=1) if len(predicted) else np.zeros(len(np.reshape(gt_boxes, (-1, 4))))
        self._best[finding].extend(best.tolist())
        return best

    def merge(self, best_by_finding: Dict[str, List[float]]) -> None:
        """Add another accumulator's `best_by_finding()` (distributed evaluation)."""
        for finding, values in best_by_finding.items():
            self._best[finding].extend(values)

    def best_by_finding(self) -> Dict[str, List[float]]:
        return {finding: list(values) for finding, values in self._best.items()}

    def summarize(self) -> Dict[str, float]:
        """{"IoBB_acc@T-<finding>": share localized, "IoBB_acc@T": mean over findings, "num_boxes-IoBB-<finding>"}."""
        out: Dict[str, float] = {}
        for finding in sorted(self._best):
            values = np.asarray(self._best[finding])
            out[f"num_boxes-IoBB-{finding}"] = float(len(values))
            for t in self.thresholds:
                out[f"IoBB_acc@{t:g}-{finding}"] = float(np.mean(values > t))
        for t in self.thresholds:
            per_finding = [out[f"IoBB_acc@{t:g}-{f}"] for f in self._best]
            if per_finding:
                out[f"IoBB_acc@{t:g}"] = float(np.mean(per_finding))
        return out
