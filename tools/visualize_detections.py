#!/usr/bin/env python
"""Ground truth and predictions side by side on a few test images, one per finding (one PNG). Logic and options:
cxr_codet/evaluation/detection_figures.py.

    python tools/visualize_detections.py --dataset nih_cxr14_bbox_val \\
        --results output/nih/faster_rcnn_lite0_FPN/inference/nih_cxr14_bbox_val/coco_instances_results.json \\
        --output output/nih/faster_rcnn_lite0_FPN/detections_nih_cxr14_bbox_val.png

Detections hitting a ground-truth box of their finding (IoU >= --hit-iou) are cyan, the others red.
"""
import sys

from cxr_codet.evaluation.detection_figures import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
