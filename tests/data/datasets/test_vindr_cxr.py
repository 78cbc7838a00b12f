"""data/datasets/vindr_cxr.py: the registered vindr_cxr_* layout and how to create it when it is missing."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
from coco_files import coco_dict
from detectron2.data import DatasetCatalog, MetadataCatalog

from cxr_codet.data.classes import VINDR_CXR_CLASSES


def test_vindr_missing_files_say_how_to_create_them():
    root = os.environ["DETECTRON2_DATASETS"]
    expected = os.path.join(root, "vindr_cxr", "annotations", "vindr_cxr_test.json")
    with pytest.raises(FileNotFoundError, match=f"{expected} does not exist.*Run tools/prepare_vindr.py"):
        DatasetCatalog.get("vindr_cxr_test")


def test_vindr_layout_loads():
    """vindr_cxr_val reads annotations/vindr_cxr_val.json with its images in images/train."""
    base = os.path.join(os.environ["DETECTRON2_DATASETS"], "vindr_cxr")
    try:
        os.makedirs(os.path.join(base, "annotations"))
        os.makedirs(os.path.join(base, "images", "train"))
        cv2.imwrite(os.path.join(base, "images", "train", "abc.png"), np.zeros((80, 100), np.uint8))
        coco = coco_dict(images=[{"id": "abc", "file_name": "abc.png", "width": 100, "height": 80}], annotations=[])
        with open(os.path.join(base, "annotations", "vindr_cxr_val.json"), "w") as f:
            json.dump(coco, f)
        dicts = DatasetCatalog.get("vindr_cxr_val")
    finally:
        shutil.rmtree(base, ignore_errors=True)  # the datasets root is shared by the whole test session
    assert dicts[0]["file_name"] == os.path.join(base, "images", "train", "abc.png") and dicts[0]["image_id"] == "abc"
    assert MetadataCatalog.get("vindr_cxr_val").thing_classes == list(VINDR_CXR_CLASSES)
    assert MetadataCatalog.get("vindr_cxr_test").image_root == os.path.join(base, "images", "test")
