"""A figure of what a detector gets right and wrong: test images with their ground truth and predictions side by side.

Each row is one image: on the left its ground-truth boxes (green, named); on the right the same boxes thin and
the model's highest-scored detections, cyan where a detection hits a ground-truth box of its finding (IoU at
least `hit_iou`, the FROC rule) and red where it does not, each labelled with its finding and score. Images are
chosen one per finding (the first, by image id, that has a box of it and was not chosen yet), so every finding
of the split shows once. Detections are the COCO results file the evaluator writes
(`inference/<dataset>/coco_instances_results.json`, dataset category ids, XYWH boxes).
"""
import argparse
import json
import os
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..data.image_io import read_gray
from ..numeric_args import number_problem, refuse

DESCRIPTION = "Ground truth and predictions side by side on a few test images, one per finding (one PNG)."

GT_COLOR = (0, 200, 0)  # BGR
HIT_COLOR = (255, 255, 0)
MISS_COLOR = (0, 0, 255)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ground_truth_boxes(record: dict) -> List[tuple]:
    """(contiguous class id, xyxy) of a dataset record's non-crowd annotations."""
    out = []
    for ann in record.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
        out.append((int(ann["category_id"]), np.asarray(box, dtype=np.float64)))
    return out


def choose_images(records: Sequence[dict], num_classes: int, per_finding: int = 1) -> List[dict]:
    """`per_finding` records per finding, each the first by image id with a box of it and not chosen before."""
    ordered = sorted(records, key=lambda r: r["image_id"])
    chosen, taken = [], set()
    for class_id in range(num_classes):
        count = 0
        for record in ordered:
            if count == per_finding:
                break
            if record["image_id"] in taken or class_id not in {c for c, _ in ground_truth_boxes(record)}:
                continue
            chosen.append(record)
            taken.add(record["image_id"])
            count += 1
    return chosen


def detections_by_image(results: Sequence[dict], dataset_id_to_contiguous: Optional[Dict[int, int]]) -> Dict[object, list]:
    """COCO results grouped by image id as (contiguous class id, xyxy, score), highest score first."""
    grouped: Dict[object, list] = {}
    for result in results:
        class_id = int(result["category_id"])
        if dataset_id_to_contiguous is not None:
            if class_id not in dataset_id_to_contiguous:
                raise ValueError(f"detection category_id {class_id} is not a category of the dataset "
                                 f"(ids {sorted(dataset_id_to_contiguous)})")
            class_id = dataset_id_to_contiguous[class_id]
        x, y, w, h = result["bbox"]
        grouped.setdefault(result["image_id"], []).append((class_id, np.array([x, y, x + w, y + h]), float(result["score"])))
    for detections in grouped.values():
        detections.sort(key=lambda d: -d[2])
    return grouped


def _draw_box(canvas, box, color, thickness, label=None):
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), color, thickness)
    if label:
        scale = max(0.35, canvas.shape[0] / 1100)
        cv2.putText(canvas, label, (x0 + 2, max(y0 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, scale, color,
                    max(1, thickness - 1), cv2.LINE_AA)


def _title(canvas, text):
    scale = max(0.4, canvas.shape[0] / 900)
    cv2.putText(canvas, text, (6, int(22 * scale) + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)


def detection_rows(records: Sequence[dict], detections: Dict[object, list], class_names: Sequence[str], *,
                   max_detections: int = 3, min_score: float = 0.0, hit_iou: float = 0.4) -> np.ndarray:
    """The figure as one BGR uint8 array: a (ground truth | predictions) row per record, rows stacked."""
    rows = []
    width = None
    for record in records:
        gray = read_gray(record["file_name"])
        base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        thickness = max(2, int(round(min(base.shape[:2]) / 200)))
        truth, predicted = base.copy(), base.copy()
        gt = ground_truth_boxes(record)
        for class_id, box in gt:
            _draw_box(truth, box, GT_COLOR, thickness, class_names[class_id])
            _draw_box(predicted, box, GT_COLOR, 1)
        shown = [d for d in detections.get(record["image_id"], []) if d[2] >= min_score][:max_detections]
        for class_id, box, score in shown:
            hit = any(c == class_id and _iou(box, g) >= hit_iou for c, g in gt)
            _draw_box(predicted, box, HIT_COLOR if hit else MISS_COLOR, thickness, f"{class_names[class_id]} {score:.2f}")
        name = os.path.basename(record["file_name"])
        _title(truth, f"{name}: ground truth")
        _title(predicted, f"top {max_detections} detections" if shown else "no detection")
        row = np.concatenate([truth, np.full((truth.shape[0], 8, 3), 255, np.uint8), predicted], axis=1)
        if width is not None and row.shape[1] != width:  # images of other sizes are scaled to the first row's width
            row = cv2.resize(row, (width, int(round(row.shape[0] * width / row.shape[1]))))
        width = row.shape[1]
        rows.append(row)
    if not rows:
        raise ValueError("no image to draw: the split has no image with a ground-truth box")
    gap = np.full((8, width, 3), 255, np.uint8)
    return np.concatenate([part for row in rows for part in (row, gap)][:-1], axis=0)


def save_detection_figure(path: str, figure: np.ndarray) -> str:
    """Write the figure as a PNG (folders created); returns `path`."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(path, figure):
        raise OSError(f"could not write {path}")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line of tools/visualize_detections.py."""
    parser = argparse.ArgumentParser(prog="visualize_detections.py", description=DESCRIPTION)
    parser.add_argument("--dataset", required=True, help="registered test dataset the results are of")
    parser.add_argument("--results", required=True, help="coco_instances_results.json written by the evaluator")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--per-finding", type=int, default=1, help="images per finding (default 1)")
    parser.add_argument("--max-detections", type=int, default=3, help="highest-scored detections drawn per image")
    parser.add_argument("--min-score", type=float, default=0.0, help="detections below this score are not drawn")
    parser.add_argument("--hit-iou", type=float, default=0.4, help="IoU with a same-finding box that counts as a hit")
    args = parser.parse_args(argv)
    refuse("visualize_detections.py", [
        number_problem("--per-finding", args.per_finding, low=1),
        number_problem("--max-detections", args.max_detections, low=1),
        number_problem("--min-score", args.min_score, low=0, high=1),
        number_problem("--hit-iou", args.hit_iou, low=0, high=1, low_open=True),
    ])
    if args.dataset not in DatasetCatalog.list():
        parser.error(f"--dataset {args.dataset!r} is not a registered dataset")
    try:
        with open(args.results, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        parser.error(f"--results {args.results}: cannot read it as JSON ({e})")
    metadata = MetadataCatalog.get(args.dataset)
    records = DatasetCatalog.get(args.dataset)
    chosen = choose_images(records, len(metadata.thing_classes), args.per_finding)
    figure = detection_rows(
        chosen, detections_by_image(results, getattr(metadata, "thing_dataset_id_to_contiguous_id", None)),
        metadata.thing_classes, max_detections=args.max_detections, min_score=args.min_score, hit_iou=args.hit_iou)
    print(f"Wrote {save_detection_figure(args.output, figure)} ({len(chosen)} images)")
    return 0
