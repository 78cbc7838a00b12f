"""`ClassificationEvaluator`: image-level normal/abnormal and per-finding metrics, the "classification" task.

The model output per image is {"classification": {"labels": [...], "scores": [L] probabilities}} (as the
contrastive classifier returns it). Ground truth comes from the dataset record: its "image_labels", else its
annotations' classes. Label "abnormal" is positive for an image with any finding; a finding label is
positive when the image has that finding; labels the dataset does not annotate (not in its thing_classes)
are left out, and logged.

Results (rates in percent; counts as numbers):
- normal vs abnormal: "accuracy", "ROC_AUC", "precision-<c>", "recall-<c>", "F1-<c>" for c in normal and
  abnormal, the confusion matrix "confusion-<true>-<predicted>", "num_images", "num_abnormal";
- each finding f: "accuracy-f", "ROC_AUC-f", "precision-f", "recall-f", "F1-f" (of its positive class),
  "TP-f", "FP-f", "FN-f", "TN-f", "num_positive-f"; "mROC_AUC" and "mF1": their means over findings
  (ROC-AUC only where an image with and one without the finding exist).
A prediction is positive when its probability is >= THRESHOLD. Precision, recall and F1 are 0 where
undefined (nothing predicted or nothing present); a ROC-AUC that is undefined is left out, not 0.
With Grad-CAM maps in the output ("gradcam": {"labels", "heatmaps"}), overlays of the first NUM_OVERLAYS
images are written to `output_dir`/gradcam_overlays/: the abnormal map and the map of each finding present,
with its boxes drawn.
"""
import logging
import os
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from detectron2.structures import BoxMode
from sklearn.metrics import roc_auc_score
from tabulate import tabulate

from ..data.image_io import read_gray
from .base import CXRDatasetEvaluator, file_slug
from .build import EVALUATOR_REGISTRY
from .heatmap_overlays import save_heatmap_overlay

logger = logging.getLogger(__name__)

ABNORMAL, NORMAL = "abnormal", "normal"
OVERLAY_FOLDER = "gradcam_overlays"


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def binary_metrics(y_true: Sequence[bool], y_score: Sequence[float], threshold: float = 0.5) -> Dict[str, Optional[float]]:
    """Fractions and counts of one binary label: accuracy, roc_auc (None with a single class), precision,
    recall and f1 of the positive ("pos") and negative ("neg") class, and tp, fp, fn, tn."""
    truth = np.asarray(y_true, dtype=bool)
    score = np.asarray(y_score, dtype=np.float64)
    if truth.shape != score.shape or truth.ndim != 1 or truth.size == 0:
        raise ValueError(f"need two equally long, non-empty 1-D arrays; got shapes {truth.shape} and {score.shape}")
    predicted = score >= threshold
    tp, fp = int(np.sum(truth & predicted)), int(np.sum(~truth & predicted))
    fn, tn = int(np.sum(truth & ~predicted)), int(np.sum(~truth & ~predicted))
    metrics = {"accuracy": _ratio(tp + tn, truth.size),
               "roc_auc": float(roc_auc_score(truth, score)) if 0 < truth.sum() < truth.size else None,
               "tp": tp, "fp": fp, "fn": fn, "tn": tn}
    for side, (hits, false_alarms, misses) in (("pos", (tp, fp, fn)), ("neg", (tn, fn, fp))):
        precision, recall = _ratio(hits, hits + false_alarms), _ratio(hits, hits + misses)
        metrics.update({f"precision_{side}": precision, f"recall_{side}": recall, f"f1_{side}": _f1(precision, recall)})
    return metrics


def _abnormal_results(truth: np.ndarray, scores: np.ndarray, threshold: float) -> "OrderedDict[str, float]":
    m = binary_metrics(truth, scores, threshold)
    results = OrderedDict(accuracy=100 * m["accuracy"])
    if m["roc_auc"] is not None:
        results["ROC_AUC"] = 100 * m["roc_auc"]
    for name, side in ((NORMAL, "neg"), (ABNORMAL, "pos")):
        for metric in ("precision", "recall", "f1"):
            results[f"{metric.replace('f1', 'F1')}-{name}"] = 100 * m[f"{metric}_{side}"]
    for true_name, row in ((NORMAL, ("tn", "fp")), (ABNORMAL, ("fn", "tp"))):
        for predicted_name, count in zip((NORMAL, ABNORMAL), row):
            results[f"confusion-{true_name}-{predicted_name}"] = m[count]
    results["num_images"] = int(truth.size)
    results["num_abnormal"] = int(truth.sum())
    return results


