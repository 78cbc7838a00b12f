"""MS-CXR phrase grounding (for the grounding head): one sample per (image, phrase) with all its boxes.

The CSV has one row per box (`dicom_id, category_name, label_text, path, x, y, w, h, image_width,
image_height`, optional `split`); rows of the same image and phrase become one sample whose target
region is the union of its boxes (`phrase_region_mask`; overlaps count once). Boxes are given in the
original DICOM's pixels and are rescaled to the size of the image actually on disk (MIMIC-CXR-JPG or a
downsized copy). Layout: `<root>/ms_cxr/MS_CXR_Local_Alignment_v*.csv` and `<root>/ms_cxr/images/`,
the MIMIC-CXR-JPG folder that holds the CSV's `path`s (`files/p1x/...`).
"""
import glob
import logging
import os
from typing import List, Optional

import numpy as np
import pandas as pd
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from ..text_files import read_utf8_csv

logger = logging.getLogger(__name__)

# MS-CXR's 8 findings, ids 0..7 (matched case-insensitively: the release writes "Pleural Effusion").
MS_CXR_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Lung Opacity",
    "Pleural effusion",
    "Pneumonia",
    "Pneumothorax",
)
REQUIRED_COLUMNS = [
    "dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height"
]
NUMERIC_COLUMNS = ["x", "y", "w", "h", "image_width", "image_height"]
DATASET_FOLDER = "ms_cxr"
CSV_PATTERN = "MS_CXR_Local_Alignment_v*.csv"
IMAGE_FOLDER = "images"
SPLITS = ("train", "val", "test")
# Box AP per phrase works with the COCO evaluator; "task" tells grounding code what the samples are.
_METADATA = dict(thing_classes=list(MS_CXR_CLASSES), evaluator_type="coco", task="phrase_grounding")


def read_ms_cxr_csv(csv_file: str) -> pd.DataFrame:
    """The CSV with a `line` column, canonical category names and numeric box columns; checks the layout."""
    if not os.path.isfile(csv_file):
        raise FileNotFoundError(f"MS-CXR CSV {csv_file} does not exist")
    try:
        table = read_utf8_csv(csv_file, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise ValueError(f"{csv_file}: cannot read as a UTF-8 CSV ({type(e).__name__}: {e})") from e
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{csv_file}: missing column(s) {missing}; found {list(table.columns)}")
    table["line"] = np.arange(len(table)) + 2
    lookup = {name.lower(): name for name in MS_CXR_CLASSES}
    canonical = table["category_name"].str.strip().str.lower().map(lookup)
    if canonical.isna().any():
        row = table[canonical.isna()].iloc[0]
        raise ValueError(
            f"{csv_file}: line {row['line']}: unknown category_name {row['category_name']!r}; "
            f"expected one of {list(MS_CXR_CLASSES)}"
        )
    table["category_name"] = canonical
    numbers = table[NUMERIC_COLUMNS].apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna().any(axis=1) | (numbers[["w", "h", "image_width", "image_height"]] <= 0).any(axis=1)
    if bad.any():
        row = table[bad].iloc[0]
        raise ValueError(
            f"{csv_file}: line {row['line']}: x, y, w, h, image_width, image_height must be numbers with "
            f"positive sizes; got {list(row[NUMERIC_COLUMNS])}"
        )
    table[NUMERIC_COLUMNS] = numbers
    return table


def load_ms_cxr(csv_file: str, image_root: str, split: Optional[str] = None) -> List[dict]:
    """detectron2 dicts, one per (image, phrase): "phrase", "category_name" and every box of the phrase
    (XYWH_ABS, rescaled to the image on disk). `split` keeps only rows of that `split` value.

    Samples whose image is missing are skipped, and boxes clipped to the image, each counted in a warning.
    """
    table = read_ms_cxr_csv(csv_file)
    if split is not None:
        if "split" not in table.columns:
            raise ValueError(
                f"{csv_file}: no 'split' column, so split {split!r} is undefined; register the whole file "
                "with register_ms_cxr(name, csv_file, image_root)"
            )
        table = table[table["split"].str.strip() == split]
    missing_images, clipped, records = [], 0, []
    groups = table.groupby(["dicom_id", "category_name", "label_text"], sort=True)
    for number, ((dicom_id, category_name, phrase), rows) in enumerate(groups):
        file_name = os.path.join(image_root, rows["path"].iloc[0])
        try:
            with Image.open(file_name) as image:
                width, height = image.size
        except (FileNotFoundError, OSError):
            missing_images.append(file_name)
            continue
        if rows[["image_width", "image_height"]].nunique().max() > 1:
            raise ValueError(f"{csv_file}: lines {list(rows['line'])} give one image different sizes")
        scale_x = width / rows["image_width"].iloc[0]
        scale_y = height / rows["image_height"].iloc[0]
        annotations = []
        for row in rows.itertuples(index=False):
            x0, y0 = row.x * scale_x, row.y * scale_y
            x1, y1 = x0 + row.w * scale_x, y0 + row.h * scale_y
            cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)
            clipped += (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)
            annotations.append({
                "bbox": [cx0, cy0, cx1 - cx0, cy1 - cy0],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": MS_CXR_CLASSES.index(category_name),
                "iscrowd": 0,
            })
        records.append({
            "file_name": file_name,
            "image_id": number,
            "dicom_id": dicom_id,
            "height": height,
            "width": width,
            "phrase": phrase,
            "category_name": category_name,
            "annotations": annotations,
        })
    if missing_images:
        logger.warning(
            f"{csv_file}: skipped {len(missing_images)} (image, phrase) samples whose image is missing or "
            f"unreadable (e.g. {', '.join(missing_images[:3])})"
        )
    if clipped:
        logger.warning(f"{csv_file}: clipped {clipped} boxes reaching beyond their image")
    logger.info(f"Loaded {len(records)} (image, phrase) samples from {csv_file}")
    return records


