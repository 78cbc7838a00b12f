"""Every image of the training and test datasets is checked when the loader is built (exists, header readable,
size as in the JSON): training refuses to start listing the offenders, or skips and counts them with
DATALOADER.SKIP_BAD_IMAGES; the second check of unchanged files reads no image header (cache)."""
import json
import logging
import uuid

import cv2
import numpy as np
import pytest
from conftest import BASELINE
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from cxr_codet.config import build_cfg
from cxr_codet.data import image_check
from cxr_codet.data.build import build_cxr_test_loader, build_cxr_train_loader
from cxr_codet.data.image_check import BadImagesError, check_images


def _dataset(tmp_path, n_good=6):
    """Records of `n_good` fine 40x30 PNGs, then a missing file, an empty file, a non-image and a size mismatch."""
    records = []
    for k in range(n_good):
        path = tmp_path / f"good{k}.png"
        cv2.imwrite(str(path), np.full((30, 40), 100 + k, np.uint8))
        records.append({"file_name": str(path), "image_id": k, "width": 40, "height": 30})
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((20, 20), np.uint8))
    for k, (name, size) in enumerate((("gone.png", (40, 30)), ("empty.png", (40, 30)), ("text.png", (40, 30)),
                                      ("small.png", (40, 30))), start=100):
        records.append({"file_name": str(tmp_path / name), "image_id": k, "width": size[0], "height": size[1]})
    for record in records:
        record["annotations"] = [{"bbox": [1, 1, 10, 10], "bbox_mode": 1, "category_id": 0, "iscrowd": 0}]
    return records


def _register(records):
    name = f"image_check_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).set(thing_classes=["Nodule"], evaluator_type="coco")
    return name


def test_check_names_every_kind_of_bad_image(tmp_path):
    records = _dataset(tmp_path)
    with pytest.raises(BadImagesError) as error:
        check_images(records, "train set", cache_file=tmp_path / "cache.json")
    message = str(error.value)
    assert message.startswith("4 of 10 images of the train set cannot be used:")
    assert "gone.png (image_id 100): the file does not exist" in message
    assert "empty.png (image_id 101): the file is empty" in message
    assert "text.png (image_id 102): unreadable image header" in message
    assert "small.png (image_id 103): the file is 20x20 pixels, the dataset says 40x30" in message
    assert "DATALOADER.SKIP_BAD_IMAGES True" in message
    assert "\n" not in message


def test_skip_bad_images_keeps_the_good_ones_and_logs_the_count(tmp_path, caplog):
    records = _dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cxr_codet.data.image_check"):
        kept = check_images(records, "train set", skip_bad=True, cache_file=tmp_path / "cache.json")
    assert [r["image_id"] for r in kept] == [0, 1, 2, 3, 4, 5]
    assert any("skipping 4 of 10 images of the train set" in r.getMessage() for r in caplog.records)
    with pytest.raises(BadImagesError, match=r"4 of 4 images of the train set cannot be used, none is left to skip"):
        check_images(records[6:], "train set", skip_bad=True, cache_file=tmp_path / "cache.json")


def test_second_check_reads_no_header_and_notices_a_changed_file(tmp_path, monkeypatch):
    records = _dataset(tmp_path)[:6]
    cache = tmp_path / "cache" / "headers.json"
    assert check_images(records, "set", cache_file=cache) == records
    assert len(json.loads(cache.read_text())) == 6
    opened = []
    real_open = Image.open
    monkeypatch.setattr(image_check.Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert check_images(records, "set", cache_file=cache) == records
    assert opened == []  # every header came from the cache
    cv2.imwrite(records[2]["file_name"], np.zeros((10, 10), np.uint8))  # same name, new content
    with pytest.raises(BadImagesError, match=r"good2\.png \(image_id 2\): the file is 10x10 pixels"):
        check_images(records, "set", cache_file=cache)
    assert [str(p) for p in opened] == [records[2]["file_name"]]


def test_large_sets_are_checked_in_parallel_with_a_progress_bar(tmp_path, capsys):
    path = tmp_path / "one.png"
    cv2.imwrite(str(path), np.zeros((30, 40), np.uint8))
    records = [{"file_name": str(path), "image_id": k, "width": 40, "height": 30} for k in range(2500)]
    assert len(check_images(records, "big set", cache_file=tmp_path / "cache.json")) == 2500
    assert "checking images of the big set" in capsys.readouterr().err


def test_loaders_refuse_bad_images_unless_told_to_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    name = _register(_dataset(tmp_path))
    cfg = build_cfg(BASELINE, ["DATASETS.TRAIN", (name,), "DATASETS.TEST", (name,), "DATALOADER.NUM_WORKERS", 0,
                               "INPUT.MIN_SIZE_TRAIN", (32,), "INPUT.MIN_SIZE_TEST", 32])
    with pytest.raises(BadImagesError, match=rf"4 of 10 images of the training set \({name}\) cannot be used"):
        build_cxr_train_loader(cfg)
    with pytest.raises(BadImagesError, match=rf"4 of 10 images of the test set {name} cannot be used"):
        build_cxr_test_loader(cfg, name)
    assert (tmp_path / "xdg" / "cxr_codet" / "image_headers.json").is_file()  # the stated default location
    cfg.defrost()
    cfg.DATALOADER.SKIP_BAD_IMAGES = True
    assert len(build_cxr_test_loader(cfg, name).dataset) == 6
    batch = next(iter(build_cxr_train_loader(cfg)))
    assert all(d["image_id"] < 100 for d in batch)