def classification_results(truth: Dict[str, Sequence[bool]], scores: Dict[str, Sequence[float]],
                           threshold: float = 0.5) -> "OrderedDict[str, float]":
    """The "classification" metrics (see the module docstring) of labels {name: per-image truth} and
    {name: per-image probability}; "abnormal" gives the headline metrics, every other label is a finding."""
    results = OrderedDict()
    if ABNORMAL in truth:
        results.update(_abnormal_results(np.asarray(truth[ABNORMAL]), np.asarray(scores[ABNORMAL]), threshold))
    aucs, f1s = [], []
    for label in (name for name in truth if name != ABNORMAL):
        m = binary_metrics(truth[label], scores[label], threshold)
        results[f"accuracy-{label}"] = 100 * m["accuracy"]
        if m["roc_auc"] is not None:
            results[f"ROC_AUC-{label}"] = 100 * m["roc_auc"]
            aucs.append(100 * m["roc_auc"])
        for metric in ("precision", "recall", "f1"):
            results[f"{metric.replace('f1', 'F1')}-{label}"] = 100 * m[f"{metric}_pos"]
        f1s.append(100 * m["f1_pos"])
        for count in ("tp", "fp", "fn", "tn"):
            results[f"{count.upper()}-{label}"] = m[count]
        results[f"num_positive-{label}"] = int(np.sum(truth[label]))
    if aucs:
        results["mROC_AUC"] = float(np.mean(aucs))
    if f1s:
        results["mF1"] = float(np.mean(f1s))
    return results


