"""tools/detection_diagnostics.py's measures: class-agnostic vs per-class AP, relative size buckets across image
sizes, ground-truth counts per bucket and score saturation, on a hand-made COCO file."""
import json

import pytest

from cxr_codet.evaluation.detection_diagnostics import diagnose, format_diagnostics

# A 50x50 box is "large" (25% of the area) on the 100x100 image and "small" (0.25%) on the 1000x1000 one.
GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 1000, "height": 1000}],
    "categories": [{"id": 1, "name": "Nodule"}, {"id": 2, "name": "Effusion"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [100, 100, 50, 50], "area": 2500, "iscrowd": 0},
    ],
}


def test_right_boxes_with_swapped_classes_score_only_class_agnostically(tmp_path):
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps(GT))
    detections = [
        {"image_id": 1, "category_id": 2, "bbox": [10, 10, 50, 50], "score": 1.0},  # saturated, wrong class
        {"image_id": 2, "category_id": 1, "bbox": [100, 100, 50, 50], "score": 0.5},  # wrong class
    ]
    result = diagnose(str(gt_json), detections)
    buckets = result["buckets"]
    assert result["saturated_share"] == pytest.approx(0.5) and result["max_score"] == pytest.approx(1.0)
    assert {name: entry["gt_boxes"] for name, entry in buckets.items()} == {"all": 2, "s": 1, "m": 0, "l": 1}
    assert buckets["all"]["by_class"]["AP50"] == pytest.approx(0.0)
    assert buckets["all"]["class_agnostic"]["AP50"] == pytest.approx(100.0)
    assert buckets["l"]["class_agnostic"]["AP75"] == pytest.approx(100.0)
    assert "| l | 1 | 0.0 | 0.0 | 0.0 | 100.0 | 100.0 |" in format_diagnostics(result)
