"""CXRDatasetMapper: grayscale reading, channel repetition, augmentation of boxes, pass-through fields, errors."""
import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import BASELINE, make_cfg
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from image_files import write_gray_png

from cxr_codet.data.mapper import CXRDatasetMapper


def _cfg(fmt="BGR", grayscale=True):
    cfg = make_cfg(tiny=False)
    cfg.INPUT.FORMAT = fmt
    cfg.INPUT.GRAYSCALE = grayscale
    cfg.INPUT.MIN_SIZE_TRAIN = (160,)
    cfg.INPUT.MAX_SIZE_TRAIN = 320
    cfg.INPUT.MIN_SIZE_TEST = 192
    cfg.INPUT.MAX_SIZE_TEST = 320
    cfg.INPUT.RANDOM_FLIP = "none"
    return cfg


def _record(tmp_path, image, boxes=((10, 20, 30, 15),)):
    path = tmp_path / "cxr.png"
    cv2.imwrite(str(path), image)
    return {
        "file_name": str(path),
        "image_id": 17,
        "height": image.shape[0],
        "width": image.shape[1],
        "annotations": [
            {"bbox": list(b), "bbox_mode": BoxMode.XYWH_ABS, "category_id": 3, "iscrowd": 0} for b in boxes
        ],
        "image_labels": [3],
        "caption": "Findings: cardiomegaly.",
        "captions": {"elaborate": "long", "unelaborate": "Findings: cardiomegaly."},
    }


def _gradient(height=80, width=100):
    return (np.arange(height * width).reshape(height, width) % 251).astype(np.uint8)


def test_phantom_record_training_output():
    record = next(d for d in DatasetCatalog.get("cxr_phantom_tiny_train") if len(d["annotations"]) >= 2)
    original = copy.deepcopy(record)
    out = CXRDatasetMapper(_cfg(), is_train=True)(record)
    assert out["image"].shape == (3, 160, 160) and out["image"].dtype == torch.uint8
    assert torch.equal(out["image"][0], out["image"][1]) and torch.equal(out["image"][0], out["image"][2])
    assert out["image"].float().std() > 10  # a real image, not a constant
    instances = out["instances"]
    assert len(instances) == len(record["annotations"])
    expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in record["annotations"])])
    assert torch.allclose(instances.gt_boxes.tensor, expected * 160 / 128)
    assert instances.gt_classes.tolist() == [a["category_id"] for a in record["annotations"]]
    assert out["image_labels"] == record["image_labels"] and out["caption"] == record["caption"]
    assert out["captions"] == record["captions"]
    assert record == original  # the catalog's record is not modified


def test_pixels_follow_the_file(tmp_path):
    image = _gradient()
    out = CXRDatasetMapper(_cfg(), is_train=False, augmentations=[], image_format="BGR")(_record(tmp_path, image))
    assert np.array_equal(out["image"][1].numpy(), image)


def test_inference_output_keeps_labels_and_drops_annotations(tmp_path):
    out = CXRDatasetMapper(_cfg(), is_train=False)(_record(tmp_path, _gradient()))
    assert out["image"].shape == (3, 192, 240)
    assert "annotations" not in out and "instances" not in out
    assert out["image_labels"] == [3] and out["caption"] == "Findings: cardiomegaly."
    assert (out["height"], out["width"]) == (80, 100)


@pytest.mark.parametrize("fmt, channels", [("RGB", 3), ("BGR", 3), ("L", 1)])
def test_format_sets_channel_count(tmp_path, fmt, channels):
    out = CXRDatasetMapper(_cfg(fmt), is_train=False)(_record(tmp_path, _gradient()))
    assert out["image"].shape == (channels, 192, 240)


def test_color_file_is_read_as_gray(tmp_path):
    color = np.zeros((80, 100, 3), np.uint8)
    color[..., 2] = 200  # red in BGR
    out = CXRDatasetMapper(_cfg(), is_train=False, augmentations=[], image_format="RGB")(_record(tmp_path, color))
    gray = cv2.cvtColor(color, cv2.COLOR_BGR2GRAY).astype(int)  # the PNG decoder may round differently by 1
    assert torch.equal(out["image"][0], out["image"][1]) and torch.equal(out["image"][0], out["image"][2])
    assert np.abs(out["image"][0].numpy().astype(int) - gray).max() <= 1