def phrase_region_mask(record: dict) -> np.ndarray:
    """Boolean H x W mask of the union of a sample's boxes (a pixel covered by two boxes counts once)."""
    mask = np.zeros((record["height"], record["width"]), dtype=bool)
    for annotation in record["annotations"]:
        x, y, w, h = annotation["bbox"]
        mask[int(np.floor(y)):int(np.ceil(y + h)), int(np.floor(x)):int(np.ceil(x + w))] = True
    return mask


def register_ms_cxr(name: str, csv_file: str, image_root: str, split: Optional[str] = None) -> None:
    """Register dataset `name` (lazy) from an MS-CXR CSV, optionally one `split` of it."""
    DatasetCatalog.register(name, lambda: load_ms_cxr(csv_file, image_root, split))
    MetadataCatalog.get(name).set(csv_file=csv_file, image_root=image_root, **_METADATA)


def find_ms_cxr_csv(folder: str) -> str:
    """The newest `MS_CXR_Local_Alignment_v*.csv` in `folder`; a clear error when there is none."""
    candidates = sorted(glob.glob(os.path.join(folder, CSV_PATTERN)))
    if not candidates:
        raise FileNotFoundError(
            f"no MS-CXR CSV ({CSV_PATTERN}) in {folder}; download MS-CXR from PhysioNet and put its CSV there, "
            f"with the MIMIC-CXR-JPG folder (holding files/p1x/...) at {os.path.join(folder, IMAGE_FOLDER)}"
        )
    return candidates[-1]


def register_all_ms_cxr(root: str) -> List[str]:
    """Register ms_cxr_{train,val,test} from `<root>/ms_cxr/` lazily: the CSV is looked for at first use."""
    folder = os.path.join(root, DATASET_FOLDER)
    image_root = os.path.join(folder, IMAGE_FOLDER)
    names = []
    for split in SPLITS:
        name = f"ms_cxr_{split}"
        DatasetCatalog.register(name, lambda split=split: load_ms_cxr(find_ms_cxr_csv(folder), image_root, split))
        MetadataCatalog.get(name).set(image_root=image_root, **_METADATA)
        names.append(name)
    return names
