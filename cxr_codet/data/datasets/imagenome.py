"""Chest ImaGenome-style comparison data: per-region progression labels between a prior and a current image.

Two tables (CSV, or tab-separated when the name ends in .tsv or .txt), each with a header row:
- comparisons: `current_image_id, previous_image_id, region, finding, comparison` and optionally
  `sentence` (the report sentence describing the change); `comparison` is one of PROGRESSION_LABELS
  ("improved", "worsened", "no change"; case, spaces and underscores are normalised).
- region boxes: `image_id, region, x1, y1, x2, y2` in pixels of that image (as ImaGenome's scene graphs give
  them), optionally `file_name` (relative to the image folder; default `<image_id><image_extension>`) and
  `width`, `height`.

Each (current, previous) pair becomes one record: {"file_name" (current image), "prior_file_name",
"image_id" "<current>|<previous>", "current_image_id", "previous_image_id", optional "height", "width",
"prior_height", "prior_width", "regions": [{"name", "findings", "comparison", "label" (index in
PROGRESSION_LABELS), "description", "current_box", "prior_box" (XYXY)}]}. A region's rows (one per finding)
are merged; its description is the rows' sentences, else one composed by `progression_description`.
Malformed files, rows or boxes are errors naming the file and line. Skipped, never silently: rows whose
region has no (valid) box in one of the two images, and regions whose findings disagree on the
comparison (a region-level head cannot tell them apart); both are counted and reported in one warning.
"""
import csv
import logging
import math
import os
from collections import Counter, OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)

PROGRESSION_LABELS = ("improved", "worsened", "no change")
COMPARISON_COLUMNS = ("current_image_id", "previous_image_id", "region", "finding", "comparison")
SENTENCE_COLUMN = "sentence"
BOX_COLUMNS = ("image_id", "region", "x1", "y1", "x2", "y2")
_DESCRIPTION_VERBS = {"improved": "has improved", "worsened": "has worsened", "no change": "is unchanged"}
_SKIP_NO_CURRENT_BOX = "region has no valid box in the current image"
_SKIP_NO_PRIOR_BOX = "region has no valid box in the previous image"
_SKIP_CONFLICT = "findings of one region disagree on the comparison"
_EXAMPLES_PER_REASON = 3


def normalize_comparison(value: str) -> Optional[str]:
    """The PROGRESSION_LABELS entry `value` names ("No_Change" -> "no change"), or None."""
    label = " ".join(str(value).replace("_", " ").lower().split())
    return label if label in PROGRESSION_LABELS else None


def progression_description(findings: Sequence[str], region: str, comparison: str) -> str:
    """A one-sentence description of a region's change, e.g. "The consolidation in the right lower lung
    zone has worsened." (used as text supervision when the data has no sentence)."""
    what = " and ".join(f.lower() for f in findings) or "appearance"
    return f"The {what} in the {region} {_DESCRIPTION_VERBS[comparison]}."


def _delimiter(path: str) -> str:
    return "\t" if path.lower().endswith((".tsv", ".txt")) else ","


