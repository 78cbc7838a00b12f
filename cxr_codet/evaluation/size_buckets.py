"""COCO size buckets for chest X-rays: COCO's absolute pixel areas or fractions of the image area, and the COCO
objects (ground truth, detections) whose annotation areas relative buckets compare."""
import contextlib
import io
from dataclasses import dataclass

from pycocotools.coco import COCO

SIZE_BUCKET_NAMES = ("small", "medium", "large")  # pycocotools' areaRngLbl after "all"
_UNBOUNDED = 1e5**2  # pycocotools' upper bound of the "all" and "large" area ranges


@dataclass(frozen=True)
class SizeBuckets:
    """Area ranges for pycocotools ("all", "small", "medium", "large") and how areas are measured."""

    area_ranges: tuple
    relative: bool
    description: str


def _absolute_size_buckets(relative_area_ranges):
    """COCO's buckets: box areas in pixels of the stored image, split at 32^2 and 96^2."""
    return SizeBuckets(
        area_ranges=((0.0, _UNBOUNDED), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, _UNBOUNDED)),
        relative=False,
        description="absolute box areas (small < 32^2 px, medium 32^2-96^2 px, large > 96^2 px)",
    )


def relative_size_buckets(relative_area_ranges):
    """Buckets by box area / image area, split at the two given fractions."""
    if len(relative_area_ranges) != 2 or not 0 < relative_area_ranges[0] < relative_area_ranges[1] <= 1:
        raise ValueError(
            "relative_area_ranges (TEST.RELATIVE_AREA_RANGES) must be two increasing fractions of the "
            f"image area in (0, 1], the upper bounds of small and medium; got {relative_area_ranges!r}"
        )
    small, medium = (float(x) for x in relative_area_ranges)
    return SizeBuckets(
        area_ranges=((0.0, _UNBOUNDED), (0.0, small), (small, medium), (medium, _UNBOUNDED)),
        relative=True,
        description=(f"box area / image area (small < {small:g}, medium {small:g}-{medium:g}, "
                     f"large > {medium:g})"),
    )


SIZE_BUCKETS = {"absolute": _absolute_size_buckets, "relative": relative_size_buckets}


def _image_area(coco, image_id):
    img = coco.imgs[image_id]
    return float(img["width"]) * float(img["height"])


def load_detections(coco_gt, coco_results, relative_areas=False):
    """COCO results (a non-empty list of dicts) as a COCO object over `coco_gt`'s images; with `relative_areas`,
    their areas are fractions of their image's area, as relative size buckets expect."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(r) for r in coco_results])
    if relative_areas:
        for ann in coco_dt.anns.values():
            ann["area"] = ann["area"] / _image_area(coco_gt, ann["image_id"])
    return coco_dt


def with_relative_areas(coco):
    """A copy of ground truth whose annotation areas are fractions of their image's area."""
    relative = COCO()
    relative.dataset = dict(coco.dataset)
    relative.dataset["annotations"] = [
        dict(ann, area=ann["area"] / _image_area(coco, ann["image_id"]))
        for ann in coco.dataset["annotations"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        relative.createIndex()
    return relative
