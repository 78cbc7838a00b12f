#!/usr/bin/env python
"""Compare datasets' intensity distributions, lesion contrast and box sizes (default: cxr_phantom_val vs the
NIH ChestX-ray14 boxes), as a markdown table; numbers in datasets/README.md.

    python tools/phantom_realism.py --datasets cxr_phantom_val nih_cxr14_bbox_all --max-images 200

Logic: cxr_codet/data/realism.py.
"""
import sys

from cxr_codet.data.realism import main

if __name__ == "__main__":
    main(sys.argv[1:])
