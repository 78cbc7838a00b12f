"""Localization metrics for heat maps against ground-truth boxes, each definition in its docstring.

Conventions shared by every function here:
- A heat map is a 2-D float array (numpy, or anything `np.asarray` accepts; torch tensors are detached and
  moved to the CPU). Non-finite entries (NaN borders, padding) are *invalid* pixels: they are excluded from
  normalisation, from both sides of every metric, and are never predicted.
- Boxes are float `xyxy` in the heat map's pixel coordinates; pixel (row r, column c) covers
  [c, c+1) x [r, r+1) and belongs to a box when its centre (c + 0.5, r + 0.5) satisfies
  x0 <= c + 0.5 < x1 and y0 <= r + 0.5 < y1. The ground truth of a phrase is the binary *union* of its
  boxes (overlaps count once).
- A sample whose ground truth has no valid pixel cannot be scored: every per-sample metric returns NaN and
  `LocalizationAccumulator` counts and reports such samples instead of dropping them silently.
"""
import logging
import math
from collections import defaultdict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..modeling.postprocessing.heatmap_boxes import as_map, normalize_map

__all__ = [
    "DEFAULT_THRESHOLDS",
    "boxes_to_mask",
    "threshold_ious",
    "mean_threshold_iou",
    "cnr",
    "two_class_miou",
    "pointing_game",
    "macro_average",
    "bootstrap_ci",
    "LocalizationAccumulator",
]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)



def _as_mask(mask, shape: Tuple[int, int], name: str) -> np.ndarray:
    """`mask` as a boolean array of `shape`, with a clear error when the shapes differ."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask).astype(bool)
    if array.shape != tuple(shape):
        raise ValueError(f"{name} has shape {array.shape}, expected {tuple(shape)} (the heat map's shape)")
    return array


def boxes_to_mask(boxes, shape: Tuple[int, int]) -> np.ndarray:
    """Binary union of `boxes` (N x 4 float xyxy, clipped to the image) as an H x W boolean mask.

    A pixel is inside a box when its centre is (x0 <= c + 0.5 < x1, y0 <= r + 0.5 < y1), so integer boxes
    cover exactly columns x0..x1-1 and rows y0..y1-1, and a box smaller than a pixel may cover none.
    Overlapping boxes count once (a union, not a sum). Raises ValueError for a box with x1 < x0 or y1 < y0.
    """
    height, width = int(shape[0]), int(shape[1])
    mask = np.zeros((height, width), dtype=bool)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        if not (x1 >= x0 and y1 >= y0):
            raise ValueError(f"box {index} = {[x0, y0, x1, y1]} is not xyxy with x1 >= x0 and y1 >= y0")
        col0, col1 = (int(np.clip(math.ceil(v - 0.5), 0, width)) for v in (x0, x1))
        row0, row1 = (int(np.clip(math.ceil(v - 0.5), 0, height)) for v in (y0, y1))
        mask[row0:row1, col0:col1] = True
    return mask


def _valid_ground_truth(heatmap: np.ndarray, gt_mask) -> Tuple[np.ndarray, np.ndarray]:
    """Validity mask of the heat map and the ground truth restricted to valid pixels."""
    valid = np.isfinite(heatmap)
    return valid, _as_mask(gt_mask, heatmap.shape, "gt_mask") & valid


def _binary_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """|pred & gt| / |pred | gt|, NaN when both are empty."""
    union = np.count_nonzero(pred | gt)
    return float(np.count_nonzero(pred & gt) / union) if union else math.nan


def threshold_ious(heatmap, gt_mask, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Foreground IoU of the thresholded map with the ground-truth union, one value per threshold.

    The map is normalised to [-1, 1] over its valid pixels (`normalize_map`), the predicted mask at
    threshold t is `normalized > t`, and IoU = |pred & gt| / |pred | gt| over valid pixels only.
    Returns NaN for every threshold when the ground truth has no valid pixel.
    """
    array = as_map(heatmap)
    valid, gt = _valid_ground_truth(array, gt_mask)
    if not gt.any():
        return np.full(len(thresholds), np.nan)
    normalized = np.where(valid, normalize_map(array), -np.inf)
    return np.array([_binary_iou(normalized > t, gt) for t in thresholds])


