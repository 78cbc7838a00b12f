"""NIH ChestX-ray14 box subset, registered straight from the official layout (no preparation step).

`<folder>/BBox_List_2017.csv` (header `Image Index,Finding Label,Bbox [x,y,w,h]`, whose last column name
the commas split into four) and `<folder>/images/<Image Index>`. Image sizes are read from the PNG
headers, so downsized copies work; the split is by patient (the first 8 characters of the image name).
The boxes are not exhaustive: an image can show a finding that has no box, so treat missed detections
of unboxed findings with care (precision is a lower bound).
"""
import logging
import os
from typing import Dict, List, Sequence

import numpy as np
import pandas as pd
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from ..classes import NIH_CXR14_BBOX_CLASSES
from ..samplers import BOX_SUPERVISED
from ..text_files import read_utf8_csv

logger = logging.getLogger(__name__)

BBOX_CSV = "BBox_List_2017.csv"
IMAGE_FOLDER = "images"
DATASET_FOLDER = "nih_cxr14"
DEFAULT_VAL_FRACTION = 0.2  # of patients
DEFAULT_SEED = 0
SPLITS = ("train", "val", "all")
_COLUMNS = ["image", "finding", "x", "y", "w", "h"]
_PATIENT_ID_LENGTH = 8


def read_bbox_csv(csv_file: str) -> pd.DataFrame:
    """The box list as columns image, finding, x, y, w, h (+ line); checks the layout, names and numbers."""
    if not os.path.isfile(csv_file):
        raise FileNotFoundError(
            f"NIH ChestX-ray14 box list {csv_file} does not exist; put the official BBox_List_2017.csv and "
            f"the images/ folder under $DETECTRON2_DATASETS/{DATASET_FOLDER}/"
        )
    try:
        table = read_utf8_csv(csv_file, header=None, skiprows=1, dtype=str, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise ValueError(f"{csv_file}: cannot read as a UTF-8 CSV ({type(e).__name__}: {e})") from e
    table = table.dropna(axis=1, how="all")  # the official file ends each row with empty columns
    if table.shape[1] != len(_COLUMNS):
        raise ValueError(
            f"{csv_file}: expected 6 columns (Image Index, Finding Label, Bbox x, y, w, h); found {table.shape[1]}"
        )
    table.columns = _COLUMNS
    table["line"] = np.arange(len(table)) + 2
    unknown = ~table["finding"].isin(NIH_CXR14_BBOX_CLASSES)
    if unknown.any():
        row = table[unknown].iloc[0]
        raise ValueError(
            f"{csv_file}: line {row['line']}: unknown finding {row['finding']!r}; "
            f"expected one of {list(NIH_CXR14_BBOX_CLASSES)}"
        )
    coords = table[["x", "y", "w", "h"]].apply(pd.to_numeric, errors="coerce")
    bad = coords.isna().any(axis=1)
    if bad.any():
        row = table[bad].iloc[0]
        raise ValueError(f"{csv_file}: line {row['line']}: box {list(row[['x', 'y', 'w', 'h']])} is not four numbers")
    table[["x", "y", "w", "h"]] = coords
    return table


def load_nih_cxr14_bbox(csv_file: str, image_root: str) -> List[dict]:
    """detectron2 dicts, one per image with its boxes (XYWH_ABS, clipped to the image as read from disk).

    Images missing from `image_root` and boxes with no area inside the image are skipped, and boxes
    reaching beyond the image clipped, each counted in a warning.
    """
    table = read_bbox_csv(csv_file)
    issues: Dict[str, List[str]] = {}
    records = []
    for number, (image_index, rows) in enumerate(table.groupby("image", sort=True)):
        file_name = os.path.join(image_root, image_index)
        try:
            with Image.open(file_name) as image:
                width, height = image.size
        except (FileNotFoundError, OSError):
            issues.setdefault("image missing or unreadable (skipped with its boxes)", []).append(file_name)
            continue
        annotations = []
        for row in rows.itertuples(index=False):
            x0, y0 = max(row.x, 0.0), max(row.y, 0.0)
            x1, y1 = min(row.x + row.w, width), min(row.y + row.h, height)
            if x1 <= x0 or y1 <= y0:
                issues.setdefault("box with no area inside the image (skipped)", []).append(f"line {row.line}")
                continue
            if (x0, y0, x1, y1) != (row.x, row.y, row.x + row.w, row.y + row.h):
                issues.setdefault("box clipped to the image (kept)", []).append(f"line {row.line}")
            annotations.append({
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": NIH_CXR14_BBOX_CLASSES.index(row.finding),
                "iscrowd": 0,
            })
        records.append({
            "file_name": file_name,
            "image_id": number,  # position in the sorted box list: stable, and an int as COCO tools expect
            "image_index": image_index,
            "height": height,
            "width": width,
            "patient_id": image_index[:_PATIENT_ID_LENGTH],
            # every finding of the box list, also of skipped boxes: an image never becomes "No finding" by a skip
            "image_labels": sorted({NIH_CXR14_BBOX_CLASSES.index(finding) for finding in rows["finding"]}),
            "annotations": annotations,
        })
        if not annotations:  # findings without a box left: image-level only (data/box_supervision.py)
            records[-1][BOX_SUPERVISED] = False
            issues.setdefault("image whose every box was skipped (kept with its findings, image-level only)",
                              []).append(image_index)
    for reason, items in issues.items():
        logger.warning(f"{csv_file}: {len(items)} x {reason} (e.g. {', '.join(items[:3])})")
    num_boxes = sum(len(r["annotations"]) for r in records)
    logger.info(f"Loaded {len(records)} images with {num_boxes} boxes from {csv_file}")
    return records


def split_by_patient(records: Sequence[dict], split: str, val_fraction: float, seed: int) -> List[dict]:
    """The records of `split` ("train", "val" or "all"); a seeded share of patients goes to val."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if split == "all":
        return list(records)
    patients = sorted({r["patient_id"] for r in records})
    shuffled = np.random.default_rng(seed).permutation(len(patients))
    n_val = int(len(patients) * val_fraction + 0.5)
    val_patients = {patients[i] for i in shuffled[:n_val]}
    return [r for r in records if (r["patient_id"] in val_patients) == (split == "val")]


def register_nih_cxr14_bbox(
    folder: str, prefix: str = "nih_cxr14_bbox", val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED
) -> List[str]:
    """Register `<prefix>_{train,val,all}` from `folder` (BBox_List_2017.csv + images/); returns the names.

    Loading is lazy; the patient split is seeded, so train and val never share a patient.
    """
    csv_file = os.path.join(folder, BBOX_CSV)
    image_root = os.path.join(folder, IMAGE_FOLDER)
    names = []
    for split in SPLITS:
        name = f"{prefix}_{split}"
        DatasetCatalog.register(
            name,
            lambda split=split: split_by_patient(load_nih_cxr14_bbox(csv_file, image_root), split, val_fraction, seed),
        )
        MetadataCatalog.get(name).set(
            thing_classes=list(NIH_CXR14_BBOX_CLASSES),
            evaluator_type="coco",
            image_root=image_root,
            csv_file=csv_file,
            split_seed=seed,
            val_fraction=val_fraction,
            boxes_exhaustive=False,
        )
        names.append(name)
    return names


def register_all_nih_cxr14(root: str) -> List[str]:
    """Register nih_cxr14_bbox_{train,val,all} from `<root>/nih_cxr14/` (lazily: nothing is read now)."""
    return register_nih_cxr14_bbox(os.path.join(root, DATASET_FOLDER))
