"""Registers any COCO-format chest X-ray dataset by name: the "train on your own data" entry point.

The loader validates the file and says what is wrong and where (file, image id, annotation id):
- missing file, unreadable JSON (or not UTF-8), missing "images"/"annotations"/"categories" or entries that
  are not objects, a category name not in `class_names`, an annotation of an unknown image or category,
  duplicate image or category ids, an image without a positive width/height or a file name, a "caption"
  that is not text or "captions" that are not a {granularity: text} object, a malformed "bbox": errors.
- a box with w or h <= 0, or one lying more than CLIP_TOLERANCE of the image side outside it: skipped.
  A box at most CLIP_TOLERANCE outside is clipped to the image. Both are counted and summarised in one
  warning per load; nothing is dropped silently.
Images without annotations ("No finding") are kept. Category ids are mapped to contiguous ids by name.
An image's "image_labels" are the findings it is known to have: its kept boxes', its skipped boxes' and those an
image entry lists under "image_labels" (finding names, as tools/prepare_vindr.py writes them for images whose rows
were rejected). So an image whose every box was skipped is never turned into a "No finding" negative: it keeps its
findings and is image-level only ("box_supervised" False, as DATASETS.TRAIN_BOX_FRACTION marks such images),
counted in the load's warning.
"""
import json
import logging
import math
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..classes import VINDR_CXR_CLASSES
from ..box_supervision import BOX_SUPERVISED

logger = logging.getLogger(__name__)

# A box may reach this fraction of the image side beyond the border and still be clipped instead of skipped.
CLIP_TOLERANCE = 0.02
_SKIP_DEGENERATE = "degenerate box (w or h <= 0)"
_SKIP_OUTSIDE = "box outside the image"
_CLIPPED = "clipped to the image"
_EXAMPLES_PER_REASON = 3


def _missing(what: str, hint: Optional[str]) -> FileNotFoundError:
    return FileNotFoundError(f"{what} does not exist." + (f" {hint}" if hint else ""))


