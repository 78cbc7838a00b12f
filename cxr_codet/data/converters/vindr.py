"""VinDr-CXR release -> `<out>/vindr_cxr/{images,annotations}`: the layout `vindr_cxr_{train,val,test}` read.

Stages: read the release (either layout), convert DICOMs to PNG (or, in CSV-only mode, take sizes from
a size table or keep original pixels), clip boxes to the image, fuse the readers' boxes, scale boxes to
the PNG, split the training images 94:6 (seeded, stratified by finding), and write COCO JSON with
image-level labels and captions at both granularities. The official test set is the 5-reader consensus
and keeps its boxes as released.
"""
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from ..classes import VINDR_CXR_CLASSES
from ..descriptions import compose_caption
from ..dicom import DEFAULT_LONG_SIDE, resized_size
from ...numeric_args import MIN_LONG_SIDE, long_side_problem, number_problem, problems_of
from ..text_files import TextEncodingError, read_utf8_csv
from .box_fusion import BOX_COLUMNS, DEFAULT_IOU_THRESHOLD, DEFAULT_MIN_READERS, fuse_reader_boxes
from .errors import ConverterError
from .images import FAILED, ImageJob, convert_images, ensure_outside_source
from .report import ConversionReport
from .splits import read_image_ids, split_by_ids, split_train_val
from .vindr_release import (
    KAGGLE,
    REJECTED_COLUMNS,
    ReaderBoxes,
    VindrRelease,
    locate_release,
    read_reader_boxes,
)

logger = logging.getLogger(__name__)

DATASET_FOLDER = "vindr_cxr"
DEFAULT_VAL_FRACTION = 0.06  # the paper's 94:6 split: 14,100 train / 900 val of 15,000
DICOM_SUFFIXES = (".dicom", ".dcm")
SIZE_COLUMNS = ["original_width", "original_height", "width", "height"]
# CSV-only output without image sizes cannot be loaded for training, so it never lands in annotations/.
UNSIZED_ANNOTATIONS_FOLDER = "annotations_without_sizes"
# Output split -> source split of the release it comes from.
OUTPUT_SPLITS = {"train": "train", "val": "train", "test": "test"}


@dataclass
class VindrConversionOptions:
    """Every choice the conversion makes; the defaults reproduce the paper's setting with fused boxes."""

    fusion: str = "wbf"  # keep_all | wbf | agreement (see box_fusion.FUSION_STRATEGIES)
    iou_threshold: float = DEFAULT_IOU_THRESHOLD  # boxes of one finding overlapping this much are one lesion
    min_readers: int = DEFAULT_MIN_READERS  # agreement: readers needed to keep a fused box
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = 0
    long_side: Optional[int] = DEFAULT_LONG_SIDE  # shrink PNGs to this long side; None/0 keeps the original
    resize: Optional[Tuple[int, int]] = None  # (width, height): resize every PNG to exactly this size instead
    val_ids: Optional[Path] = None  # file of the val split's image ids (an imported split) instead of a seeded one
    bit_depth: int = 8
    workers: int = 1
    csv_only: bool = False  # no DICOMs: annotations only (sizes from `size_table`, else original pixels)
    size_table: Optional[Path] = None
    layout: str = "auto"


def output_size(options: VindrConversionOptions):
    """What the image stage shrinks to: --resize's exact (width, height), else --long-side (None: keep the size)."""
    return tuple(options.resize) if options.resize is not None else options.long_side


def _val_ids_problem(path: Optional[Path]) -> Optional[str]:
    """Why --val-ids cannot be read, or None."""
    if path is None:
        return None
    try:
        read_image_ids(path)
    except OSError as e:
        return f"--val-ids {path}: cannot read it ({e.strerror or e})"
    except (ValueError, UnicodeDecodeError) as e:
        return f"--val-ids {e}"
    return None


