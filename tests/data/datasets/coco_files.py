"""COCO JSON for the dataset tests: a small valid CXR COCO file, changed as a test needs, written beside its
images."""
import json


def coco_dict(images=None, annotations=None, categories=None):
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


def write_coco(tmp_path, coco, name="train.json"):
    image_root = tmp_path / "images"
    image_root.mkdir(exist_ok=True)
    json_file = tmp_path / name
    json_file.write_text(json.dumps(coco) if isinstance(coco, dict) else coco)
    return str(json_file), str(image_root)