def _read_coco_json(json_file: str, missing_files_hint: Optional[str]) -> dict:
    """The parsed file, with its three top-level lists checked."""
    if not os.path.isfile(json_file):
        raise _missing(f"COCO annotation file {json_file}", missing_files_hint)
    try:
        with open(json_file, encoding="utf-8") as f:
            coco = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file} is not valid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{json_file} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from e
    if not isinstance(coco, dict):
        raise ValueError(
            f"{json_file}: expected a JSON object with images/annotations/categories, got a {type(coco).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"{json_file}: top-level key {key!r} is missing or not a list")
        for position, entry in enumerate(coco[key]):
            if not isinstance(entry, dict):
                raise ValueError(f"{json_file}: {key} entry #{position} is a {type(entry).__name__}, not an object")
    return coco


def _contiguous_category_ids(categories: List[dict], class_names: Sequence[str], json_file: str) -> Dict[int, int]:
    """COCO category id -> index of its name in `class_names`."""
    mapping = {}
    seen_names = {}
    for cat in categories:
        cat_id, name = cat.get("id"), cat.get("name")
        if name not in class_names:
            raise ValueError(
                f"{json_file}: category id {cat_id} has unknown name {name!r}; "
                f"category names must be among {list(class_names)}"
            )
        if cat_id in mapping:
            raise ValueError(f"{json_file}: category id {cat_id} appears more than once")
        if name in seen_names:
            raise ValueError(f"{json_file}: category name {name!r} is used by ids {seen_names[name]} and {cat_id}")
        seen_names[name] = cat_id
        mapping[cat_id] = class_names.index(name)
    return mapping


def _image_record(image: dict, image_root: str, json_file: str) -> dict:
    """The detectron2 record of one COCO image entry (annotations are added later)."""
    image_id = image.get("id")
    for key in ("width", "height"):
        value = image.get(key)
        if not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{json_file}: image id {image_id} has no positive {key!r} (got {value!r})")
    if not image.get("file_name") or not isinstance(image["file_name"], str):
        raise ValueError(f"{json_file}: image id {image_id} has no 'file_name' (got {image.get('file_name')!r})")
    record = {
        "file_name": os.path.join(image_root, image["file_name"]),
        "height": int(image["height"]),
        "width": int(image["width"]),
        "image_id": image_id,
        "annotations": [],
    }
    if "caption" in image:
        if not isinstance(image["caption"], str):
            raise ValueError(f"{json_file}: image id {image_id} has a 'caption' that is not text: {image['caption']!r}")
        record["caption"] = image["caption"]
    if "captions" in image:
        captions = image["captions"]
        if not isinstance(captions, dict) or not all(isinstance(t, str) for t in captions.values()):
            raise ValueError(
                f"{json_file}: image id {image_id} has 'captions' {captions!r}; expected {{granularity: text}}"
            )
        record["captions"] = dict(captions)
    return record


def _checked_box(ann: dict, record: dict, json_file: str):
    """(box or None, reason): the box in XYWH, clipped if slightly outside; None with the reason to skip it."""
    bbox = ann.get("bbox")
    if (
        not isinstance(bbox, (list, tuple))
        or len(bbox) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    ):
        raise ValueError(
            f"{json_file}: annotation id {ann.get('id')} (image id {ann.get('image_id')}) has malformed "
            f"'bbox' {bbox!r}; expected [x, y, w, h] numbers"
        )
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return None, _SKIP_DEGENERATE
    width, height = record["width"], record["height"]
    x0, y0, x1, y1 = x, y, x + w, y + h
    tol_x, tol_y = CLIP_TOLERANCE * width, CLIP_TOLERANCE * height
    if x0 < -tol_x or y0 < -tol_y or x1 > width + tol_x or y1 > height + tol_y:
        return None, _SKIP_OUTSIDE
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if cx1 <= cx0 or cy1 <= cy0:
        return None, _SKIP_OUTSIDE
    clipped = (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)
    return [cx0, cy0, cx1 - cx0, cy1 - cy0], (_CLIPPED if clipped else None)


def _image_records(images: List[dict], image_root: str, json_file: str, class_names: Sequence[str]):
    """(image id -> record, in file order; image id -> contiguous ids of the findings its "image_labels" names)."""
    records, labels = {}, {}
    for position, image in enumerate(images):
        if image.get("id") is None:
            raise ValueError(f"{json_file}: image entry #{position} (file {image.get('file_name')!r}) has no 'id'")
        record = _image_record(image, image_root, json_file)
        if record["image_id"] in records:
            raise ValueError(f"{json_file}: duplicate image id {record['image_id']}")
        records[record["image_id"]] = record
        labels[record["image_id"]] = _listed_labels(image, class_names, json_file)
    return records, labels


def _listed_labels(image: dict, class_names: Sequence[str], json_file: str) -> set:
    """Contiguous ids of the finding names in an image entry's "image_labels" (absent: none)."""
    names = image.get("image_labels", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{json_file}: image id {image.get('id')} has image_labels {names!r}; expected a list of "
                         "finding names")
    unknown = [name for name in names if name not in class_names]
    if unknown:
        raise ValueError(f"{json_file}: image id {image.get('id')} has image_labels {names!r}: {unknown[0]!r} is not "
                         f"one of the classes {list(class_names)}")
    return {class_names.index(name) for name in names}


def _add_annotations(annotations: List[dict], records: Dict[object, dict], id_map: Dict[int, int], json_file: str,
                     known: Dict[object, set]):
    """Append each valid box to its image's record and every box's finding (kept or skipped) to `known[image id]`;
    returns the counts and examples of skipped and clipped boxes by reason."""
    counts, examples = Counter(), {}
    for ann in annotations:
        ann_id, image_id = ann.get("id"), ann.get("image_id")
        record = records.get(image_id)
        if record is None:
            raise ValueError(f"{json_file}: annotation id {ann_id} refers to unknown image id {image_id}")
        if ann.get("category_id") not in id_map:
            raise ValueError(
                f"{json_file}: annotation id {ann_id} (image id {image_id}) has unknown "
                f"category id {ann.get('category_id')}; known ids: {sorted(id_map)}"
            )
        box, reason = _checked_box(ann, record, json_file)
        known[image_id].add(id_map[ann["category_id"]])
        if reason is not None:
            counts[reason] += 1
            reason_examples = examples.setdefault(reason, [])
            if len(reason_examples) < _EXAMPLES_PER_REASON:
                reason_examples.append(f"annotation {ann_id} of image {image_id}")
        if box is not None:
            record["annotations"].append(
                {
                    "bbox": box,
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": id_map[ann["category_id"]],
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
    return counts, examples


def _warn_about_boxes(json_file: str, counts: Counter, examples: Dict[str, List[str]], image_level_only: List[str]):
    """One warning for the whole file: how many boxes were skipped or clipped, why, with examples, and the images
    left with findings but no box."""
    if not counts and not image_level_only:
        return
    parts = []
    for reason, count in sorted(counts.items()):
        action = "clipped" if reason == _CLIPPED else "skipped"
        parts.append(f"{action} {count} ({reason}; e.g. {', '.join(examples[reason])})")
    if image_level_only:
        count = len(image_level_only)
        parts.append(f"{count} image{'s keep' if count > 1 else ' keeps'} findings that have no box left (image-level "
                     f"only, not No finding); e.g. {', '.join(image_level_only[:_EXAMPLES_PER_REASON])}")
    logger.warning(f"{json_file}: " + "; ".join(parts))


def load_cxr_coco_json(
    json_file: str,
    image_root: str,
    class_names: Sequence[str] = VINDR_CXR_CLASSES,
    dataset_name: Optional[str] = None,
    missing_files_hint: Optional[str] = None,
) -> List[dict]:
    """Read a COCO-format CXR file into detectron2 dicts with "image_labels", "caption" and "captions".

    With `dataset_name`, its metadata also gets `thing_dataset_id_to_contiguous_id` (COCOEvaluator needs it).
    `missing_files_hint` is appended to the error raised when the file or the image folder is missing.
    """
    class_names = list(class_names)
    coco = _read_coco_json(json_file, missing_files_hint)
    if not os.path.isdir(image_root):
        raise _missing(f"image folder {image_root} of {json_file}", missing_files_hint)
    id_map = _contiguous_category_ids(coco["categories"], class_names, json_file)
    records, known = _image_records(coco["images"], image_root, json_file, class_names)
    counts, examples = _add_annotations(coco["annotations"], records, id_map, json_file, known)

    dataset_dicts = list(records.values())
    image_level_only = []
    for record in dataset_dicts:
        record["image_labels"] = sorted(known[record["image_id"]])
        if record["image_labels"] and not record["annotations"]:
            record[BOX_SUPERVISED] = False  # findings without a box: image-level only, never a No-finding image
            image_level_only.append(f"image {record['image_id']}")
    _warn_about_boxes(json_file, counts, examples, image_level_only)
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(thing_dataset_id_to_contiguous_id=id_map)
    num_boxes = sum(len(r["annotations"]) for r in dataset_dicts)
    logger.info(f"Loaded {len(dataset_dicts)} images with {num_boxes} boxes from {json_file}")
    return dataset_dicts


def register_cxr_coco(name: str, json_file: str, image_root: str, class_names=VINDR_CXR_CLASSES, **extra_metadata):
    """Register dataset `name` (lazy load of `json_file`, images under `image_root`) and its metadata.

    `extra_metadata` is stored on the metadata; its key `missing_files_hint` (a sentence telling users how to
    create the files) is also appended to the error raised when the files are missing.
    """
    hint = extra_metadata.get("missing_files_hint")

    def load():
        return load_cxr_coco_json(json_file, image_root, class_names, dataset_name=name, missing_files_hint=hint)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        thing_classes=list(class_names), evaluator_type="coco", json_file=json_file, image_root=image_root,
        **extra_metadata,
    )