def check_options(options: VindrConversionOptions) -> None:
    """Refuse unusable numbers before any work (a ValueError naming tools/prepare_vindr.py's arguments): a negative
    --long-side once wrote every image as a 1x1 PNG, and --val-fraction 1.5 failed only after all DICOMs."""
    problems = problems_of([
        long_side_problem("--long-side", options.long_side, zero="keep the DICOM size"),
        number_problem("--val-fraction", options.val_fraction, low=0, high=1, low_open=True, high_open=True),
        number_problem("--iou-thr", options.iou_threshold, low=0, high=1, low_open=True),
        number_problem("--min-readers", options.min_readers, low=1),
        number_problem("--workers", options.workers, low=1),
        number_problem("--seed", options.seed, low=0),
        *[number_problem("--resize", side, low=MIN_LONG_SIDE) for side in (options.resize or ())],
        _val_ids_problem(options.val_ids),
    ])
    if problems:
        raise ValueError("; ".join(problems))


def convert_vindr(source: Path, out_root: Path, options: VindrConversionOptions) -> ConversionReport:
    """Convert the release at `source` into `out_root/vindr_cxr`; returns (and writes) the report."""
    check_options(options)
    release = locate_release(Path(source), options.layout)
    dataset_dir = Path(out_root) / DATASET_FOLDER
    ensure_outside_source(dataset_dir, release.source_tree)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    report = ConversionReport(VINDR_CXR_CLASSES, settings={"source": str(source), "layout": release.layout, **settings})
    logger.info(f"Reading the {release.layout} release at {release.root}")
    readers = read_reader_boxes(release, report)
    if options.csv_only:
        sizes = read_size_table(options.size_table, output_size(options)) if options.size_table else None
    else:
        sizes = convert_release_images(release, readers, dataset_dir, options, report)
        sizes.reset_index().to_csv(dataset_dir / "image_sizes.csv", index=False)
    if release.layout == KAGGLE:
        report.notes.append("the Kaggle release has no test annotations; vindr_cxr_test was not written")
    coco = build_vindr_coco(readers, sizes, options, report)
    annotations_dir = dataset_dir / ("annotations" if sizes is not None else UNSIZED_ANNOTATIONS_FOLDER)
    if sizes is None:
        report.notes.append(
            f"no image sizes (--csv-only without --size-table): boxes are in original DICOM pixels and sizes are "
            f"null, so the JSON files went to {annotations_dir}, not where vindr_cxr_* read; they document the "
            "annotation logic but cannot be loaded for training"
        )
    annotations_dir.mkdir(parents=True, exist_ok=True)
    for split, data in coco.items():
        with open(annotations_dir / f"vindr_cxr_{split}.json", "w") as f:
            json.dump(data, f)
    report.write_json(dataset_dir / "conversion_report.json")
    return report


def read_size_table(path: Path, long_side: Optional[int]) -> pd.DataFrame:
    """Image sizes from a CSV with image_id and original_width/original_height (this converter's
    image_sizes.csv) or width/height; output sizes follow `long_side` as the image stage would."""
    if not Path(path).is_file():
        raise ConverterError(f"{path}: size table not found")
    try:
        table = read_utf8_csv(path, dtype={"image_id": str})
    except TextEncodingError as exc:
        raise ConverterError(str(exc)) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise ConverterError(f"{path}: cannot read the size table as CSV ({exc})") from exc
    for width, height in (("original_width", "original_height"), ("width", "height")):
        if {"image_id", width, height} <= set(table.columns):
            break
    else:
        raise ConverterError(
            f"{path}: a size table needs columns image_id,width,height (or original_width,original_height); "
            f"found {list(table.columns)}"
        )
    sizes = pd.DataFrame(
        {"image_id": table["image_id"], "original_width": table[width], "original_height": table[height]}
    )
    bad = ~(sizes[["original_width", "original_height"]] > 0).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise ConverterError(f"{path}: row {first + 2} has no positive width and height")
    unique_rows = sizes.drop_duplicates()
    conflicting = unique_rows["image_id"][unique_rows.duplicated("image_id", keep=False)]
    if len(conflicting):
        raise ConverterError(f"{path}: image {conflicting.iloc[0]} is listed more than once with different sizes")
    output = [resized_size(w, h, long_side) for w, h in zip(sizes["original_width"], sizes["original_height"])]
    sizes["width"], sizes["height"] = [w for w, _ in output], [h for _, h in output]
    return sizes.drop_duplicates("image_id").set_index("image_id").astype(np.int64)


