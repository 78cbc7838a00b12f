"""Read a VinDr-CXR release, PhysioNet or Kaggle layout, into one validated table of reader boxes.

Both layouts become the same table: one row per reader box of one of the 14 findings, with the CSV file
and line it came from. Rows that cannot be used are recorded in the report with their file and line.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from ..classes import NO_FINDING, VINDR_CXR_CLASSES
from ..text_files import TextEncodingError, read_utf8_csv
from .errors import ConverterError
from .report import ConversionReport

PHYSIONET = "physionet"
KAGGLE = "kaggle"
LAYOUTS = (PHYSIONET, KAGGLE)

# The other 8 of VinDr-CXR's 22 local labels (PhysioNet release): real findings, but not detection classes.
VINDR_OTHER_LOCAL_LABELS = (
    "Clavicle fracture",
    "Edema",
    "Emphysema",
    "Enlarged PA",
    "Lung cavity",
    "Lung cyst",
    "Mediastinal shift",
    "Rib fracture",
)
NO_FINDING_ID = len(VINDR_CXR_CLASSES)  # class_id of "No finding" in the Kaggle CSV
BOX_COLUMNS = ["x_min", "y_min", "x_max", "y_max"]
CONSENSUS_READER = "consensus"


@dataclass(frozen=True)
class VindrRelease:
    """Where one release keeps its files; dicts are keyed by source split ("train", "test")."""

    layout: str
    root: Path
    annotation_files: Dict[str, Path]
    dicom_dirs: Dict[str, Path]
    image_label_files: Dict[str, Path]
    source_tree: Path  # never written to: the release folder, or the DICOM folder beside a bare CSV


REJECTED_COLUMNS = ["split", "image_id", "category_id", "file", "row"]
HEADER_LINE = "header line repeated inside the file"


@dataclass
class ReaderBoxes:
    """The usable content of a release: reader boxes and every image id, per source split.

    `rejected` keeps the image and (when known) the finding of every rejected row, so that an image that lost
    rows keeps the findings it is known to have instead of becoming a "No finding" image.
    """

    boxes: pd.DataFrame  # split, image_id, category_id, rad_id, x_min, y_min, x_max, y_max, file, row
    image_ids: Dict[str, List[str]]
    release_labels: Dict[str, Dict[str, List[str]]]  # split -> image_id -> image-level labels as released
    rejected: pd.DataFrame  # REJECTED_COLUMNS; category_id is NaN when the row's finding is unknown
    no_finding_images: Dict[str, set]  # split -> images with at least one "No finding" row


def locate_release(source: Path, layout: str = "auto") -> VindrRelease:
    """Find the annotation CSVs and DICOM folders under `source` (a release folder, or a Kaggle CSV file)."""
    source = Path(source)
    if not source.exists():
        raise ConverterError(f"{source}: no such file or folder")
    found = _physionet_release(source) if layout in ("auto", PHYSIONET) else None
    if found is None and layout in ("auto", KAGGLE):
        found = _kaggle_release(source)
    if found is None:
        raise ConverterError(
            f"{source}: not a VinDr-CXR release in the {layout} layout. Expected either "
            "annotations/annotations_train.csv (PhysioNet) or train.csv / train.csv.gz (Kaggle) in it, "
            "or the path of a Kaggle-format CSV file"
        )
    return found


def _physionet_release(source: Path) -> Optional[VindrRelease]:
    annotations = source / "annotations"
    if not (source.is_dir() and (annotations / "annotations_train.csv").is_file()):
        return None
    splits = [s for s in ("train", "test") if (annotations / f"annotations_{s}.csv").is_file()]
    return VindrRelease(
        layout=PHYSIONET,
        root=source,
        annotation_files={s: annotations / f"annotations_{s}.csv" for s in splits},
        dicom_dirs={s: source / s for s in splits},
        image_label_files={
            s: annotations / f"image_labels_{s}.csv"
            for s in splits
            if (annotations / f"image_labels_{s}.csv").is_file()
        },
        source_tree=source,
    )


def _kaggle_release(source: Path) -> Optional[VindrRelease]:
    if source.is_file():
        csv, root, tree = source, source.parent, source.parent / "train"
    else:
        candidates = [source / name for name in ("train.csv", "train.csv.gz") if (source / name).is_file()]
        if not candidates:
            return None
        csv, root, tree = candidates[0], source, source
    return VindrRelease(
        layout=KAGGLE, root=root, annotation_files={"train": csv}, dicom_dirs={"train": root / "train"},
        image_label_files={}, source_tree=tree,
    )


def read_reader_boxes(release: VindrRelease, report: ConversionReport) -> ReaderBoxes:
    """Read and validate every annotation CSV of `release`; unusable rows go to `report` with the reason."""
    tables, image_ids, rejected, no_finding = [], {}, [], {}
    for split, path in release.annotation_files.items():
        table, ids, split_rejected, no_finding[split] = _read_annotation_csv(path, split, report)
        tables.append(table)
        image_ids[split] = ids
        rejected.append(split_rejected)
    release_labels = {
        split: read_release_image_labels(path, set(image_ids[split]), report)
        for split, path in release.image_label_files.items()
    }
    return ReaderBoxes(
        pd.concat(tables, ignore_index=True), image_ids, release_labels, pd.concat(rejected, ignore_index=True),
        no_finding,
    )


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        table = read_utf8_csv(path, dtype=str, skipinitialspace=True)
    except TextEncodingError as exc:
        raise ConverterError(str(exc)) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError) as exc:
        raise ConverterError(f"{path}: cannot read as CSV ({exc})") from exc
    original = [str(c).strip() for c in table.columns]
    table.columns = [c.lower().replace(" ", "_") for c in original]
    table.attrs["header"] = dict(zip(table.columns, original))  # the release's own spelling
    table["file"] = str(path)
    table["row"] = np.arange(len(table)) + 2  # line number in the file: 1-based, after the header
    return table


def _require_columns(table: pd.DataFrame, path: Path, required: List[str]) -> None:
    missing = [c for c in required if c not in table.columns]
    if missing:
        found = [c for c in table.columns if c not in ("file", "row")]
        raise ConverterError(f"{path}: missing column(s) {missing}; found {found}")


def _read_annotation_csv(path: Path, split: str, report: ConversionReport):
    table = _read_csv(path)
    _require_columns(table, path, ["image_id", "class_name"] + BOX_COLUMNS)
    if "rad_id" not in table.columns:
        if split == "train":
            raise ConverterError(
                f"{path}: missing column 'rad_id'; training annotations need the reader of each box to fuse them"
            )
        table["rad_id"] = CONSENSUS_READER  # the official test set is one 5-reader consensus
    table["image_id"] = table["image_id"].str.strip()
    rejected = []
    table = _drop(table, table["image_id"].isna() | (table["image_id"] == ""), "missing image_id", report)
    table = _drop(table, _header_lines(table), HEADER_LINE, report)
    image_ids = sorted(table["image_id"].unique())

    table["category_id"] = _category_ids(table, report)
    rejected.append(table[table["category_id"].isna()])
    table = table[table["category_id"].notna()]
    table = _drop(table, table["rad_id"].isna(), "missing rad_id", report, rejected)
    no_finding = set(table.loc[table["category_id"] == NO_FINDING_ID, "image_id"])
    table = table[table["category_id"] != NO_FINDING_ID]  # "No finding" rows register the image only

    for column in BOX_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    missing = table[BOX_COLUMNS].isna().any(axis=1)
    table = _drop(table, missing, "missing or non-numeric box coordinates", report, rejected)
    infinite = ~np.isfinite(table[BOX_COLUMNS].to_numpy(np.float64)).all(axis=1)
    table = _drop(table, pd.Series(infinite, index=table.index), "infinite box coordinates", report, rejected)
    empty = (table["x_max"] <= table["x_min"]) | (table["y_max"] <= table["y_min"])
    table = _drop(table, empty, "empty box (x_max <= x_min or y_max <= y_min)", report, rejected)

    table = table.assign(split=split, category_id=table["category_id"].astype(np.int64))
    columns = ["split", "image_id", "category_id", "rad_id"] + BOX_COLUMNS + ["file", "row"]
    rejected = pd.concat([r.assign(split=split)[REJECTED_COLUMNS] for r in rejected], ignore_index=True)
    return table[columns].reset_index(drop=True), image_ids, rejected, no_finding


def _header_lines(table: pd.DataFrame) -> pd.Series:
    """Rows that repeat the header (e.g. files concatenated with their headers): not images, not boxes."""
    header = table.attrs["header"]
    return (table["image_id"] == header["image_id"]) & (table["class_name"].str.strip() == header["class_name"])


def _category_ids(table: pd.DataFrame, report: ConversionReport) -> pd.Series:
    """Contiguous id of each row's finding (NO_FINDING_ID for "No finding"); NaN, reported, when unusable."""
    lookup = {name.lower(): i for i, name in enumerate(VINDR_CXR_CLASSES)}
    lookup[NO_FINDING.lower()] = NO_FINDING_ID
    other = {name.lower() for name in VINDR_OTHER_LOCAL_LABELS}
    names = table["class_name"].fillna("").str.strip()
    ids = names.str.lower().map(lookup)
    for name in sorted(names[ids.isna()].unique()):
        rows = table[ids.isna() & (names == name)]
        if name.lower() in other:
            reason = f"'{name}' is a VinDr-CXR local label outside the {len(VINDR_CXR_CLASSES)} detection findings"
        else:
            reason = f"unknown finding name '{name}'"
        report.skip_rows(rows, reason)
    if "class_id" in table.columns:
        given = pd.to_numeric(table["class_id"], errors="coerce")
        mismatch = ids.notna() & (given != ids)
        for (name, class_id), rows in table[mismatch].groupby([names[mismatch], table["class_id"][mismatch]]):
            report.skip_rows(rows, f"class_id {class_id} does not match class_name '{name}'")
        ids = ids.mask(mismatch)
    return ids


