#!/usr/bin/env python
"""Speed and peak memory of a config, or of two configs side by side (see docs/benchmarks.md).

    python tools/benchmark.py --config-file configs/phantom/faster_rcnn_R18_FPN_phantom.yaml --task train eval
    python tools/benchmark.py --config-file A.yaml --compare-config B.yaml --rounds 5 --output results.json \
        INPUT.MIN_SIZE_TEST 1024 INPUT.MAX_SIZE_TEST 1024

Tasks: train (s/iter on cached batches, data loading excluded), eval (s/image at batch 1), data (loader
images/s). Trailing KEY VALUE pairs override both configs.
"""
import sys

from cxr_codet.benchmark.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
