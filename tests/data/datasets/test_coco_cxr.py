"""data/datasets/coco_cxr.py: registering and loading CXR COCO JSON, with errors that name the file and entry
and counted skipped or clipped boxes."""
import json
import logging
import os

import pytest
from coco_files import coco_dict, write_coco
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES, VINDR_CXR_CLASSES
from cxr_codet.data.datasets.coco_cxr import load_cxr_coco_json, register_cxr_coco


def test_register_and_load(tmp_path):
    json_file, image_root = write_coco(tmp_path, coco_dict())
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
    coco = coco_dict(categories=[{"id": 7, "name": "Effusion"}, {"id": 3, "name": "Cardiomegaly"}])
    dicts = load_cxr_coco_json(*write_coco(tmp_path, coco), class_names=NIH_CXR14_BBOX_CLASSES)
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [2, 1]


def test_unknown_dataset_name_is_a_clear_key_error():
    with pytest.raises(KeyError, match="Dataset 'no_such_cxr_dataset' is not registered"):
        DatasetCatalog.get("no_such_cxr_dataset")


def test_missing_json_file(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=f"COCO annotation file {missing} does not exist"):
        load_cxr_coco_json(missing, str(tmp_path))


def test_missing_image_folder(tmp_path):
    json_file, _ = write_coco(tmp_path, coco_dict())
    with pytest.raises(FileNotFoundError, match="image folder .*elsewhere of .*train.json does not exist"):
        load_cxr_coco_json(json_file, str(tmp_path / "elsewhere"))


@pytest.mark.parametrize(
    "coco, message",
    [
        ("{not json", r"train.json is not valid JSON"),
        ({"images": [], "annotations": []}, r"train.json: top-level key 'categories' is missing or not a list"),
        (coco_dict(categories=[{"id": 7, "name": "Tumour"}]), r"category id 7 has unknown name 'Tumour'; category names"),
        (
            coco_dict(categories=[{"id": 7, "name": "ILD"}, {"id": 7, "name": "Cardiomegaly"}]),
            r"category id 7 appears more than once",
        ),
        (
            coco_dict(categories=[{"id": 7, "name": "ILD"}, {"id": 3, "name": "ILD"}]),
            r"category name 'ILD' is used by ids 7 and 3",
        ),
        (
            coco_dict(annotations=[{"id": 9, "image_id": 1, "category_id": 99, "bbox": [1, 1, 2, 2]}]),
            r"annotation id 9 \(image id 1\) has unknown category id 99; known ids: \[3, 7\]",
        ),
        (
            coco_dict(annotations=[{"id": 4, "image_id": 42, "category_id": 3, "bbox": [1, 1, 2, 2]}]),
            r"annotation id 4 refers to unknown image id 42",
        ),
        (
            coco_dict(annotations=[{"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2]}]),
            r"annotation id 5 \(image id 1\) has malformed 'bbox' \[1, 1, 2\]",
        ),
        (
            coco_dict(images=[{"id": 3, "file_name": "a.png", "width": 9, "height": 9}] * 2, annotations=[]),
            r"train.json: duplicate image id 3",
        ),
        (
            coco_dict(images=[{"id": 2, "file_name": "a.png", "height": 9}], annotations=[]),
            r"image id 2 has no positive 'width' \(got None\)",
        ),
        (
            coco_dict(images=[{"id": 2, "file_name": "a.png", "width": 9, "height": 0}], annotations=[]),
            r"image id 2 has no positive 'height' \(got 0\)",
        ),
        (
            coco_dict(images=[{"file_name": "x.png", "width": 9, "height": 9}], annotations=[]),
            r"image entry #0 \(file 'x.png'\) has no 'id'",
        ),
    ],
)
def test_bad_input_is_an_error_naming_file_and_id(tmp_path, coco, message):
    json_file, image_root = write_coco(tmp_path, coco)
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
    json_file, image_root = write_coco(tmp_path, coco_dict(annotations=annotations))
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
        load_cxr_coco_json(*write_coco(tmp_path, coco_dict()))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _changed_coco(**changes):
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80, "caption": "Findings: nodule."},
                   {"id": 2, "file_name": "b.png", "width": 100, "height": 80}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [10, 10, 20, 20]}],
        "categories": [{"id": 0, "name": "Nodule/Mass"}],
    }
    coco.update(changes)
    return coco


def _load(tmp_path, content):
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "data.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return load_cxr_coco_json(str(path), str(tmp_path / "images"))


IMAGE = {"id": 1, "file_name": "a.png", "width": 100, "height": 80}