def test_non_grayscale_mode_reads_color(tmp_path):
    color = np.zeros((80, 100, 3), np.uint8)
    color[..., 2] = 200
    out = CXRDatasetMapper(_cfg("RGB", grayscale=False), is_train=False)(_record(tmp_path, color))
    assert out["image"].shape == (3, 192, 240)
    assert out["image"][0].float().mean() > 150 and out["image"][2].float().mean() < 5  # red channel first


def test_horizontal_flip_moves_boxes_with_pixels(tmp_path):
    image = np.zeros((80, 100), np.uint8)
    image[20:35, 10:40] = 255
    mapper = CXRDatasetMapper(
        _cfg(), is_train=True, augmentations=[T.RandomFlip(prob=1.0, horizontal=True)], image_format="BGR"
    )
    out = mapper(_record(tmp_path, image, boxes=((10, 20, 30, 15),)))
    x0, y0, x1, y1 = out["instances"].gt_boxes.tensor[0].tolist()
    assert (x0, y0, x1, y1) == (60.0, 20.0, 90.0, 35.0)
    assert (out["image"][0, 20:35, 60:90] == 255).all() and out["image"][0].sum() == 255 * 30 * 15


def test_missing_image_names_file_and_record(tmp_path):
    record = _record(tmp_path, _gradient())
    record["file_name"] = str(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match=r"gone.png' \(dataset record image_id=17\).*does not exist"):
        CXRDatasetMapper(_cfg(), is_train=True)(record)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n corrupt bytes"])
def test_corrupt_image_names_file_and_record(tmp_path, content):
    record = _record(tmp_path, _gradient())
    with open(record["file_name"], "wb") as f:
        f.write(content)
    reason = "(the file is empty|not a decodable PNG/JPEG image)"
    with pytest.raises(ValueError, match=rf"cxr.png' \(dataset record image_id=17\): {reason}"):
        CXRDatasetMapper(_cfg(), is_train=True)(record)


def test_size_mismatch_is_reported(tmp_path):
    record = _record(tmp_path, _gradient())
    record["width"] = 64
    with pytest.raises(Exception, match=r"Mismatched image shape for image .*cxr.png"):
        CXRDatasetMapper(_cfg(), is_train=False)(record)


def test_config_errors():
    cfg = get_cfg()
    with pytest.raises(KeyError, match="cfg.INPUT.GRAYSCALE is missing: call cxr_codet.add_cxr_codet_config"):
        CXRDatasetMapper(cfg, is_train=True)
    with pytest.raises(ValueError, match="INPUT.FORMAT 'YUV-BT.601' is not supported with INPUT.GRAYSCALE"):
        CXRDatasetMapper(_cfg("YUV-BT.601"), is_train=True)








def _size_record(path: Path, width: int, height: int) -> dict:
    return {"file_name": str(path), "image_id": 7, "width": width, "height": height}


def test_mapper_resizes_a_1x1_image_and_names_an_impossible_aspect_ratio(tmp_path):
    mapper = CXRDatasetMapper(make_cfg(BASELINE), is_train=False)
    mapped = mapper(_size_record(write_gray_png(tmp_path / "one.png", 1, 1), 1, 1))
    assert tuple(mapped["image"].shape) == (3, 64, 64)
    write_gray_png(tmp_path / "sliver.png", 3000, 1)
    with pytest.raises(ValueError, match=r"cannot augment image '.*sliver\.png' .* of size \(1, 3000\)"):
        mapper(_size_record(tmp_path / "sliver.png", 3000, 1))
    with pytest.raises(ValueError, match=r"Mismatched image shape.*sliver\.png"):  # record and file disagree
        mapper(_size_record(tmp_path / "sliver.png", 64, 64))
