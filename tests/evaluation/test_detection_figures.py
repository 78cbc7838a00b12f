"""The ground-truth | predictions figure: which images, which colours, what a detection counts as."""
import cv2
import numpy as np
import pytest
from detectron2.structures import BoxMode

from cxr_codet.evaluation.detection_figures import (
    HIT_COLOR,
    MISS_COLOR,
    choose_images,
    detection_rows,
    detections_by_image,
    save_detection_figure,
)


def _record(tmp_path, image_id, boxes):
    path = tmp_path / f"{image_id}.png"
    cv2.imwrite(str(path), np.full((64, 64), 40, np.uint8))
    return {"file_name": str(path), "image_id": image_id, "height": 64, "width": 64,
            "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": c, "iscrowd": 0} for c, b in boxes]}


def test_one_image_per_finding_in_image_id_order(tmp_path):
    records = [_record(tmp_path, 3, [(0, [0, 0, 9, 9])]), _record(tmp_path, 1, [(0, [0, 0, 9, 9]), (1, [5, 5, 9, 9])]),
               _record(tmp_path, 2, [(1, [1, 1, 8, 8])])]
    assert [r["image_id"] for r in choose_images(records, num_classes=3)] == [1, 2]  # class 2 has no box
    assert [r["image_id"] for r in choose_images(records, num_classes=2, per_finding=2)] == [1, 3, 2]


def test_hits_are_cyan_misses_red_and_rows_sit_side_by_side(tmp_path):
    record = _record(tmp_path, 7, [(0, [10, 10, 30, 30])])
    results = [
        {"image_id": 7, "category_id": 5, "bbox": [11, 11, 19, 19], "score": 0.9},  # dataset id 5 = class 0: a hit
        {"image_id": 7, "category_id": 6, "bbox": [40, 40, 20, 20], "score": 0.8},  # wrong finding: a miss
        {"image_id": 7, "category_id": 5, "bbox": [0, 0, 5, 5], "score": 0.1},      # below the top 2: not drawn
    ]
    detections = detections_by_image(results, {5: 0, 6: 1})
    figure = detection_rows([record], detections, ["Nodule", "Mass"], max_detections=2)
    assert figure.shape == (64, 64 * 2 + 8, 3)
    right = figure[:, 64 + 8:]
    assert tuple(right[20, 11]) == HIT_COLOR   # left edge of the hit
    assert tuple(right[50, 40]) == MISS_COLOR  # left edge of the miss
    assert tuple(right[2, 2]) != HIT_COLOR and tuple(right[2, 2]) != MISS_COLOR
    path = save_detection_figure(str(tmp_path / "out" / "figure.png"), figure)
    assert cv2.imread(path).shape == figure.shape


def test_unknown_category_and_empty_selection_are_refused(tmp_path):
    with pytest.raises(ValueError, match="category_id 9 is not a category"):
        detections_by_image([{"image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1], "score": 1.0}], {0: 0})
    with pytest.raises(ValueError, match="no image to draw"):
        detection_rows([], {}, ["Nodule"])