def mean_threshold_iou(heatmap, gt_mask, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> float:
    """Mean over `thresholds` of `threshold_ious` (AFLoc's per-sample IoU); NaN when unscorable."""
    return float(np.mean(threshold_ious(heatmap, gt_mask, thresholds)))


def cnr(heatmap, gt_mask) -> float:
    """Contrast-to-noise ratio CNR = (mean_in - mean_out) / sqrt(var_in + var_out) over valid pixels.

    "in" is the ground-truth union, "out" every other valid pixel; NaN pixels are excluded from both.
    Conventions: the sign is kept (a map brighter outside the boxes scores negative) and variances are
    population variances (ddof = 0). CNR is invariant to positive affine rescaling of the map.
    Degenerate cases: NaN when either region has no valid pixel; 0.0 when mean_in == mean_out (no
    contrast, e.g. a constant map); NaN when both variances are 0 but the means differ (a binary map,
    for which CNR is undefined).
    """
    array = as_map(heatmap)
    valid, inside = _valid_ground_truth(array, gt_mask)
    outside = valid & ~inside
    if not inside.any() or not outside.any():
        return math.nan
    values_in, values_out = array[inside], array[outside]
    contrast = values_in.mean() - values_out.mean()
    if contrast == 0:
        return 0.0
    noise = math.sqrt(values_in.var() + values_out.var())
    return float(contrast / noise) if noise > 0 else math.nan


def two_class_miou(pred_mask, gt_mask, valid=None) -> float:
    """Two-class mIoU: the mean of foreground IoU and background IoU of one binary mask.

    This is Generate to Ground's "mIoU", not AFLoc's (foreground IoU averaged over thresholds, see
    `mean_threshold_iou`). Computed over `valid` pixels (all when None); a class absent from both the
    prediction and the ground truth is left out of the mean (so two empty masks score 1.0).
    """
    pred = np.asarray(pred_mask.detach().cpu().numpy() if hasattr(pred_mask, "detach") else pred_mask)
    if pred.ndim != 2:
        raise ValueError(f"pred_mask must be a 2-D mask (H, W); got shape {pred.shape}")
    pred = pred.astype(bool)
    gt = _as_mask(gt_mask, pred.shape, "gt_mask")
    keep = np.ones(pred.shape, bool) if valid is None else _as_mask(valid, pred.shape, "valid")
    pred, gt = pred[keep], gt[keep]
    return float(np.nanmean([_binary_iou(pred, gt), _binary_iou(~pred, ~gt)]))


def pointing_game(heatmap, gt_mask) -> float:
    """Pointing game hit (1.0) or miss (0.0): is the map's maximum inside the ground-truth union?

    The maximum is taken over valid (finite) pixels. With ties, every maximal pixel must lie inside the
    union, so a flat map never scores a hit. NaN when the ground truth has no valid pixel.
    """
    array = as_map(heatmap)
    valid, gt = _valid_ground_truth(array, gt_mask)
    if not gt.any():
        return math.nan
    maxima = valid & (array == array[valid].max())
    return float(np.all(gt[maxima]))


def _finite(values: Sequence[float]) -> np.ndarray:
    """`values` as a float array without NaN or infinite entries."""
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def macro_average(values_by_finding: Mapping[str, Sequence[float]]) -> Tuple[Dict[str, float], float]:
    """Mean per finding (non-finite values ignored), then the mean of those means over findings.

    Returns (per-finding means, overall mean); a finding without finite values gets NaN and is left out
    of the overall mean, which is NaN when no finding has a value.
    """
    per_finding = {
        finding: float(np.mean(values)) if len(values) else math.nan
        for finding, values in ((f, _finite(v)) for f, v in values_by_finding.items())
    }
    finite_means = _finite(list(per_finding.values()))
    return per_finding, float(np.mean(finite_means)) if len(finite_means) else math.nan


def _percentile_interval(replicates: np.ndarray, confidence: float) -> Tuple[float, float]:
    """Central `confidence` percentile interval of bootstrap replicates."""
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)


