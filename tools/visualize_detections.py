#!/usr/bin/env python
"""Ground truth and predictions side by side on a few test images, one per finding (one PNG).

    python tools/visualize_detections.py --dataset nih_cxr14_bbox_val \\
        --results output/nih/faster_rcnn_lite0_FPN/inference/nih_cxr14_bbox_val/coco_instances_results.json \\
        --output output/nih/faster_rcnn_lite0_FPN/detections_nih_cxr14_bbox_val.png

Detections hitting a ground-truth box of their finding (IoU >= --hit-iou) are cyan, the others red
(cxr_codet/evaluation/detection_figures.py).
"""
import argparse
import json
import sys

import cxr_codet  # noqa: F401  (first: applies the detectron2 compatibility shims, registers the datasets)
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from cxr_codet.numeric_args import number_problem, refuse  # noqa: E402
from cxr_codet.evaluation.detection_figures import (
    choose_images,
    detection_rows,
    detections_by_image,
    save_detection_figure,
)  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
