"""`ProgressionEvaluator`: per-region progression metrics of image pairs, the "progression" task.

The model output per input is {"progression": {"regions": [names], "labels": [...], "scores": [R, K]}};
the prediction is the label of the highest score, the truth the input's region "label" (comparison records,
see cxr_codet/data/datasets/imagenome.py). As CheXLearner reports them, metrics are computed per anatomical
region and then averaged over regions (percent):
- "accuracy", "macro_F1": means over regions of each region's accuracy and macro-F1 (F1 averaged over the
  labels present in that region's truth or predictions);
- "accuracy-<region>", "macro_F1-<region>", "num_samples-<region>";
- pooled over all samples: "pooled_accuracy", "pooled_macro_F1", "F1-<label>", the confusion matrix
  "confusion-<true>-<predicted>" (counts), "num_samples", "num_regions".
Every prediction is also written to `output_dir`/progression_predictions.csv.
"""
import csv
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
from tabulate import tabulate

from ..data.datasets.imagenome import PROGRESSION_LABELS
from .base import CXRDatasetEvaluator
from .build import EVALUATOR_REGISTRY

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "progression_predictions.csv"


def label_f1(y_true: np.ndarray, y_pred: np.ndarray, label: int) -> float:
    """F1 of one label (fraction); 0 when it is neither present nor predicted."""
    tp = int(np.sum((y_true == label) & (y_pred == label)))
    predicted, present = int(np.sum(y_pred == label)), int(np.sum(y_true == label))
    return 2.0 * tp / (predicted + present) if predicted + present else 0.0


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 (fraction) over the labels that occur in `y_true` or `y_pred`."""
    labels = np.union1d(y_true, y_pred)
    return float(np.mean([label_f1(y_true, y_pred, label) for label in labels]))


def progression_metrics(regions: Sequence[str], y_true: Sequence[int], y_pred: Sequence[int],
                        label_names: Sequence[str] = PROGRESSION_LABELS) -> "OrderedDict[str, float]":
    """The "progression" metrics (see the module docstring) of samples given by region name, true and
    predicted label index (into `label_names`)."""
    regions = np.asarray(regions, dtype=object)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if not (len(regions) == len(y_true) == len(y_pred)) or len(regions) == 0:
        raise ValueError(f"need equally many (> 0) regions, true and predicted labels; got "
                         f"{len(regions)}, {len(y_true)}, {len(y_pred)}")
    bad = sorted(set(np.concatenate([y_true, y_pred]).tolist()) - set(range(len(label_names))))
    if bad:
        raise ValueError(f"label indices {bad} are outside 0..{len(label_names) - 1} ({list(label_names)})")
    per_region = OrderedDict()
    for region in sorted(set(regions.tolist())):
        selected = regions == region
        per_region[region] = (float(np.mean(y_true[selected] == y_pred[selected])),
                              macro_f1(y_true[selected], y_pred[selected]), int(selected.sum()))
    results = OrderedDict()
    results["accuracy"] = 100 * float(np.mean([accuracy for accuracy, _, _ in per_region.values()]))
    results["macro_F1"] = 100 * float(np.mean([f1 for _, f1, _ in per_region.values()]))
    for region, (accuracy, f1, count) in per_region.items():
        results[f"accuracy-{region}"] = 100 * accuracy
        results[f"macro_F1-{region}"] = 100 * f1
        results[f"num_samples-{region}"] = count
    results["pooled_accuracy"] = 100 * float(np.mean(y_true == y_pred))
    results["pooled_macro_F1"] = 100 * macro_f1(y_true, y_pred)
    for index, name in enumerate(label_names):
        results[f"F1-{name}"] = 100 * label_f1(y_true, y_pred, index)
    for i, true_name in enumerate(label_names):
        for j, predicted_name in enumerate(label_names):
            results[f"confusion-{true_name}-{predicted_name}"] = int(np.sum((y_true == i) & (y_pred == j)))
    results["num_samples"] = int(len(y_true))
    results["num_regions"] = len(per_region)
    return results


class ProgressionEvaluator(CXRDatasetEvaluator):
    """Per-region accuracy and macro-F1 of progression predictions (see the module docstring)."""

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, *, distributed: bool = True):
        super().__init__(dataset_name, output_dir, distributed=distributed)
        self.reset()

    def reset(self):
        self._samples: List[tuple] = []  # (image_id, region, true index, predicted index, scores)

    def process(self, inputs, outputs):
        for record_input, output in zip(inputs, outputs):
            image_id = record_input.get("image_id")
            if "progression" not in output:
                raise ValueError(f"the model output for {image_id!r} has no 'progression' entry: the progression "
                                 "evaluator needs per-region progression scores (ProgressionDetector)")
            prediction = output["progression"]
            names = [region["name"] for region in record_input["regions"]]
            if list(prediction["regions"]) != names:
                raise ValueError(f"{image_id!r}: the model scored regions {list(prediction['regions'])}, the input "
                                 f"has {names}")
            unknown = [label for label in prediction["labels"] if label not in PROGRESSION_LABELS]
            if unknown:
                raise ValueError(f"{image_id!r}: the model's labels {unknown} are not among {list(PROGRESSION_LABELS)}")
            scores = np.asarray(prediction["scores"], dtype=np.float64).reshape(len(names), len(prediction["labels"]))
            for region, row in zip(record_input["regions"], scores):
                predicted = PROGRESSION_LABELS.index(prediction["labels"][int(np.argmax(row))])
                self._samples.append((image_id, region["name"], int(region["label"]), predicted, row.tolist()))

    def evaluate(self):
        """{"progression": metrics}; {} on non-main processes or without samples."""
        samples = self._gathered(self._samples)
        if samples is None:
            return {}
        if not samples:
            logger.warning(f"{self._dataset_name}: no region was scored; no progression metrics")
            return {}
        _, regions, y_true, y_pred, _ = zip(*samples)
        results = progression_metrics(regions, y_true, y_pred)
        if self._output_dir:
            self._write_predictions(samples)
        self._log_table(results)
        return OrderedDict({"progression": results})

    def _write_predictions(self, samples: List[tuple]) -> None:
        os.makedirs(self._output_dir, exist_ok=True)
        path = os.path.join(self._output_dir, PREDICTIONS_FILE)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image_id", "region", "truth", "prediction"] + [f"p_{name}" for name in PROGRESSION_LABELS])
            for image_id, region, truth, predicted, scores in samples:
                writer.writerow([image_id, region, PROGRESSION_LABELS[truth], PROGRESSION_LABELS[predicted]]
                                + [f"{s:.4f}" for s in scores])
        logger.info(f"Wrote {len(samples)} region predictions to {path}")

    def _log_table(self, results: Dict[str, float]) -> None:
        regions = [key.split("-", 1)[1] for key in results if key.startswith("num_samples-")]
        rows = [[region, results[f"num_samples-{region}"], results[f"accuracy-{region}"], results[f"macro_F1-{region}"]]
                for region in regions]
        rows.append(["(mean over regions)", results["num_samples"], results["accuracy"], results["macro_F1"]])
        logger.info(f"Progression of '{self._dataset_name}' (percent):\n"
                    + tabulate(rows, headers=["region", "samples", "accuracy", "macro-F1"], tablefmt="pipe",
                               floatfmt=".2f"))


@EVALUATOR_REGISTRY.register()
def progression(cfg, dataset_name, output_folder):
    """ProgressionEvaluator writing its predictions to `output_folder`."""
    return ProgressionEvaluator(dataset_name, output_folder)