def _record_findings(record: dict, class_names: Sequence[str]) -> List[str]:
    """Names of the findings of a dataset record ("image_labels", else its non-crowd annotations)."""
    if "image_labels" in record:
        ids = record["image_labels"]
    else:
        ids = [a["category_id"] for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    for i in ids:
        if not 0 <= int(i) < len(class_names):
            raise ValueError(f"{record.get('file_name')}: finding id {i} is outside the dataset's {len(class_names)} classes")
    return sorted({class_names[int(i)] for i in ids})


class ClassificationEvaluator(CXRDatasetEvaluator):
    """Normal/abnormal and per-finding metrics of image-level probabilities (see the module docstring)."""

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, *, threshold: float = 0.5,
                 num_overlays: int = 8, distributed: bool = True):
        """`threshold`: probability at or above which a prediction counts as positive; `num_overlays`:
        images whose Grad-CAM overlays are written to `output_dir` (per process); `distributed`: gather
        every process's predictions before scoring."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"TEST.CLASSIFICATION.THRESHOLD must be a probability in [0, 1], got {threshold}")
        if num_overlays < 0:
            raise ValueError(f"TEST.CLASSIFICATION.NUM_OVERLAYS must be >= 0, got {num_overlays}")
        super().__init__(dataset_name, output_dir, distributed=distributed)
        self._threshold = float(threshold)
        self._num_overlays = int(num_overlays)
        self._read_records_and_classes()
        self.reset()

    def reset(self):
        self._rows: List[Dict[str, tuple]] = []  # per image: {label: (truth, probability)}
        self._unannotated = set()
        self._overlay_images = 0

    def _truth(self, label: str, findings: List[str]) -> Optional[bool]:
        if label == ABNORMAL:
            return bool(findings)
        return label in findings if label in self._class_names else None

    def process(self, inputs, outputs):
        for record_input, output in zip(inputs, outputs):
            image_id = record_input["image_id"]
            if image_id not in self._records:
                raise KeyError(f"image_id {image_id!r} is not in dataset {self._dataset_name!r}")
            if "classification" not in output:
                raise ValueError(f"the model output for image {image_id} has no 'classification' entry: the "
                                 "classification evaluator needs image-level probabilities (ContrastiveClassifier)")
            record = self._records[image_id]
            findings = _record_findings(record, self._class_names)
            prediction = output["classification"]
            row = {}
            for label, score in zip(prediction["labels"], np.asarray(prediction["scores"], dtype=np.float64)):
                truth = self._truth(label, findings)
                if truth is None:
                    self._unannotated.add(label)
                else:
                    row[label] = (truth, float(score))
            self._rows.append(row)
            if "gradcam" in output and self._output_dir and self._overlay_images < self._num_overlays:
                self._write_overlays(record, findings, output["gradcam"], row)
                self._overlay_images += 1

    def _write_overlays(self, record: dict, findings: List[str], gradcam: dict, row: Dict[str, tuple]) -> None:
        """The abnormal map and each present finding's map over the image, with the boxes drawn."""
        try:
            image = read_gray(record["file_name"])
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"cannot read image {record['file_name']} for its Grad-CAM overlays: {e}") from e
        boxes = defaultdict(list)
        for annotation in record.get("annotations", []):
            box = BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS)
            boxes[self._class_names[annotation["category_id"]]].append(box)
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        for label, heatmap in zip(gradcam["labels"], gradcam["heatmaps"]):
            if label != ABNORMAL and label not in findings:
                continue
            heatmap = heatmap.detach().cpu().numpy() if hasattr(heatmap, "detach") else np.asarray(heatmap)
            shown = image if image.shape == heatmap.shape else cv2.resize(image, heatmap.shape[::-1], interpolation=cv2.INTER_AREA)
            label_boxes = [b for name in findings for b in boxes[name]] if label == ABNORMAL else boxes[label]
            title = f"{label} p={row[label][1]:.2f}" if label in row else label
            path = os.path.join(self._output_dir, OVERLAY_FOLDER, f"{stem}_{file_slug(label, 'label')}.png")
            save_heatmap_overlay(path, shown, heatmap, label_boxes, title)

    def evaluate(self):
        """{"classification": metrics} (see the module docstring); {} on non-main processes."""
        rows = self._gathered(self._rows)
        if rows is None:
            return {}
        if not rows:
            logger.warning(f"{self._dataset_name}: no image was classified; no classification metrics")
            return {}
        if self._unannotated:
            logger.info(f"{self._dataset_name}: outputs {sorted(self._unannotated)} are not findings of this dataset "
                        "and are not scored")
        labels = list(dict.fromkeys(label for row in rows for label in row))
        incomplete = [label for label in labels if any(label not in row for row in rows)]
        if incomplete:
            raise ValueError(f"{self._dataset_name}: outputs {incomplete} are missing for some images; the model "
                             "must return the same labels for every image")
        truth = {label: [row[label][0] for row in rows] for label in labels}
        scores = {label: [row[label][1] for row in rows] for label in labels}
        results = classification_results(truth, scores, self._threshold)
        self._log_table(results, labels)
        if self._output_dir and self._overlay_images:
            logger.info(f"Wrote Grad-CAM overlays of {self._overlay_images} image(s) to "
                        f"{os.path.join(self._output_dir, OVERLAY_FOLDER)}")
        return OrderedDict({"classification": results})

    def _log_table(self, results: Dict[str, float], labels: List[str]) -> None:
        rows = []
        for label in labels:
            suffix = "" if label == ABNORMAL else f"-{label}"
            positive = ABNORMAL if label == ABNORMAL else label
            rows.append([label, results.get(f"accuracy{suffix}"), results.get(f"ROC_AUC{suffix}", float("nan")),
                         results.get(f"precision-{positive}"), results.get(f"recall-{positive}"),
                         results.get(f"F1-{positive}")])
        logger.info(f"Classification of '{self._dataset_name}' (percent; threshold {self._threshold:g}):\n"
                    + tabulate(rows, headers=["label", "accuracy", "ROC-AUC", "precision", "recall", "F1"],
                               tablefmt="pipe", floatfmt=".2f"))


@EVALUATOR_REGISTRY.register()
def classification(cfg, dataset_name, output_folder):
    """ClassificationEvaluator set up from cfg.TEST.CLASSIFICATION."""
    section = cfg.TEST.CLASSIFICATION
    return ClassificationEvaluator(dataset_name, output_folder, threshold=section.THRESHOLD,
                                   num_overlays=section.NUM_OVERLAYS)
