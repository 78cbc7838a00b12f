"""Command line of tools/prepare_vindr.py: arguments, help text (both release layouts), exit codes."""
import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from ..dicom import DEFAULT_LONG_SIDE, SUPPORTED_BIT_DEPTHS
from .box_fusion import DEFAULT_IOU_THRESHOLD, DEFAULT_MIN_READERS, FUSION_STRATEGIES
from .errors import ConverterError
from .vindr import DEFAULT_VAL_FRACTION, VindrConversionOptions, convert_vindr
from .vindr_release import LAYOUTS

DESCRIPTION = """\
Convert a VinDr-CXR release into <out>/vindr_cxr/, the layout that the registered datasets
vindr_cxr_train, vindr_cxr_val and vindr_cxr_test read:

  <out>/vindr_cxr/images/{train,test}/<image_id>.png
  <out>/vindr_cxr/annotations/vindr_cxr_{train,val,test}.json   (COCO, 14 findings, ids 0..13)
  <out>/vindr_cxr/image_sizes.csv, <out>/vindr_cxr/conversion_report.json

SOURCE is one of two release layouts (detected automatically, or forced with --layout):

  PhysioNet (physionet.org/content/vindr-cxr), 15,000 train + 3,000 test images:
    SOURCE/annotations/annotations_train.csv   image_id,rad_id,class_name,x_min,y_min,x_max,y_max
    SOURCE/annotations/annotations_test.csv    the 5-reader consensus (kept as released)
    SOURCE/annotations/image_labels_{train,test}.csv   image-level labels (stored as release_labels)
    SOURCE/train/<image_id>.dicom, SOURCE/test/<image_id>.dicom
    Local labels by name (the 8 local labels outside the 14 detection findings are skipped and
    reported); a box with several labels repeats its coordinates; slightly negative coordinates
    are clipped to the image.

  Kaggle (VinBigData Chest X-ray Abnormalities Detection), 15,000 train images:
    SOURCE/train.csv (or train.csv.gz)   image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max
    SOURCE/train/<image_id>.dicom
    class_id 14 = "No finding" with empty coordinates. No test annotations, so no vindr_cxr_test.
    SOURCE may also be the CSV file itself (with --csv-only).

Each training image was read by 3 radiologists; --fusion says how their boxes become training boxes.
The 15,000 training images are split 94:6 (14,100 / 900) with a seeded split stratified by finding.
Skipped rows, images and files are listed with the reason in the report; the exit status is non-zero
only when the conversion cannot continue (a missing file or column, an output inside SOURCE).
"""

EXAMPLES = """\
examples:
  python tools/prepare_vindr.py /data/vindr-cxr/1.0.0 --out datasets --workers 8
  python tools/prepare_vindr.py /data/vinbigdata --fusion agreement --min-readers 2
  # the CXR-CoDet paper's data: every reader's box, 1024x1024 images, its 900 validation images
  python tools/prepare_vindr.py /data/vinbigdata --fusion keep_all --resize 1024x1024 \
      --val-ids datasets/metadata/vindr_cxr_paper_val_ids.txt
  python tools/prepare_vindr.py train.csv.gz --csv-only --out /tmp/vindr_check
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with the layouts documented in --help."""
    parser = argparse.ArgumentParser(
        prog="prepare_vindr.py", description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", type=Path, help="release folder (either layout) or a Kaggle-format CSV")
    parser.add_argument(
        "--out", type=Path, default=Path(os.getenv("DETECTRON2_DATASETS", "datasets")),
        help="datasets root to write vindr_cxr/ into (default: $DETECTRON2_DATASETS or ./datasets)",
    )
    parser.add_argument("--layout", choices=("auto",) + LAYOUTS, default="auto", help="release layout")
    parser.add_argument(
        "--fusion", choices=sorted(FUSION_STRATEGIES), default="wbf",
        help="keep_all: every reader's box; wbf: Weighted Boxes Fusion per finding (default); "
             "agreement: fused boxes that at least --min-readers readers agree on",
    )
    parser.add_argument(
        "--iou-thr", type=float, default=DEFAULT_IOU_THRESHOLD,
        help=f"IoU at which boxes of one finding count as one lesion (default {DEFAULT_IOU_THRESHOLD})",
    )
    parser.add_argument(
        "--min-readers", type=int, default=DEFAULT_MIN_READERS,
        help=f"readers needed to keep a box with --fusion agreement (default {DEFAULT_MIN_READERS})",
    )
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help=f"fraction of the training images in vindr_cxr_val (default {DEFAULT_VAL_FRACTION})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    parser.add_argument(
        "--val-ids", type=Path, metavar="FILE",
        help="import the val split: a text file of training image ids, one per line (e.g. the CXR-CoDet paper's "
             "900, datasets/metadata/vindr_cxr_paper_val_ids.txt); replaces the seeded split (--val-fraction, --seed)",
    )
    parser.add_argument(
        "--long-side", type=int, default=DEFAULT_LONG_SIDE,
        help=f"shrink PNGs so the long side is at most this; 0 keeps the DICOM size (default {DEFAULT_LONG_SIDE})",
    )
    parser.add_argument(
        "--resize", type=_size, metavar="WxH",
        help="resize every PNG to exactly W x H pixels, whatever its aspect ratio (the CXR-CoDet paper: 1024x1024); "
             "replaces --long-side",
    )
    parser.add_argument("--bit-depth", type=int, choices=SUPPORTED_BIT_DEPTHS, default=8, help="PNG bit depth")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="processes for DICOM decoding (default: all cores but one)")
    parser.add_argument(
        "--csv-only", action="store_true",
        help="annotations only, no DICOMs: sizes from --size-table, else boxes stay in original pixels and "
             "image sizes are null (for checking the annotation logic, not for training)",
    )
    parser.add_argument(
        "--size-table", type=Path,
        help="CSV with image_id,width,height (or this tool's image_sizes.csv) for --csv-only",
    )
    return parser


def _size(text: str) -> Tuple[int, int]:
    """argparse type of --resize: "1024x1024" -> (1024, 1024)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 1024x1024, got {text!r}")
    return int(parts[0]), int(parts[1])


def main(argv: Optional[List[str]] = None) -> int:
    """Run the conversion; 0 on success (even with skipped items), 2 when it cannot continue."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.size_table and not args.csv_only:
        print("--size-table only applies with --csv-only (image sizes otherwise come from the DICOMs)",
              file=sys.stderr)
        return 2
    options = VindrConversionOptions(
        fusion=args.fusion, iou_threshold=args.iou_thr, min_readers=args.min_readers,
        val_fraction=args.val_fraction, seed=args.seed, long_side=args.long_side or None,
        bit_depth=args.bit_depth, workers=args.workers, csv_only=args.csv_only,
        size_table=args.size_table, layout=args.layout, resize=args.resize, val_ids=args.val_ids,
    )
    try:
        report = convert_vindr(args.source, args.out, options)
    except (ConverterError, ValueError) as exc:
        print(f"prepare_vindr: cannot continue: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"\nWrote {args.out / 'vindr_cxr'} (full report: conversion_report.json there)")
    return 0
