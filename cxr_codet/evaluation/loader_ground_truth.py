"""The ground truth of a box evaluation: the boxes the dataset's loader produced, not the raw COCO file.

pycocotools reads the JSON as it is, so boxes that the loader skipped (zero area, outside the image) would still be
ground truth nobody can find, clipped boxes would keep their outside parts, and a class whose every box was
skipped would score AP 0 instead of being missing. `loader_ground_truth` builds the COCO object from the
loader's records instead (boxes as XYWH, area = box area, the dataset's category ids); `difference_note` says
how it differs from the file; `ground_truth_as_loaded` is what CXRCOCOEvaluator calls.
"""
import contextlib
import io
import logging
from collections import Counter
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode
from pycocotools.coco import COCO

logger = logging.getLogger(__name__)


def ground_truth_as_loaded(dataset_name: str, raw: COCO, dataset_id_of: Dict[int, int], json_file: str) -> COCO:
    """The ground truth of registered dataset `dataset_name` as its loader produces it, logging how it differs from
    `raw` (the file read by pycocotools); `raw` itself for a dataset that is not registered."""
    if dataset_name not in DatasetCatalog.list():
        return raw
    loaded = loader_ground_truth(DatasetCatalog.get(dataset_name), dataset_id_of, raw.dataset["categories"])
    note = difference_note(raw, loaded, json_file, dataset_name)
    if note:
        logger.info(note)
    return loaded


def loader_ground_truth(records: Sequence[dict], dataset_id_of: Dict[int, int], categories: List[dict]) -> COCO:
    """A COCO ground truth of `records` (detectron2 dicts); `dataset_id_of` maps contiguous class ids to the
    dataset's category ids, `categories` are the COCO categories."""
    images, annotations = [], []
    for record in records:
        images.append({"id": record["image_id"], "width": record["width"], "height": record["height"],
                       "file_name": record.get("file_name", "")})
        for ann in record.get("annotations", []):
            x, y, w, h = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYWH_ABS)
            annotations.append({
                "id": len(annotations) + 1, "image_id": record["image_id"], "bbox": [x, y, w, h], "area": w * h,
                "category_id": dataset_id_of[ann["category_id"]], "iscrowd": int(ann.get("iscrowd", 0)),
            })
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": list(categories)}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def difference_note(raw: COCO, loaded: COCO, json_file: str, dataset_name: str) -> Optional[str]:
    """One line saying how many of the file's boxes the loader skipped or clipped, and which findings lost every
    box (so they are missing, not 0); None when the loader kept the file's boxes unchanged."""
    def boxes(coco):
        return Counter((a["image_id"], a["category_id"], tuple(float(v) for v in a["bbox"]))
                       for a in coco.dataset["annotations"])

    raw_boxes, loaded_boxes = boxes(raw), boxes(loaded)
    changed = sum((raw_boxes - loaded_boxes).values())
    skipped = sum(raw_boxes.values()) - sum(loaded_boxes.values())
    clipped = changed - skipped
    if not changed:
        return None
    names = {c["id"]: c["name"] for c in raw.dataset["categories"]}
    left = {k[1] for k in loaded_boxes}
    lost = Counter(k[1] for k in raw_boxes.elements() if k[1] not in left)
    note = (f"{json_file}: '{dataset_name}' is evaluated against the {sum(loaded_boxes.values())} boxes its loader "
            f"kept, not the file's {sum(raw_boxes.values())}: {skipped} skipped and {clipped} clipped by the loader "
            "(its warning says why)")
    if lost:
        listed = ", ".join(f"{names.get(c, c)} ({n} box{'es' if n > 1 else ''})" for c, n in sorted(lost.items()))
        note += f"; findings whose every box was skipped, reported as missing: {listed}"
    return note
