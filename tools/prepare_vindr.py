#!/usr/bin/env python
"""Convert a VinDr-CXR release (PhysioNet or Kaggle layout) into the registered vindr_cxr_* layout.

Run with --help for both layouts and every option; the logic lives in cxr_codet.data.converters.
"""
import sys

from cxr_codet.data.converters.vindr_cli import main

if __name__ == "__main__":
    sys.exit(main())
