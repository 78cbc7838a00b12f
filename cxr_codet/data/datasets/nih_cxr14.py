"""NIH ChestX-ray14 box subset, registered straight from the official layout (no preparation step).

`<folder>/BBox_List_2017.csv` (header `Image Index,Finding Label,Bbox [x,y,w,h]`, whose last column name
the commas split into four) and `<folder>/images/<Image Index>`. Image sizes are read from the PNG
headers, so downsized copies work; the split is by patient (the first 8 characters of the image name).
The boxes are not exhaustive: an image can show a finding that has no box, so treat missed detections
of unboxed findings with care (precision is a lower bound).

NIH's image-level labels: when `<folder>/Data_Entry_2017_v2020.csv` (or `.csv.gz`, as torchxrayvision ships it)
is present, each record also carries "nih_labels" (the image's '|'-joined `Finding Labels` over NIH's 14 labels,
NLP-mined from the reports, so noisy; [] for `No Finding`), "nih_box_labels" (those labels that are box
findings, as contiguous ids: Infiltration is the box list's Infiltrate) and a "caption"/"captions" composed from
all its NIH labels (a label without a box class is a caption word, not a class); the mapping is
datasets/metadata/nih_cxr14_labels.json. "image_labels" stays the findings of the image's boxes.
"""
import functools
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from ..classes import NIH_CXR14_BBOX_CLASSES
from ..descriptions import GRANULARITIES, compose_caption
from ..box_supervision import BOX_SUPERVISED
from ..text_files import read_utf8_csv

logger = logging.getLogger(__name__)

BBOX_CSV = "BBox_List_2017.csv"
# NIH's image-level label file, first found wins (torchxrayvision ships the gzipped one).
DATA_ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv")
LABELS_FILE = Path(__file__).resolve().parents[3] / "datasets" / "metadata" / "nih_cxr14_labels.json"
IMAGE_FOLDER = "images"
DATASET_FOLDER = "nih_cxr14"
DEFAULT_VAL_FRACTION = 0.2  # of patients
DEFAULT_SEED = 0
# "dev" is a patient-level share of "train" (the rest: "devtrain") for choosing recipes, so that no choice touches "val".
SPLITS = ("train", "val", "all", "devtrain", "dev")
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


@functools.lru_cache(maxsize=None)
def nih_label_mapping() -> Tuple[Dict[str, Tuple[Optional[str], str]], str]:
    """({NIH label: (box finding or None, description name)}, the no-finding label) from LABELS_FILE."""
    with open(LABELS_FILE, encoding="utf-8") as f:
        data = json.load(f)
    mapping = {}
    for label, entry in data["labels"].items():
        box = entry["box_finding"]
        if box is not None and box not in NIH_CXR14_BBOX_CLASSES:
            raise ValueError(f"{LABELS_FILE}: label {label!r} maps to {box!r}, not one of {list(NIH_CXR14_BBOX_CLASSES)}")
        mapping[label] = (box, entry["description"])
    return mapping, data["no_finding"]