def convert_release_images(
    release: VindrRelease, readers: ReaderBoxes, dataset_dir: Path, options: VindrConversionOptions,
    report: ConversionReport,
) -> pd.DataFrame:
    """Convert every annotated image's DICOM to `dataset_dir/images/<split>/<id>.png`; returns the sizes."""
    jobs = []
    for split, image_ids in readers.image_ids.items():
        folder = release.dicom_dirs[split]
        if not folder.is_dir():
            raise ConverterError(
                f"{folder}: DICOM folder missing; pass --csv-only to convert the annotations without images"
            )
        available = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in DICOM_SUFFIXES}
        for image_id in image_ids:
            if image_id in available:
                target = dataset_dir / "images" / split / f"{image_id}.png"
                jobs.append(ImageJob(image_id, available[image_id], target))
            else:
                report.skip(f"DICOM file missing from {folder}", file=folder / f"{image_id}.dicom", image_id=image_id)
        annotated = set(image_ids)
        csv_name = release.annotation_files[split].name
        for stem, path in available.items():
            if stem not in annotated:
                report.skip(f"DICOM has no rows in {csv_name}; not converted", file=path, image_id=stem)
    results = convert_images(jobs, output_size(options), options.bit_depth, options.workers)
    sources = {job.image_id: job.source for job in jobs}
    rows = []
    for result in results:
        if result.status == FAILED:
            report.skip(
                "DICOM could not be converted", file=sources[result.image_id], image_id=result.image_id,
                detail=result.error,
            )
        else:
            rows.append([result.image_id, result.original_width, result.original_height, result.width, result.height])
    statuses = pd.Series([r.status for r in results]).value_counts().to_dict()
    report.notes.append(f"image stage: {statuses}")
    return pd.DataFrame(rows, columns=["image_id"] + SIZE_COLUMNS).set_index("image_id")


def build_vindr_coco(
    readers: ReaderBoxes, sizes: Optional[pd.DataFrame], options: VindrConversionOptions, report: ConversionReport
) -> Dict[str, dict]:
    """The annotation stage: COCO dicts for "train", "val" (and "test" when the release has it).

    `sizes` (index image_id; columns original_width, original_height, width, height) may be None: boxes
    then stay in original pixels and image sizes are written as null.
    """
    boxes = readers.boxes
    report.count_boxes("train", "in", boxes.loc[boxes["split"] == "train", "category_id"])
    if "test" in readers.image_ids:
        report.count_boxes("test", "in", boxes.loc[boxes["split"] == "test", "category_id"])
    image_ids = {split: _images_with_size(ids, boxes, sizes, report) for split, ids in readers.image_ids.items()}
    if not image_ids["train"]:
        raise ConverterError("no usable training image is left; the report's skipped items say why")
    kept = boxes[boxes["image_id"].isin(set().union(*image_ids.values()))]
    kept, outside = _clip_to_images(kept, sizes, report)
    rejected = pd.concat([readers.rejected, outside[REJECTED_COLUMNS]], ignore_index=True)

    fused = {
        "train": fuse_reader_boxes(
            kept[kept["split"] == "train"], options.fusion, options.iou_threshold, options.min_readers
        )
    }
    if "test" in image_ids:  # the consensus boxes, as released
        fused["test"] = fuse_reader_boxes(kept[kept["split"] == "test"], "keep_all", options.iou_threshold)
    for split, table in fused.items():
        fused[split] = _scale_to_output(table, sizes)
        report.count_boxes(split, "out", table["category_id"])

    labels = {split: _labels_per_image(table) for split, table in fused.items()}
    for split in image_ids:
        other_rows = readers.no_finding_images.get(split, set()) | set(kept.loc[kept["split"] == split, "image_id"])
        image_ids[split] = _account_for_rejected_rows(
            split, image_ids[split], labels[split], rejected, other_rows, report
        )
    if not image_ids["train"]:
        raise ConverterError("no usable training image is left; the report's skipped items say why")
    in_order = [image_id for split in image_ids for image_id in image_ids[split]]
    numeric_ids = {image_id: number for number, image_id in enumerate(in_order)}
    if options.val_ids is not None:
        train_ids, val_ids = split_by_ids(image_ids["train"], read_image_ids(options.val_ids), str(options.val_ids))
    else:
        train_ids, val_ids = split_train_val(
            image_ids["train"], [labels["train"].get(i, []) for i in image_ids["train"]], options.val_fraction,
            options.seed)
    _note_findings_missing_from_val(val_ids, labels["train"], report)
    members = {"train": train_ids, "val": val_ids}
    if "test" in image_ids:
        members["test"] = image_ids["test"]
    coco = {}
    for split, ids in members.items():
        source = OUTPUT_SPLITS[split]
        coco[split] = _coco_dict(
            ids, fused[source], labels[source], sizes, numeric_ids,
            readers.release_labels.get(source, {}), report.settings,
        )
        report.images[f"vindr_cxr_{split}"] = len(ids)
    return coco