def _drop(table: pd.DataFrame, mask: pd.Series, reason: str, report: ConversionReport,
          rejected: Optional[list] = None) -> pd.DataFrame:
    """`table` without the rows of `mask`, which are reported (and appended to `rejected` when given)."""
    if mask.any():
        report.skip_rows(table[mask], reason)
        if rejected is not None:
            rejected.append(table[mask])
    return table[~mask]


def read_release_image_labels(path: Path, known_ids: set, report: ConversionReport) -> Dict[str, List[str]]:
    """PhysioNet `image_labels_<split>.csv`: image id -> labels (local and global) any reader marked 1."""
    table = _read_csv(path)
    _require_columns(table, path, ["image_id"])
    label_columns = [c for c in table.columns if c not in ("image_id", "rad_id", "file", "row")]
    names = table.attrs["header"]
    unknown = ~table["image_id"].isin(known_ids)
    if unknown.any():
        report.skip_rows(table[unknown], f"image listed in {path.name} has no rows in the annotations CSV")
    table = table[~unknown]
    values = table[label_columns].apply(pd.to_numeric, errors="coerce").fillna(0) > 0
    positive = values.groupby(table["image_id"]).any()
    return {
        image_id: [names[c] for c in label_columns if flags[c]]
        for image_id, flags in positive.iterrows()
    }
