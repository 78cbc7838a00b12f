"""evaluation/heatmap_overlays.py: an overlay of a 16-bit image shows the windowed image."""

import cv2
import numpy as np
import torch
from image_files import twelve_bit


def test_evaluator_overlay_of_a_16_bit_image_shows_the_windowed_image(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from cxr_codet.evaluation.localization_evaluation import OVERLAY_FOLDER, LocalizationEvaluator

    expected = twelve_bit(tmp_path / "twelve.png")
    record = {"image_id": 1, "file_name": str(tmp_path / "twelve.png"), "height": 64, "width": 80,
              "annotations": [{"bbox": [4, 4, 8, 8], "bbox_mode": 1, "category_id": 0, "iscrowd": 0}]}
    name = "image_io_overlay_16bit"
    DatasetCatalog.register(name, lambda: [dict(record)])
    MetadataCatalog.get(name).set(thing_classes=["Nodule"], evaluator_type="coco")
    evaluator = LocalizationEvaluator(name, str(tmp_path / "out"), num_overlays=1, n_bootstrap=20)
    heatmap = torch.full((64, 80), float("nan"))  # NaN pixels show the plain image
    heatmap[4:12, 4:12] = 1.0
    evaluator.process([{"image_id": 1}], [{"localization": {
        "findings": ["Nodule"], "prompts": ["Findings suggesting Nodule."], "heatmaps": heatmap[None]}}])
    evaluator.evaluate()
    overlay = cv2.imread(str(tmp_path / "out" / OVERLAY_FOLDER / "twelve_Nodule.png"))
    np.testing.assert_array_equal(overlay[40:, 40:, 0], expected[40:, 40:])
