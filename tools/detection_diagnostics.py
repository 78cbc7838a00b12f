#!/usr/bin/env python
"""Where a run loses AP: per size bucket (share of image area) AP50 / AP75 with and without classes, the number
of ground-truth boxes behind each bucket, and score saturation (cxr_codet/evaluation/detection_diagnostics.py)."""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxr_codet.evaluation.detection_diagnostics import diagnose, format_diagnostics  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, epilog="example: tools/detection_diagnostics.py "
                                     "datasets/cxr_phantom/v2_n200_s256_seed1/annotations.json "
                                     "output/run/inference/cxr_phantom_val/coco_instances_results.json")
    parser.add_argument("gt_json", help="the test set's COCO json")
    parser.add_argument("results", nargs="+", help="coco_instances_results.json of one or more runs")
    parser.add_argument("--relative-area-ranges", nargs=2, type=float, default=(0.01, 0.1),
                        help="upper bounds of small and medium as shares of image area (TEST.RELATIVE_AREA_RANGES)")
    args = parser.parse_args(argv)
    for path in args.results:
        with open(path, encoding="utf-8") as f:
            detections = json.load(f)
        print(f"## {path}\n\n{format_diagnostics(diagnose(args.gt_json, detections, args.relative_area_ranges))}\n")


if __name__ == "__main__":
    main()