def _macro_bootstrap(values_by_finding: Mapping[str, Sequence[float]], n_bootstrap: int, confidence: float,
                     seed) -> Tuple[Tuple[float, float], Dict[str, Tuple[float, float]]]:
    """Percentile CIs of the macro average and of each finding's mean, from stratified resampling.

    Each finding's finite values are resampled with replacement `n_bootstrap` times; a replicate of the
    macro average is the mean of the findings' resampled means. (NaN, NaN) where nothing is finite.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    rng = np.random.default_rng(seed)
    replicates = {}
    for finding, values in values_by_finding.items():
        values = _finite(values)
        if len(values):
            indices = rng.integers(0, len(values), size=(n_bootstrap, len(values)))
            replicates[finding] = values[indices].mean(axis=1)
    per_finding = {finding: _percentile_interval(means, confidence) for finding, means in replicates.items()}
    overall = (_percentile_interval(np.mean(list(replicates.values()), axis=0), confidence)
               if replicates else (math.nan, math.nan))
    return overall, per_finding


def bootstrap_ci(values, n_bootstrap: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap confidence interval of a mean, seeded (same seed, same interval).

    `values` is either a sequence (CI of its mean) or a mapping finding -> sequence (CI of the macro
    average: each finding is resampled separately, then the resampled means are averaged over findings).
    Non-finite values are ignored; (NaN, NaN) when nothing is left.
    """
    grouped = values if isinstance(values, Mapping) else {"all": values}
    return _macro_bootstrap(grouped, n_bootstrap, confidence, seed)[0]


