"""Where a detector loses AP: localization vs classification, score saturation, and how many boxes a size
bucket holds (tools/detection_diagnostics.py over a run's coco_instances_results.json).

- AP at IoU 0.5 and 0.75 per size bucket (relative to image area), with and without classes: class-agnostic
  AP treats every finding as one, so a drop that survives it is box precision, not naming the finding.
- Score saturation: the share of detections scored >= 0.999999, which tie and cannot be ranked.
- Ground-truth boxes per bucket: an AP over a handful of boxes is noise, whatever its decimals.
"""
import argparse
import contextlib
import io
import json
import math
from typing import List, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..numeric_args import refuse
from .size_buckets import load_detections, relative_size_buckets, with_relative_areas

SATURATED_SCORE = 0.999999
DESCRIPTION = ("Where a run loses AP: per size bucket (share of image area) AP50 / AP75 with and without classes, "
               "the number of ground-truth boxes behind each bucket, and score saturation.")


def _evaluate(coco_gt: COCO, coco_dt: COCO, area_ranges: Sequence, use_categories: bool) -> np.ndarray:
    """COCO precision [IoU, recall, class, area range] (maxDets 100)."""
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(coco_gt, coco_dt, "bbox")
        evaluation.params.useCats = int(use_categories)
        evaluation.params.areaRng = [list(r) for r in area_ranges]
        evaluation.params.areaRngLbl = [str(i) for i in range(len(area_ranges))]
        evaluation.evaluate()
        evaluation.accumulate()
    return evaluation.eval["precision"][..., -1]


def _mean(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(100 * values.mean()) if values.size else float("nan")


def diagnose(gt_json: str, detections: List[dict], relative_ranges: Sequence[float] = (0.01, 0.1)) -> dict:
    """Diagnostics of `detections` (COCO results) against the COCO file `gt_json`, with COCO's matching; size
    buckets by share of image area as the evaluator's TEST.SIZE_BUCKETS "relative" (small < relative_ranges[0]
    <= medium < relative_ranges[1] <= large)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = with_relative_areas(COCO(gt_json))
    buckets = dict(zip(("all", "s", "m", "l"), relative_size_buckets(relative_ranges).area_ranges))
    scores = np.array([d["score"] for d in detections], dtype=np.float64)
    result = {
        "detections": len(detections),
        "images": len(coco_gt.imgs),
        "saturated_share": float((scores >= SATURATED_SCORE).mean()) if scores.size else 0.0,
        "max_score": float(scores.max()) if scores.size else float("nan"),
        "buckets": {},
    }
    if not detections:
        return result
    coco_dt = load_detections(coco_gt, detections, relative_areas=True)
    by_class = _evaluate(coco_gt, coco_dt, list(buckets.values()), True)
    agnostic = _evaluate(coco_gt, coco_dt, list(buckets.values()), False)
    annotations = [a for a in coco_gt.dataset["annotations"] if not a.get("iscrowd", 0)]
    for index, (bucket, (low, high)) in enumerate(buckets.items()):
        result["buckets"][bucket] = {
            "gt_boxes": sum(1 for a in annotations if low <= a["area"] <= high),
            "by_class": {"AP": _mean(by_class[..., index]), "AP50": _mean(by_class[0, ..., index]),
                         "AP75": _mean(by_class[5, ..., index])},
            "class_agnostic": {"AP": _mean(agnostic[..., index]), "AP50": _mean(agnostic[0, ..., index]),
                               "AP75": _mean(agnostic[5, ..., index])},
        }
    return result


def format_diagnostics(result: dict) -> str:
    """A markdown table of `diagnose`'s result, one row per size bucket."""
    lines = [
        f"{result['detections']} detections on {result['images']} images; scored >= {SATURATED_SCORE}: "
        f"{100 * result['saturated_share']:.1f}%; highest score {result['max_score']:.6f}",
        "",
        "| bucket | GT boxes | AP | AP50 | AP75 | class-agnostic AP50 | class-agnostic AP75 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for bucket, entry in result["buckets"].items():
        by_class, agnostic = entry["by_class"], entry["class_agnostic"]
        lines.append(f"| {bucket} | {entry['gt_boxes']} | {by_class['AP']:.1f} | {by_class['AP50']:.1f} | "
                     f"{by_class['AP75']:.1f} | {agnostic['AP50']:.1f} | {agnostic['AP75']:.1f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The command line of tools/detection_diagnostics.py: a markdown report per results file."""
    parser = argparse.ArgumentParser(
        prog="detection_diagnostics.py", description=DESCRIPTION,
        epilog="example: tools/detection_diagnostics.py datasets/cxr_phantom/v2_n200_s256_seed1/annotations.json "
        "output/run/inference/cxr_phantom_val/coco_instances_results.json")
    parser.add_argument("gt_json", help="the test set's COCO json")
    parser.add_argument("results", nargs="+", help="coco_instances_results.json of one or more runs")
    parser.add_argument("--relative-area-ranges", nargs=2, type=float, default=(0.01, 0.1),
                        help="upper bounds of small and medium as shares of image area (TEST.RELATIVE_AREA_RANGES)")
    args = parser.parse_args(argv)
    small, medium = ranges = list(args.relative_area_ranges)
    if not (all(math.isfinite(v) for v in ranges) and 0 < small < medium <= 1):
        refuse(parser.prog, [f"--relative-area-ranges must be two increasing fractions of the image area in (0, 1], "
                             f"got {ranges}"])
    for path in args.results:
        with open(path, encoding="utf-8") as f:
            detections = json.load(f)
        print(f"## {path}\n\n{format_diagnostics(diagnose(args.gt_json, detections, ranges))}\n")