def _images_with_size(image_ids: List[str], boxes: pd.DataFrame, sizes, report: ConversionReport) -> List[str]:
    if sizes is None:
        return list(image_ids)
    missing = [i for i in image_ids if i not in sizes.index]
    if missing:
        box_counts = boxes[boxes["image_id"].isin(set(missing))].groupby("image_id").size()
        for image_id in missing:
            report.skip(
                "no image size (not in the size table, or its DICOM was not converted); image left out",
                detail=f"with its {int(box_counts.get(image_id, 0))} reader boxes",
                image_id=image_id,
            )
    present = set(image_ids) - set(missing)
    return [i for i in image_ids if i in present]


def _account_for_rejected_rows(
    split: str, image_ids: List[str], labels: Dict[str, List[str]], rejected: pd.DataFrame, other_rows: set,
    report: ConversionReport,
) -> List[str]:
    """The images of `split` that stay: one that lost rows keeps the findings known from its kept boxes and its
    rejected rows (added to `labels`), or is left out when none is known; never does it become a negative.
    `other_rows`: images with rows that were not rejected ("No finding" rows, or boxes that fusion removed)."""
    rows = rejected[(rejected["split"] == split) & rejected["image_id"].isin(set(image_ids))]
    dropped = set()
    for image_id, lost in rows.groupby("image_id", sort=True):
        count = f"{len(lost)} rejected row{'s' if len(lost) != 1 else ''}"
        known = lost["category_id"].dropna()
        known_names = {VINDR_CXR_CLASSES[int(c)] for c in known if int(c) < len(VINDR_CXR_CLASSES)}
        names = set(labels.get(image_id, [])) | known_names
        if names:
            labels[image_id] = [name for name in VINDR_CXR_CLASSES if name in names]
            report.keep_with_rejected_rows(f"kept with {count}", image_id, detail=f"image labels {labels[image_id]}")
            continue
        dropped.add(image_id)
        if image_id in other_rows:
            report.skip(f"dropped: no usable finding left after {count}", image_id=image_id,
                        detail="its other rows say 'No finding' or lost their boxes in fusion, but the rejected rows "
                        "may name a finding")
        else:
            report.skip("dropped: all rows rejected", image_id=image_id, detail=count)
    return [image_id for image_id in image_ids if image_id not in dropped]


