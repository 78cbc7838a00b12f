#!/usr/bin/env python
"""Where a run loses AP: per size bucket (share of image area) AP50 / AP75 with and without classes, the number
of ground-truth boxes behind each bucket, and score saturation. Logic and options:
cxr_codet/evaluation/detection_diagnostics.py.

    python tools/detection_diagnostics.py datasets/cxr_phantom/v2_n200_s256_seed1/annotations.json \
        output/run/inference/cxr_phantom_val/coco_instances_results.json
"""
import sys

from cxr_codet.evaluation.detection_diagnostics import main

if __name__ == "__main__":
    main(sys.argv[1:])