BAD_COCO = {
    "empty file": (b"", r"data\.json is not valid JSON"),
    "non-UTF-8 caption": (b'{"images": [{"caption": "caf\xe9"}], "annotations": [], "categories": []}',
                          r"data\.json is not UTF-8 text \(byte \d+"),
    "top level is a list": ("[]", r"expected a JSON object .* got a list"),
    "missing annotations": (json.dumps({"images": [], "categories": []}), r"top-level key 'annotations' is missing"),
    "image entry not an object": (_changed_coco(images=[IMAGE, 5]), r"images entry #1 is a int, not an object"),
    "image without id": (_changed_coco(images=[{"file_name": "a.png", "width": 1, "height": 1}]),
                         r"image entry #0 \(file 'a.png'\) has no 'id'"),
    "image without width": (_changed_coco(images=[{"id": 1, "file_name": "a.png", "height": 80}]),
                            r"image id 1 has no positive 'width' \(got None\)"),
    "duplicate image id": (_changed_coco(images=[IMAGE, dict(IMAGE, file_name="b.png")]), r"duplicate image id 1"),
    "caption not text": (_changed_coco(images=[dict(IMAGE, caption=3)]), r"image id 1 has a 'caption' that is not text"),
    "captions not an object": (_changed_coco(images=[dict(IMAGE, captions="short")]),
                               r"image id 1 has 'captions' 'short'; expected \{granularity: text\}"),
    "unknown class name": (_changed_coco(categories=[{"id": 0, "name": "Tumour"}]),
                           r"category id 0 has unknown name 'Tumour'"),
    "annotation without bbox": (_changed_coco(annotations=[{"id": 4, "image_id": 1, "category_id": 0}]),
                                r"annotation id 4 \(image id 1\) has malformed 'bbox' None"),
    "annotation without category": (_changed_coco(annotations=[{"id": 4, "image_id": 1, "bbox": [1, 1, 2, 2]}]),
                                    r"annotation id 4 \(image id 1\) has unknown category id None"),
    "annotation of unknown image": (_changed_coco(annotations=[{"id": 4, "image_id": 9, "category_id": 0,
                                                        "bbox": [1, 1, 2, 2]}]),
                                    r"annotation id 4 refers to unknown image id 9"),
    "NaN coordinate": ('{"images": [{"id": 1, "file_name": "a.png", "width": 9, "height": 9}], "annotations": '
                       '[{"id": 4, "image_id": 1, "category_id": 0, "bbox": [NaN, 1, 2, 2]}], '
                       '"categories": [{"id": 0, "name": "Nodule/Mass"}]}',
                       r"annotation id 4 \(image id 1\) has malformed 'bbox' \[nan, 1, 2, 2\]"),
    "boolean coordinate": (_changed_coco(annotations=[{"id": 4, "image_id": 1, "category_id": 0, "bbox": [1, 1, True, 2]}]),
                           r"malformed 'bbox' \[1, 1, True, 2\]"),
}


@pytest.mark.parametrize("case", list(BAD_COCO))
def test_coco_loader_names_the_file_and_the_entry(tmp_path, case):
    content, message = BAD_COCO[case]
    with pytest.raises(ValueError, match=message):
        _load(tmp_path, content)


def test_coco_loader_counts_skipped_and_clipped_boxes(tmp_path, caplog):
    boxes = {1: [10, 10, 20, 20], 2: [-1, -1, 20, 20], 3: [-50, -50, 20, 20], 4: [30, 30, 0, 10], 5: [5, 5, 10, -3]}
    annotations = [{"id": i, "image_id": 1, "category_id": 0, "bbox": b} for i, b in boxes.items()]
    with caplog.at_level(logging.WARNING, logger="cxr_codet.data.datasets.coco_cxr"):
        records = _load(tmp_path, _changed_coco(annotations=annotations))
    kept = records[0]["annotations"]
    assert [a["bbox"] for a in kept] == [[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 19.0, 19.0]]
    assert records[1]["annotations"] == []  # the image without boxes is kept as a "No finding" image
    warning = caplog.text
    assert "skipped 2 (degenerate box (w or h <= 0); e.g. annotation 4 of image 1, annotation 5 of image 1)" in warning
    assert "skipped 1 (box outside the image; e.g. annotation 3 of image 1)" in warning
    assert "clipped 1 (clipped to the image; e.g. annotation 2 of image 1)" in warning


def test_an_image_whose_boxes_were_all_skipped_keeps_its_findings_and_is_not_a_negative(tmp_path, caplog):
    """Its findings stay its image labels (as the VinDr converter keeps them); with no box left it is image-level
    only ("box_supervised" False), so no box loss reads it as a No-finding image."""
    coco = _changed_coco(
        images=[{"id": k, "file_name": f"{k}.png", "width": 100, "height": 80} for k in (1, 2, 3, 4)]
        + [{"id": 5, "file_name": "5.png", "width": 100, "height": 80, "image_labels": ["ILD"]}],
        annotations=[
            {"id": 1, "image_id": 1, "category_id": 0, "bbox": [30, 30, 0, 10]},  # its only box: zero width
            {"id": 2, "image_id": 2, "category_id": 0, "bbox": [10, 10, 20, 20]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [500, 500, 20, 20]},  # outside: skipped
            {"id": 4, "image_id": 4, "category_id": 1, "bbox": [10, 10, 20, 20]},
        ],
        categories=[{"id": 0, "name": "Nodule/Mass"}, {"id": 1, "name": "ILD"}],
    )
    with caplog.at_level(logging.WARNING, logger="cxr_codet.data.datasets.coco_cxr"):
        records = {r["image_id"]: r for r in _load(tmp_path, coco)}
    nodule, ild = VINDR_CXR_CLASSES.index("Nodule/Mass"), VINDR_CXR_CLASSES.index("ILD")
    assert records[1]["annotations"] == [] and records[1]["image_labels"] == [nodule]
    assert records[1]["box_supervised"] is False
    assert records[2]["image_labels"] == sorted([nodule, ild]) and "box_supervised" not in records[2]
    assert records[3]["image_labels"] == [] and "box_supervised" not in records[3]  # the only No-finding image
    assert records[4]["image_labels"] == [ild]
    assert records[5]["image_labels"] == [ild] and records[5]["box_supervised"] is False  # labels from the file
    assert ("2 images keep findings that have no box left (image-level only, not No finding); e.g. image 1, "
            "image 5") in caplog.text
    with pytest.raises(ValueError, match=r"data.json: image id 5 has image_labels \['Tumour'\]: 'Tumour' is not "
                                         r"one of the classes"):
        coco["images"][4]["image_labels"] = ["Tumour"]
        _load(tmp_path, coco)