class LocalizationAccumulator:
    """Collects per-sample localization metrics keyed by finding and summarises them with bootstrap CIs.

    Per sample: mean IoU over thresholds ("IoU"), IoU per threshold ("IoU@t"), "CNR", two-class mIoU
    ("mIoU_2class": of `mask_fn(heatmap)` when given, else the mean over thresholds of the two-class mIoU
    of `normalized > t`) and the pointing game ("PointingGame"). Summaries average per finding, then
    over findings (macro averages; for IoU the same as AFLoc's per threshold, per finding, then over
    thresholds, since every scored sample has every threshold); CIs come from stratified bootstrap.
    """

    def __init__(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 mask_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                 n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0):
        if not len(thresholds):
            raise ValueError("thresholds must not be empty")
        if not 0.0 < confidence < 1.0 or n_bootstrap < 1:
            raise ValueError(f"need 0 < confidence < 1 and n_bootstrap >= 1; got {confidence}, {n_bootstrap}")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.mask_fn = mask_fn
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        """Forget every collected sample."""
        self._values: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
        self._skipped: Dict[str, int] = defaultdict(int)

    def __len__(self) -> int:
        """Number of scored (not skipped) samples."""
        return sum(len(metrics["IoU"]) for metrics in self._values.values())

    @property
    def metric_names(self) -> List[str]:
        """Names of the per-sample metrics, in report order."""
        return ["IoU", "CNR", "mIoU_2class", "PointingGame"] + [f"IoU@{t:g}" for t in self.thresholds]

    def _two_class_miou(self, heatmap: np.ndarray, gt: np.ndarray) -> float:
        """Two-class mIoU of `mask_fn(heatmap)`, or its mean over the thresholded normalised maps."""
        valid = np.isfinite(heatmap)
        if self.mask_fn is not None:
            return two_class_miou(self.mask_fn(heatmap), gt, valid)
        normalized = np.where(valid, normalize_map(heatmap), -np.inf)
        return float(np.mean([two_class_miou(normalized > t, gt, valid) for t in self.thresholds]))

    def add(self, finding: str, heatmap, boxes=None, gt_mask=None) -> Dict[str, float]:
        """Score one (image, phrase) sample against `boxes` (xyxy, map pixels) or a `gt_mask`.

        Returns the sample's metrics. Exactly one of `boxes` and `gt_mask` must be given. A sample whose
        ground truth covers no valid pixel is counted as skipped for `finding` and returns an empty dict.
        """
        if (boxes is None) == (gt_mask is None):
            raise ValueError("give exactly one of `boxes` and `gt_mask`")
        array = as_map(heatmap)
        if gt_mask is None:
            gt = boxes_to_mask(boxes, array.shape)
        else:
            gt = _as_mask(gt_mask, array.shape, "gt_mask")
        if not (gt & np.isfinite(array)).any():
            self._skipped[finding] += 1
            return {}
        ious = threshold_ious(array, gt, self.thresholds)
        metrics = {
            "IoU": float(ious.mean()),
            "CNR": cnr(array, gt),
            "mIoU_2class": self._two_class_miou(array, gt),
            "PointingGame": pointing_game(array, gt),
            **{f"IoU@{t:g}": float(v) for t, v in zip(self.thresholds, ious)},
        }
        for name, value in metrics.items():
            self._values[finding][name].append(value)
        return metrics

    def _counts(self) -> Dict[str, float]:
        """Scored and skipped sample counts, overall and per finding."""
        counts = {"num_samples": float(len(self)), "num_skipped": float(sum(self._skipped.values()))}
        for finding in sorted(set(self._values) | set(self._skipped)):
            scored = self._values[finding]["IoU"] if finding in self._values else []
            counts[f"num_samples-{finding}"] = float(len(scored))
            counts[f"num_skipped-{finding}"] = float(self._skipped.get(finding, 0))
        return counts

    def _summarize_metric(self, name: str, seed) -> Dict[str, float]:
        """Macro average of one metric, per-finding means, and bootstrap CIs of both."""
        by_finding = {finding: self._values[finding][name] for finding in sorted(self._values)}
        undefined = {f: int(np.sum(~np.isfinite(v))) for f, v in by_finding.items()}
        undefined = {f: n for f, n in undefined.items() if n}
        if undefined:
            logger.warning("Localization: %s undefined (NaN) and left out for %s", name, undefined)
        per_finding, overall = macro_average(by_finding)
        overall_ci, finding_cis = _macro_bootstrap(by_finding, self.n_bootstrap, self.confidence, seed)
        results = {name: overall, f"{name}_ci_low": overall_ci[0], f"{name}_ci_high": overall_ci[1]}
        for finding, value in per_finding.items():
            low, high = finding_cis.get(finding, (math.nan, math.nan))
            results.update({f"{name}-{finding}": value, f"{name}_ci_low-{finding}": low,
                            f"{name}_ci_high-{finding}": high})
        return results

    def summarize(self) -> Dict[str, float]:
        """Flat dict of floats for eval_results.json.

        Keys: "<metric>" (macro average over findings), "<metric>-<finding>", their bounds
        "<metric>_ci_low[-<finding>]" / "<metric>_ci_high[-<finding>]" (level `confidence`), and
        "num_samples[-<finding>]" / "num_skipped[-<finding>]". Non-finite per-sample values (an undefined
        CNR) are left out of that metric only. Skipped samples are logged with their reason.
        """
        if self._skipped:
            logger.warning("Localization: skipped %d sample(s) whose ground truth covers no valid pixel: %s",
                           sum(self._skipped.values()), dict(self._skipped))
        results = self._counts()
        for index, name in enumerate(self.metric_names):
            results.update(self._summarize_metric(name, seed=[self.seed, index]))
        return results
