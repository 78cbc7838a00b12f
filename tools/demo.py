#!/usr/bin/env python
"""Detect findings on your own chest X-rays (PNG, JPEG, DICOM) with a trained model; see README "Demo".

    python tools/demo.py --config-file configs/phantom/cxr_codet_R18_FPN_phantom.yaml \
        --input scan.dcm images/ --output predictions/ --custom-vocabulary "Nodule,Pneumothorax" \
        --opts MODEL.WEIGHTS output/phantom/cxr_codet_R18_FPN/model_final.pth

Writes <name>.png (boxes, finding, score) and <name>.json (detections on the input's own pixel grid).
"""
import sys

from cxr_codet.demo.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