def read_data_entry(path: str) -> Dict[str, List[str]]:
    """NIH's `Data_Entry_2017*.csv(.gz)` as {Image Index: sorted NIH labels} ([] for `No Finding`); errors name
    the file, the line and the label."""
    mapping, no_finding = nih_label_mapping()
    try:
        table = read_utf8_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise ValueError(f"{path}: cannot read as a UTF-8 CSV ({type(e).__name__}: {e})") from e
    missing = [c for c in ("Image Index", "Finding Labels") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing} (NIH's layout starts 'Image Index,Finding Labels,...')")
    labels: Dict[str, List[str]] = {}
    lines: Dict[str, int] = {}
    for line, (image, text) in enumerate(zip(table["Image Index"], table["Finding Labels"]), start=2):
        names = [t.strip() for t in text.split("|") if t.strip()]
        unknown = [n for n in names if n not in mapping and n != no_finding]
        if unknown or not names:
            raise ValueError(f"{path}: line {line}: Finding Labels {text!r} has unknown label(s) {unknown}; expected "
                             f"'{no_finding}' or '|'-joined labels of {sorted(mapping)}")
        if no_finding in names and len(names) > 1:
            raise ValueError(f"{path}: line {line}: '{no_finding}' beside other labels in {text!r}")
        if image in labels:
            raise ValueError(f"{path}: line {line}: image {image!r} is listed again (first on line {lines[image]})")
        labels[image], lines[image] = sorted(n for n in names if n != no_finding), line
    return labels


def find_data_entry(folder: str) -> Optional[str]:
    """The first of DATA_ENTRY_FILES in `folder`, or None."""
    for name in DATA_ENTRY_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def image_level_fields(nih_labels: Sequence[str], index: int) -> dict:
    """The record fields NIH's labels give an image: nih_labels, nih_box_labels (contiguous ids), caption(s)."""
    mapping, _ = nih_label_mapping()
    boxes = sorted({NIH_CXR14_BBOX_CLASSES.index(mapping[n][0]) for n in nih_labels if mapping[n][0] is not None})
    described = [mapping[n][1] for n in nih_labels]
    return {
        "nih_labels": list(nih_labels),
        "nih_box_labels": boxes,
        "caption": compose_caption(described, "unelaborate", index),
        "captions": {g: compose_caption(described, g, index) for g in GRANULARITIES},
    }


def load_nih_cxr14_bbox(csv_file: str, image_root: str) -> List[dict]:
    """detectron2 dicts, one per image with its boxes (XYWH_ABS, clipped to the image as read from disk).

    Images missing from `image_root` and boxes with no area inside the image are skipped, and boxes
    reaching beyond the image clipped, each counted in a warning.
    """
    table = read_bbox_csv(csv_file)
    data_entry_file = find_data_entry(os.path.dirname(csv_file))
    nih_labels = read_data_entry(data_entry_file) if data_entry_file else None
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
        record = {
            "file_name": file_name,
            "image_id": number,  # position in the sorted box list: stable, and an int as COCO tools expect
            "image_index": image_index,
            "height": height,
            "width": width,
            "patient_id": image_index[:_PATIENT_ID_LENGTH],
            # every finding of the box list, also of skipped boxes: an image never becomes "No finding" by a skip
            "image_labels": sorted({NIH_CXR14_BBOX_CLASSES.index(finding) for finding in rows["finding"]}),
            "annotations": annotations,
        }
        if not annotations:  # findings without a box left: image-level only (data/box_supervision.py)
            record[BOX_SUPERVISED] = False
            issues.setdefault("image whose every box was skipped (kept with its findings, image-level only)",
                              []).append(image_index)
        if nih_labels is not None:
            if image_index in nih_labels:
                record.update(image_level_fields(nih_labels[image_index], number))
            else:
                issues.setdefault(f"image not in {os.path.basename(data_entry_file)} (no NIH labels)", []).append(image_index)
        records.append(record)
    for reason, items in issues.items():
        logger.warning(f"{csv_file}: {len(items)} x {reason} (e.g. {', '.join(items[:3])})")
    num_boxes = sum(len(r["annotations"]) for r in records)
    labelled = f"; NIH image-level labels from {data_entry_file}" if data_entry_file else ""
    logger.info(f"Loaded {len(records)} images with {num_boxes} boxes from {csv_file}{labelled}")
    return records


def split_by_patient(records: Sequence[dict], split: str, val_fraction: float, seed: int) -> List[dict]:
    """The records of `split` (one of SPLITS); a seeded share of patients goes to val, and the same share of
    train's patients (seed + 1) to dev, the rest of train being devtrain."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if split == "all":
        return list(records)
    if split in ("devtrain", "dev"):
        train = split_by_patient(records, "train", val_fraction, seed)
        return split_by_patient(train, "val" if split == "dev" else "train", val_fraction, seed + 1)
    patients = sorted({r["patient_id"] for r in records})
    shuffled = np.random.default_rng(seed).permutation(len(patients))
    n_val = int(len(patients) * val_fraction + 0.5)
    val_patients = {patients[i] for i in shuffled[:n_val]}
    return [r for r in records if (r["patient_id"] in val_patients) == (split == "val")]


def with_nih_image_labels(records: Sequence[dict], csv_file: str) -> List[dict]:
    """Copies of `records` whose "image_labels" are NIH's own labels mapped to the box findings ("nih_box_labels")
    instead of their boxes' findings; boxes unchanged. Refuses records without NIH labels, naming the file."""
    missing = [r["image_index"] for r in records if "nih_box_labels" not in r]
    if missing:
        raise ValueError(
            f"{len(missing)} image(s) of {csv_file} have no NIH image-level labels (e.g. {missing[:3]}): the *_nih_labels "
            f"datasets need {DATA_ENTRY_FILES[0]} (or {DATA_ENTRY_FILES[1]}) beside it, listing every image"
        )
    return [dict(r, image_labels=list(r["nih_box_labels"])) for r in records]


def register_nih_cxr14_bbox(
    folder: str, prefix: str = "nih_cxr14_bbox", val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED
) -> List[str]:
    """Register `<prefix>_<split>` for each of SPLITS from `folder` (BBox_List_2017.csv + images/), and
    `<prefix>_<split>_nih_labels`, the same images whose "image_labels" are NIH's NLP-mined labels (mapped to the 8
    box findings) rather than their boxes' findings; returns the names. Loading is lazy; the patient splits are
    seeded, so train and val (devtrain and dev) never share a patient.
    """
    csv_file = os.path.join(folder, BBOX_CSV)
    image_root = os.path.join(folder, IMAGE_FOLDER)
    names = []
    for split in SPLITS:
        def load(split=split):
            return split_by_patient(load_nih_cxr14_bbox(csv_file, image_root), split, val_fraction, seed)

        for name, loader, labels in ((f"{prefix}_{split}", load, "the findings of its boxes"),
                                     (f"{prefix}_{split}_nih_labels", lambda load=load: with_nih_image_labels(load(), csv_file),
                                      "NIH's Finding Labels (NLP-mined), mapped to the box findings")):
            DatasetCatalog.register(name, loader)
            MetadataCatalog.get(name).set(
                thing_classes=list(NIH_CXR14_BBOX_CLASSES),
                evaluator_type="coco",
                image_root=image_root,
                csv_file=csv_file,
                split_seed=seed,
                val_fraction=val_fraction,
                boxes_exhaustive=False,
                image_labels_source=labels,
            )
            names.append(name)
    return names


def register_all_nih_cxr14(root: str) -> List[str]:
    """Register nih_cxr14_bbox_<split> and nih_cxr14_bbox_<split>_nih_labels for each of SPLITS from
    `<root>/nih_cxr14/` (lazily: nothing is read now)."""
    return register_nih_cxr14_bbox(os.path.join(root, DATASET_FOLDER))
