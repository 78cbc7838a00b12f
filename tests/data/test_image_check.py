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


def _exif_rotated(path, width=48, height=32, orientation=6):
    """An image stored width x height whose EXIF orientation (6: rotate 90 degrees) makes decoders turn it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.full((height, width), 90, np.uint8)).save(path, exif=exif.tobytes())
    return path


def _annotated(path, width, height, image_id=0):
    return {"file_name": str(path), "image_id": image_id, "width": width, "height": height,
            "annotations": [{"bbox": [1, 1, 5, 5], "bbox_mode": 1, "category_id": 0, "iscrowd": 0}]}


def _mapper_accepts(record, cfg):
    from cxr_codet.data.mapper import CXRDatasetMapper

    try:
        CXRDatasetMapper(cfg, is_train=True)(dict(record))
        return True
    except (ValueError, OSError) as e:  # detectron2's SizeMismatchError is a ValueError
        return str(e)


def test_the_check_sees_the_exif_orientation_the_decoders_apply(tmp_path):
    cfg = build_cfg(BASELINE, ["INPUT.MIN_SIZE_TRAIN", (32,), "INPUT.MAX_SIZE_TRAIN", 64], cpu=True)
    for suffix in (".jpg", ".png"):
        path = _exif_rotated(tmp_path / f"rotated{suffix}")
        as_stored, as_decoded = _annotated(path, 48, 32), _annotated(path, 32, 48)
        for cache in ("first.json", "first.json", "other.json"):  # the second check reads the cache
            with pytest.raises(BadImagesError) as error:
                check_images([as_stored], "set", cache_file=tmp_path / cache)
            assert (f"rotated{suffix} (image_id 0): the file is 48x32 pixels but its EXIF orientation 6 turns it to "
                    "32x48 when decoded; the dataset says 48x32") in str(error.value)
            assert check_images([as_decoded], "set", cache_file=tmp_path / cache) == [as_decoded]
        assert "Mismatched image shape" in _mapper_accepts(as_stored, cfg)  # what used to stop training
        assert _mapper_accepts(as_decoded, cfg) is True


def test_an_old_cache_entry_without_the_orientation_is_read_again(tmp_path):
    path = _exif_rotated(tmp_path / "rotated.jpg")
    cache = tmp_path / "cache.json"
    info = path.stat()
    cache.write_text(json.dumps({str(path.resolve()): [info.st_size, info.st_mtime_ns, 48, 32]}))
    with pytest.raises(BadImagesError, match="EXIF orientation 6 turns it to 32x48"):
        check_images([_annotated(path, 48, 32)], "set", cache_file=cache)


def test_an_image_the_resize_would_shrink_below_a_pixel_is_refused_or_skipped_up_front(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cv2.imwrite(str(tmp_path / "thin.png"), np.full((4000, 10), 80, np.uint8))
    cv2.imwrite(str(tmp_path / "fine.png"), np.full((64, 80), 80, np.uint8))
    records = [_annotated(tmp_path / "thin.png", 10, 4000, 1), _annotated(tmp_path / "fine.png", 80, 64, 2)]
    name = _register(records)
    cfg = build_cfg(BASELINE, ["DATASETS.TRAIN", (name,), "DATASETS.TEST", (name,), "DATALOADER.NUM_WORKERS", 0,
                               "INPUT.MIN_SIZE_TRAIN", (64, 96), "INPUT.MAX_SIZE_TRAIN", 64,
                               "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 64], cpu=True)
    assert "height and width must be > 0" in _mapper_accepts(records[0], cfg)  # what used to stop training
    with pytest.raises(BadImagesError) as error:
        build_cxr_train_loader(cfg)
    assert ("thin.png (image_id 1): resized to a short side of 64 within 64 pixels (INPUT.MIN_SIZE_TRAIN, "
            "INPUT.MAX_SIZE_TRAIN) its 10x4000 pixels would become 0x64; the resize cannot make an image that "
            "thin") in str(error.value)
    with pytest.raises(BadImagesError, match=r"\(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST\) its 10x4000 pixels"):
        build_cxr_test_loader(cfg, name)
    cfg.defrost()
    cfg.DATALOADER.SKIP_BAD_IMAGES = True
    assert [d["image_id"] for d in build_cxr_test_loader(cfg, name).dataset] == [2]
    cfg.INPUT.MIN_SIZE_TEST = 0  # no resize at test time: nothing to refuse
    cfg.DATALOADER.SKIP_BAD_IMAGES = False
    assert len(build_cxr_test_loader(cfg, name).dataset) == 2


def test_image_ids_of_mixed_types_are_refused_before_training(tmp_path, monkeypatch):
    """COCOeval sorts the image ids: int and str ids crashed it after a whole training run."""
    from cxr_codet.data.build import check_test_images

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    records = _dataset(tmp_path)[:4]
    records[1]["image_id"], records[3]["image_id"] = "1", "patient-3"
    name = _register(records)
    cfg = build_cfg(BASELINE, ["DATASETS.TEST", (name,), "DATALOADER.SKIP_BAD_IMAGES", True], cpu=True)
    with pytest.raises(ValueError) as error:
        check_test_images(cfg)
    assert str(error.value) == (
        f"the image ids of the test set {name} mix types: 2 int (e.g. 0 for {records[0]['file_name']}), 2 str (e.g. "
        f"'1' for {records[1]['file_name']}); COCO evaluation sorts them, so give every image an id of one type "
        "(integers, as COCO does)")
