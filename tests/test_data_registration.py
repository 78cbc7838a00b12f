"""Registration of COCO-format CXR datasets (register_cxr_coco) and of VinDr-CXR: loading and every bad input."""
import json
import logging
import os
import shutil

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES, VINDR_CXR_CLASSES
from cxr_codet.data.datasets.coco_cxr import load_cxr_coco_json, register_cxr_coco


def _coco(images=None, annotations=None, categories=None):
    """A small valid COCO dict: 3 images (the third without boxes), categories with non-contiguous ids."""
    return {
        "images": images
        if images is not None
        else [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80, "caption": "Findings: cardiomegaly.",
             "captions": {"elaborate": "long", "unelaborate": "short"}},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
            {"id": 3, "file_name": "c.png", "width": 100, "height": 80},
        ],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 20, 30, 40]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 5, 10, 10]},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 100, 80], "iscrowd": 0},
        ],
        "categories": categories
        if categories is not None
        else [{"id": 7, "name": "Pleural effusion"}, {"id": 3, "name": "Cardiomegaly"}],
    }


def _write(tmp_path, coco, name="train.json"):
    image_root = tmp_path / "images"
    image_root.mkdir(exist_ok=True)
    json_file = tmp_path / name
    json_file.write_text(json.dumps(coco) if isinstance(coco, dict) else coco)
    return str(json_file), str(image_root)


def test_register_and_load(tmp_path):
    json_file, image_root = _write(tmp_path, _coco())
    register_cxr_coco("test_reg_cxr_coco", json_file, image_root, source="unit test")
    dicts = DatasetCatalog.get("test_reg_cxr_coco")
    assert [d["image_id"] for d in dicts] == [1, 2, 3]
    first = dicts[0]
    assert first["file_name"] == os.path.join(image_root, "a.png")
    assert (first["height"], first["width"]) == (80, 100)
    effusion, cardiomegaly = VINDR_CXR_CLASSES.index("Pleural effusion"), VINDR_CXR_CLASSES.index("Cardiomegaly")
    assert [a["category_id"] for a in first["annotations"]] == [effusion, cardiomegaly]
    assert first["annotations"][0]["bbox"] == [10.0, 20.0, 30.0, 40.0]
    assert first["annotations"][0]["bbox_mode"] == BoxMode.XYWH_ABS and first["annotations"][0]["iscrowd"] == 0
    assert first["image_labels"] == sorted([effusion, cardiomegaly])
    assert first["caption"] == "Findings: cardiomegaly." and first["captions"]["unelaborate"] == "short"
    assert "caption" not in dicts[1] and dicts[1]["image_labels"] == [effusion]
    assert dicts[2]["annotations"] == [] and dicts[2]["image_labels"] == []  # "No finding" image kept
    metadata = MetadataCatalog.get("test_reg_cxr_coco")
    assert metadata.thing_classes == list(VINDR_CXR_CLASSES) and metadata.evaluator_type == "coco"
    assert metadata.json_file == json_file and metadata.image_root == image_root and metadata.source == "unit test"
    assert metadata.thing_dataset_id_to_contiguous_id == {7: effusion, 3: cardiomegaly}


def test_other_class_vocabulary(tmp_path):
    coco = _coco(categories=[{"id": 7, "name": "Effusion"}, {"id": 3, "name": "Cardiomegaly"}])
    dicts = load_cxr_coco_json(*_write(tmp_path, coco), class_names=NIH_CXR14_BBOX_CLASSES)
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [2, 1]


def test_unknown_dataset_name_is_a_clear_key_error():
    with pytest.raises(KeyError, match="Dataset 'no_such_cxr_dataset' is not registered"):
        DatasetCatalog.get("no_such_cxr_dataset")


def test_missing_json_file(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=f"COCO annotation file {missing} does not exist"):
        load_cxr_coco_json(missing, str(tmp_path))


def test_missing_image_folder(tmp_path):
    json_file, _ = _write(tmp_path, _coco())
    with pytest.raises(FileNotFoundError, match="image folder .*elsewhere of .*train.json does not exist"):
        load_cxr_coco_json(json_file, str(tmp_path / "elsewhere"))


