"""The detection metrics chest X-ray papers and challenges report beside COCO AP, over one evaluation's boxes:
VOC-style mAP at one IoU (the VinBigData challenge's mAP@0.4) and FROC with its CPM, overall and per finding,
with their log table and FROC chart. The formulas are detection_metrics.py's; CXRCOCOEvaluator calls this.
"""
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Sequence

from tabulate import tabulate

from .detection_metrics import FROC_FP_RATES, HIT_CRITERIA, BoxSet, froc_by_class, mean_voc_average_precision
from .plots import plot_froc
from .results_io import NO_GROUND_TRUTH

logger = logging.getLogger(__name__)


def _xyxy(bbox):
    """COCO [x, y, w, h] -> [x0, y0, x1, y1]."""
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def check_detection_metric_settings(voc_iou_threshold, froc_hit, froc_iou_threshold, froc_fp_rates):
    """Reject settings the chest X-ray metrics cannot use, naming the config key."""
    for key, value in (("TEST.VOC_IOU_THRESHOLD", voc_iou_threshold), ("TEST.FROC.IOU_THRESHOLD", froc_iou_threshold)):
        if not 0 < value <= 1:
            raise ValueError(f"{key} must be an IoU in (0, 1], got {value!r}")
    if froc_hit not in HIT_CRITERIA:
        raise ValueError(f"TEST.FROC.HIT_CRITERION must be one of {list(HIT_CRITERIA)}, got {froc_hit!r}")
    rates = list(froc_fp_rates)
    if not rates or any(r <= 0 for r in rates) or rates != sorted(set(rates)):
        raise ValueError("TEST.FROC.FP_RATES must be positive, increasing false-positive rates per image, "
                         f"got {rates!r}")


class ChestXrayMetrics:
    """VOC mAP at `voc_iou_threshold` and FROC (hit rule `froc_hit`: "iou" at `froc_iou_threshold`, or
    "center"; operating points `froc_fp_rates` false positives per image); `plot_froc` writes the FROC chart."""

    def __init__(self, voc_iou_threshold=0.4, froc_hit="iou", froc_iou_threshold=0.4, froc_fp_rates=FROC_FP_RATES,
                 plot_froc=True):
        check_detection_metric_settings(voc_iou_threshold, froc_hit, froc_iou_threshold, froc_fp_rates)
        self._voc_iou = float(voc_iou_threshold)
        self._froc = dict(hit=froc_hit, iou_threshold=float(froc_iou_threshold),
                          fp_rates=tuple(float(r) for r in froc_fp_rates))
        self._plot_froc = plot_froc

    def compute(self, ground_truth: List[dict], coco_results: List[dict], image_ids: Sequence[int],
                name_of: Dict[int, str], dataset_name: str, plot_dir=None) -> "OrderedDict[str, float]":
        """Percent metrics over `image_ids` of the COCO detections `coco_results` against the COCO annotations
        `ground_truth` (those of these images that count), `name_of` mapping category ids to finding names:
        "mAP@<iou>" (VOC all-point AP averaged over classes with ground truth) and "AP@<iou>-<class>";
        "FROC-CPM" and "FROC-sens@<rate>" over all findings pooled, "FROC-CPM-<class>" and
        "FROC-sens@<rate>-<class>" per finding. Classes without ground truth get no entry. Writes
        `plot_dir`/froc_<dataset_name>.png when plotting is on."""
        if not image_ids:
            return OrderedDict()
        evaluated = set(image_ids)
        gts = BoxSet.build([a["image_id"] for a in ground_truth], [_xyxy(a["bbox"]) for a in ground_truth],
                           [a["category_id"] for a in ground_truth])
        dt = [r for r in coco_results if r["image_id"] in evaluated]
        dets = BoxSet.build([r["image_id"] for r in dt], [_xyxy(r["bbox"]) for r in dt],
                            [r["category_id"] for r in dt], [r["score"] for r in dt])
        iou = f"{self._voc_iou:g}"
        results = OrderedDict()
        mean_ap, per_class_ap = mean_voc_average_precision(dets, gts, list(name_of), self._voc_iou)
        if mean_ap is not None:
            results[f"mAP@{iou}"] = 100 * mean_ap
        for label, ap in per_class_ap.items():
            if ap is not None:
                results[f"AP@{iou}-{name_of[label]}"] = 100 * ap
        frocs = froc_by_class(dets, gts, list(name_of), len(image_ids), **self._froc)
        named = [("all findings", "", frocs.pop(None))] + [(name_of[k], f"-{name_of[k]}", v) for k, v in frocs.items()]
        named = [(name, suffix, f) for name, suffix, f in named if f is not None]
        for _, suffix, f in named:
            results[f"FROC-CPM{suffix}"] = 100 * f.cpm
            for rate, sensitivity in zip(f.fp_rates, f.sensitivity_at):
                results[f"FROC-sens@{rate:g}{suffix}"] = 100 * sensitivity
        self._log(named, per_class_ap, name_of, mean_ap, dataset_name)
        if self._plot_froc and plot_dir and named:
            path = os.path.join(plot_dir, f"froc_{dataset_name}.png")
            plot_froc({name: (f.fp_per_image, f.sensitivity, f.cpm) for name, _, f in named}, path,
                      title=f"FROC ({self._froc_rule()}), {dataset_name}", fp_rates=self._froc["fp_rates"])
            logger.info(f"Wrote FROC chart to {path}")
        return results

    def _froc_rule(self):
        if self._froc["hit"] == "iou":
            return f"hit: IoU >= {self._froc['iou_threshold']:g}"
        return "hit: box centre inside a ground-truth box"

    def _log(self, named_frocs, per_class_ap, name_of, mean_ap, dataset_name):
        """Log mAP@<iou> and the FROC sensitivities (percent) per finding and overall."""
        rates = self._froc["fp_rates"]
        ap_of = {name_of[k]: ap for k, ap in per_class_ap.items()}
        ap_of["all findings"] = mean_ap
        rows = [
            (name, NO_GROUND_TRUTH if ap_of.get(name) is None else f"{100 * ap_of[name]:.2f}", f"{100 * f.cpm:.2f}",
             *(f"{100 * s:.1f}" for s in f.sensitivity_at))
            for name, _, f in named_frocs
        ]
        logger.info(f"VOC mAP@{self._voc_iou:g} (all-point) and FROC ({self._froc_rule()}; sensitivity in % at "
                    f"false positives per image) of '{dataset_name}':\n"
                    + tabulate(rows, headers=["finding", f"AP@{self._voc_iou:g}", "CPM", *(f"{r:g}" for r in rates)],
                               tablefmt="pipe", disable_numparse=True))