def _read_table(path: str, required: Sequence[str], what: str) -> List[Tuple[int, Dict[str, str]]]:
    """(line number, row) of a CSV/TSV file with a header that has the `required` columns."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=_delimiter(path))
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [name for name in required if name not in header]
        if missing:
            raise ValueError(f"{path}: the {what} table lacks column(s) {missing}; its header is {header} "
                             f"(required: {list(required)})")
        reader.fieldnames = header
        return [(line, {k: (v or "").strip() for k, v in row.items() if k is not None})
                for line, row in enumerate(reader, start=2)]


def _number(row: Dict[str, str], column: str, path: str, line: int) -> float:
    try:
        value = float(row[column])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{path}, line {line}: column {column!r} must be a finite number, got {row[column]!r}")
    return value


class _Images:
    """What the box table says about each image: region boxes, file name, size."""

    def __init__(self, boxes_file: str, image_root: str, image_extension: str):
        self.boxes: Dict[Tuple[str, str], List[float]] = {}
        self.files: Dict[str, str] = {}
        self.sizes: Dict[str, Tuple[int, int]] = {}
        self.degenerate = 0
        self._root, self._extension = image_root, image_extension
        for line, row in _read_table(boxes_file, BOX_COLUMNS, "region box"):
            self._add(row, boxes_file, line)

    def _add(self, row: Dict[str, str], path: str, line: int) -> None:
        image_id, region = row["image_id"], row["region"]
        if not image_id or not region:
            raise ValueError(f"{path}, line {line}: empty 'image_id' or 'region'")
        box = [_number(row, column, path, line) for column in ("x1", "y1", "x2", "y2")]
        key = (image_id, region)
        if key in self.boxes and self.boxes[key] != box:
            raise ValueError(f"{path}, line {line}: region {region!r} of image {image_id!r} has a second, different box")
        if box[2] > box[0] and box[3] > box[1]:
            self.boxes[key] = box
        else:
            self.degenerate += 1
        if row.get("file_name"):
            if self.files.setdefault(image_id, row["file_name"]) != row["file_name"]:
                raise ValueError(f"{path}, line {line}: image {image_id!r} has two file names "
                                 f"({self.files[image_id]!r}, {row['file_name']!r})")
        if row.get("width") and row.get("height"):
            size = (int(_number(row, "height", path, line)), int(_number(row, "width", path, line)))
            if self.sizes.setdefault(image_id, size) != size:
                raise ValueError(f"{path}, line {line}: image {image_id!r} has two sizes")

    def path(self, image_id: str) -> str:
        return os.path.join(self._root, self.files.get(image_id, image_id + self._extension))


def _group_rows(comparisons_file: str, images: _Images, counts: Counter, examples: Dict[str, List[str]]):
    """{(current, previous): {region: [(line, finding, label, sentence)]}} of the usable rows."""
    pairs: "OrderedDict[Tuple[str, str], OrderedDict]" = OrderedDict()
    for line, row in _read_table(comparisons_file, COMPARISON_COLUMNS, "comparison"):
        current, previous, region = row["current_image_id"], row["previous_image_id"], row["region"]
        if not current or not previous or not region:
            raise ValueError(f"{comparisons_file}, line {line}: empty 'current_image_id', 'previous_image_id' or 'region'")
        if current == previous:
            raise ValueError(f"{comparisons_file}, line {line}: image {current!r} is compared with itself")
        label = normalize_comparison(row["comparison"])
        if label is None:
            raise ValueError(f"{comparisons_file}, line {line}: comparison {row['comparison']!r} is not one of "
                             f"{list(PROGRESSION_LABELS)}")
        reason = (_SKIP_NO_CURRENT_BOX if (current, region) not in images.boxes
                  else _SKIP_NO_PRIOR_BOX if (previous, region) not in images.boxes else None)
        if reason:
            counts[reason] += 1
            if len(examples.setdefault(reason, [])) < _EXAMPLES_PER_REASON:
                examples[reason].append(f"line {line} ({region!r})")
            continue
        entry = (line, row["finding"], label, row.get(SENTENCE_COLUMN, ""))
        pairs.setdefault((current, previous), OrderedDict()).setdefault(region, []).append(entry)
    return pairs


def _region(name: str, rows, current: str, previous: str, images: _Images) -> dict:
    findings = list(dict.fromkeys(finding for _, finding, _, _ in rows if finding))
    label = rows[0][2]
    sentences = list(dict.fromkeys(sentence for _, _, _, sentence in rows if sentence))
    return {
        "name": name,
        "findings": findings,
        "comparison": label,
        "label": PROGRESSION_LABELS.index(label),
        "description": " ".join(sentences) or progression_description(findings, name, label),
        "current_box": list(images.boxes[(current, name)]),
        "prior_box": list(images.boxes[(previous, name)]),
    }


def _record(current: str, previous: str, regions: List[dict], images: _Images) -> dict:
    record = {
        "file_name": images.path(current),
        "prior_file_name": images.path(previous),
        "image_id": f"{current}|{previous}",
        "current_image_id": current,
        "previous_image_id": previous,
        "regions": regions,
    }
    for image_id, (height_key, width_key) in ((current, ("height", "width")), (previous, ("prior_height", "prior_width"))):
        if image_id in images.sizes:
            record[height_key], record[width_key] = images.sizes[image_id]
    return record


def load_imagenome_comparisons(comparisons_file: str, boxes_file: str, image_root: str, *,
                               image_extension: str = ".jpg") -> List[dict]:
    """Comparison records (see the module docstring) from a comparison table and a region-box table."""
    images = _Images(boxes_file, image_root, image_extension)
    counts, examples = Counter(), {}
    records = []
    for (current, previous), by_region in _group_rows(comparisons_file, images, counts, examples).items():
        regions = []
        for name, rows in by_region.items():
            if len({label for _, _, label, _ in rows}) > 1:
                counts[_SKIP_CONFLICT] += len(rows)
                if len(examples.setdefault(_SKIP_CONFLICT, [])) < _EXAMPLES_PER_REASON:
                    examples[_SKIP_CONFLICT].append(f"lines {[line for line, _, _, _ in rows]} ({name!r})")
                continue
            regions.append(_region(name, rows, current, previous, images))
        if regions:
            records.append(_record(current, previous, regions, images))
    if counts or images.degenerate:
        parts = [f"skipped {count} row(s): {reason} (e.g. {', '.join(examples[reason])})"
                 for reason, count in sorted(counts.items())]
        if images.degenerate:
            parts.append(f"ignored {images.degenerate} degenerate box(es) (x2 <= x1 or y2 <= y1) of {boxes_file}")
        logger.warning(f"{comparisons_file}: " + "; ".join(parts))
    labels = Counter(region["comparison"] for record in records for region in record["regions"])
    logger.info(f"Loaded {len(records)} image pairs with {sum(labels.values())} region comparisons "
                f"({dict(sorted(labels.items()))}) from {comparisons_file}")
    return records


def register_imagenome_comparisons(name: str, comparisons_file: str, boxes_file: str, image_root: str,
                                   image_extension: str = ".jpg", **extra_metadata) -> None:
    """Register comparison dataset `name` (loaded lazily) with the "progression" evaluator."""
    DatasetCatalog.register(name, lambda: load_imagenome_comparisons(
        comparisons_file, boxes_file, image_root, image_extension=image_extension))
    MetadataCatalog.get(name).set(
        evaluator_type="progression",
        mapper="image_pair",  # both images of a record, the data layer's ImagePairMapper
        progression_labels=list(PROGRESSION_LABELS),
        comparisons_file=comparisons_file,
        boxes_file=boxes_file,
        image_root=image_root,
        **extra_metadata,
    )