@pytest.mark.parametrize(
    "coco, message",
    [
        ("{not json", r"train.json is not valid JSON"),
        ({"images": [], "annotations": []}, r"train.json: top-level key 'categories' is missing or not a list"),
        (_coco(categories=[{"id": 7, "name": "Tumour"}]), r"category id 7 has unknown name 'Tumour'; category names"),
        (
            _coco(categories=[{"id": 7, "name": "ILD"}, {"id": 7, "name": "Cardiomegaly"}]),
            r"category id 7 appears more than once",
        ),
        (
            _coco(categories=[{"id": 7, "name": "ILD"}, {"id": 3, "name": "ILD"}]),
            r"category name 'ILD' is used by ids 7 and 3",
        ),
        (
            _coco(annotations=[{"id": 9, "image_id": 1, "category_id": 99, "bbox": [1, 1, 2, 2]}]),
            r"annotation id 9 \(image id 1\) has unknown category id 99; known ids: \[3, 7\]",
        ),
        (
            _coco(annotations=[{"id": 4, "image_id": 42, "category_id": 3, "bbox": [1, 1, 2, 2]}]),
            r"annotation id 4 refers to unknown image id 42",
        ),
        (
            _coco(annotations=[{"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2]}]),
            r"annotation id 5 \(image id 1\) has malformed 'bbox' \[1, 1, 2\]",
        ),
        (
            _coco(images=[{"id": 3, "file_name": "a.png", "width": 9, "height": 9}] * 2, annotations=[]),
            r"train.json: duplicate image id 3",
        ),
        (
            _coco(images=[{"id": 2, "file_name": "a.png", "height": 9}], annotations=[]),
            r"image id 2 has no positive 'width' \(got None\)",
        ),
        (
            _coco(images=[{"id": 2, "file_name": "a.png", "width": 9, "height": 0}], annotations=[]),
            r"image id 2 has no positive 'height' \(got 0\)",
        ),
        (
            _coco(images=[{"file_name": "x.png", "width": 9, "height": 9}], annotations=[]),
            r"image entry #0 \(file 'x.png'\) has no 'id'",
        ),
    ],
)
def test_bad_input_is_an_error_naming_file_and_id(tmp_path, coco, message):
    json_file, image_root = _write(tmp_path, coco)
    with pytest.raises(ValueError, match=message):
        load_cxr_coco_json(json_file, image_root)


def test_bad_boxes_are_skipped_or_clipped_and_reported(tmp_path, caplog):
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 0, 5]},  # degenerate: skipped
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [10, 10, 5, -1]},  # degenerate: skipped
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [-1, 70, 50, 11]},  # 1 px outside: clipped
        {"id": 4, "image_id": 2, "category_id": 7, "bbox": [90, 10, 30, 10]},  # 20 px outside: skipped
        {"id": 5, "image_id": 2, "category_id": 7, "bbox": [200, 10, 5, 5]},  # entirely outside: skipped
        {"id": 6, "image_id": 3, "category_id": 7, "bbox": [1, 2, 3, 4]},  # fine
    ]
    json_file, image_root = _write(tmp_path, _coco(annotations=annotations))
    with caplog.at_level(logging.WARNING, logger="cxr_codet.data.datasets.coco_cxr"):
        dicts = load_cxr_coco_json(json_file, image_root)
    assert dicts[0]["annotations"] == [] and dicts[0]["image_labels"] == [3]  # kept without its bad boxes, with
    assert dicts[0]["box_supervised"] is False  # their finding: image-level only, not a No-finding image
    assert [a["bbox"] for a in dicts[1]["annotations"]] == [[0.0, 70.0, 49.0, 10.0]]
    assert [a["bbox"] for a in dicts[2]["annotations"]] == [[1.0, 2.0, 3.0, 4.0]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert json_file in warnings[0]
    degenerate = "skipped 2 (degenerate box (w or h <= 0); e.g. annotation 1 of image 1, annotation 2 of image 1)"
    assert degenerate in warnings[0]
    assert "skipped 2 (box outside the image; e.g. annotation 4 of image 2, annotation 5 of image 2)" in warnings[0]
    assert "clipped 1 (clipped to the image; e.g. annotation 3 of image 2)" in warnings[0]
    assert ("1 image keeps findings that have no box left (image-level only, not No finding); e.g. image 1"
            in warnings[0])


def test_clean_file_gives_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        load_cxr_coco_json(*_write(tmp_path, _coco()))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


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
        coco = _coco(images=[{"id": "abc", "file_name": "abc.png", "width": 100, "height": 80}], annotations=[])
        with open(os.path.join(base, "annotations", "vindr_cxr_val.json"), "w") as f:
            json.dump(coco, f)
        dicts = DatasetCatalog.get("vindr_cxr_val")
    finally:
        shutil.rmtree(base, ignore_errors=True)  # the datasets root is shared by the whole test session
    assert dicts[0]["file_name"] == os.path.join(base, "images", "train", "abc.png") and dicts[0]["image_id"] == "abc"
    assert MetadataCatalog.get("vindr_cxr_val").thing_classes == list(VINDR_CXR_CLASSES)
    assert MetadataCatalog.get("vindr_cxr_test").image_root == os.path.join(base, "images", "test")