def _clip_to_images(boxes: pd.DataFrame, sizes, report: ConversionReport):
    """Clip boxes to their image (to x, y >= 0 when sizes are unknown); returns (kept boxes, boxes left empty,
    which are skipped and reported)."""
    boxes = boxes.copy()
    before = boxes[BOX_COLUMNS].to_numpy().copy()
    if sizes is None:
        width = height = np.inf
    else:
        width = sizes["original_width"].reindex(boxes["image_id"]).to_numpy(np.float64)
        height = sizes["original_height"].reindex(boxes["image_id"]).to_numpy(np.float64)
    boxes["x_min"] = np.clip(boxes["x_min"].to_numpy(), 0, width)
    boxes["x_max"] = np.clip(boxes["x_max"].to_numpy(), 0, width)
    boxes["y_min"] = np.clip(boxes["y_min"].to_numpy(), 0, height)
    boxes["y_max"] = np.clip(boxes["y_max"].to_numpy(), 0, height)
    outside = ((boxes["x_max"] <= boxes["x_min"]) | (boxes["y_max"] <= boxes["y_min"])).to_numpy()
    if outside.any():
        report.skip_rows(boxes[outside], "box lies outside the image")
    clipped = int(((boxes[BOX_COLUMNS].to_numpy() != before).any(axis=1) & ~outside).sum())
    if clipped:
        report.notes.append(f"{clipped} reader boxes reached beyond the image and were clipped to it")
    return boxes[~outside], boxes[outside].assign(category_id=boxes["category_id"][outside].astype(np.float64))


def _scale_to_output(boxes: pd.DataFrame, sizes) -> pd.DataFrame:
    if sizes is None or len(boxes) == 0:
        return boxes
    rows = sizes.reindex(boxes["image_id"])
    scale_x = (rows["width"] / rows["original_width"]).to_numpy()
    scale_y = (rows["height"] / rows["original_height"]).to_numpy()
    return boxes.assign(
        x_min=boxes["x_min"] * scale_x, x_max=boxes["x_max"] * scale_x,
        y_min=boxes["y_min"] * scale_y, y_max=boxes["y_max"] * scale_y,
    )


def _labels_per_image(boxes: pd.DataFrame) -> Dict[str, List[str]]:
    """Finding names with at least one training box, per image, in class order."""
    pairs = boxes[["image_id", "category_id"]].drop_duplicates().sort_values(["image_id", "category_id"])
    grouped = pairs.groupby("image_id")["category_id"].apply(list)
    return {image_id: [VINDR_CXR_CLASSES[c] for c in ids] for image_id, ids in grouped.items()}


def _note_findings_missing_from_val(val_ids, labels: Dict[str, List[str]], report: ConversionReport) -> None:
    present = {name for image_id in val_ids for name in labels.get(image_id, [])}
    missing = [name for name in VINDR_CXR_CLASSES if name not in present]
    if missing:
        report.notes.append(f"findings with no box in vindr_cxr_val: {missing}")


def _coco_dict(image_ids, boxes, labels, sizes, numeric_ids, release_labels, settings) -> dict:
    images = []
    for image_id in image_ids:
        names = labels.get(image_id, [])
        index = numeric_ids[image_id]
        entry = {
            "id": index,
            "file_name": f"{image_id}.png",  # relative to images/<source split>, the registered image root
            "vindr_image_id": image_id,
            "width": None if sizes is None else int(sizes.at[image_id, "width"]),
            "height": None if sizes is None else int(sizes.at[image_id, "height"]),
            "caption": compose_caption(names, "unelaborate", index),
            "captions": {g: compose_caption(names, g, index) for g in ("elaborate", "unelaborate")},
            "image_labels": names,
        }
        if image_id in release_labels:
            entry["release_labels"] = release_labels[image_id]
        images.append(entry)
    members = boxes[boxes["image_id"].isin(set(image_ids))]
    members = members.assign(order=members["image_id"].map(numeric_ids)).sort_values(["order", "category_id"])
    annotations = []
    for ann_id, row in enumerate(members.itertuples(index=False)):
        x, y, w, h = row.x_min, row.y_min, row.x_max - row.x_min, row.y_max - row.y_min
        annotation = {
            "id": ann_id,
            "image_id": int(row.order),
            "category_id": int(row.category_id),
            "bbox": [round(float(v), 2) for v in (x, y, w, h)],
            "area": round(float(w * h), 2),
            "iscrowd": 0,
            "readers": int(row.readers),
        }
        if "rad_id" in members.columns:
            annotation["rad_id"] = row.rad_id
        annotations.append(annotation)
    return {
        "info": {"description": "VinDr-CXR converted by cxr_codet (tools/prepare_vindr.py)", "settings": settings},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name} for i, name in enumerate(VINDR_CXR_CLASSES)],
    }

