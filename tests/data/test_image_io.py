"""data/image_io.py: one reader for every image (8-, 12- and 16-bit PNGs windowed the same way everywhere) and
clear errors for empty, truncated and huge files."""
import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import PHANTOM, REPO_ROOT
from dicom_files import ramp, write_dicom
from image_files import HUGE, truncated_png, twelve_bit, write_gray_png
from tiny_cxr_codet import save_tiny_model

from cxr_codet.benchmark.memory import PeakMemory
from cxr_codet.config import build_cfg
from cxr_codet.data import image_io
from cxr_codet.data.converters.images import ImageJob, convert_one
from cxr_codet.data.image_io import read_gray
from cxr_codet.data.mapper import CXRDatasetMapper, read_gray_image
from cxr_codet.demo.inputs import read_input_image
from cxr_codet.demo.predictor import CXRPredictor


def test_twelve_bit_png_is_windowed_not_black_in_reader_mapper_and_demo(tmp_path, caplog):
    expected = twelve_bit(tmp_path / "twelve.png")
    image_io._window_logged = False
    with caplog.at_level(logging.INFO, logger="cxr_codet.data.image_io"):
        pixels = read_gray(tmp_path / "twelve.png")
        read_gray(tmp_path / "twelve.png")
    assert pixels.dtype == np.uint8 and pixels.max() == 255
    np.testing.assert_array_equal(pixels, expected)
    assert [r.getMessage() for r in caplog.records].count(image_io.WINDOWING) == 1  # said once, not per image
    assert read_input_image(tmp_path / "twelve.png", 0).pixels.max() == 255
    cfg = build_cfg(str(PHANTOM / "faster_rcnn_R18_FPN_phantom.yaml"),
                    ["INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 80])
    record = {"file_name": str(tmp_path / "twelve.png"), "image_id": 1, "height": 64, "width": 80}
    mapped = CXRDatasetMapper(cfg, is_train=False)(record)
    np.testing.assert_array_equal(mapped["image"][0].numpy(), expected)
    cfg.defrost()
    cfg.INPUT.GRAYSCALE = False
    mapped = CXRDatasetMapper(cfg, is_train=False)(record)
    np.testing.assert_array_equal(mapped["image"][2].numpy(), expected)


def test_eight_bit_files_read_as_before(tmp_path):
    gray = (np.arange(50 * 40).reshape(50, 40) % 251).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(read_gray(tmp_path / "gray.png"), gray)
    color = np.dstack([gray, 255 - gray, gray // 2])
    cv2.imwrite(str(tmp_path / "color.png"), color)
    before = cv2.imdecode(np.fromfile(tmp_path / "color.png", np.uint8), cv2.IMREAD_GRAYSCALE)  # the old reading
    np.testing.assert_array_equal(read_gray(tmp_path / "color.png"), before)


def test_no_module_decodes_images_around_the_shared_reader():
    offenders = [
        str(path.relative_to(REPO_ROOT)) for path in sorted((REPO_ROOT / "cxr_codet").rglob("*.py"))
        if path.name != "image_io.py" and re.search(r"cv2\.imread\(|IMREAD_GRAYSCALE", path.read_text())
    ]
    assert offenders == []


def test_converter_16_bit_output_gives_the_8_bit_detections(tmp_path, shared_data):
    dicom = shared_data / "dicom" / "cr-chest-jpeg-baseline.dcm"
    write_dicom(tmp_path / "ramp.dicom", ramp(height=300, width=400))
    config = save_tiny_model(tmp_path / "model", PHANTOM / "faster_rcnn_R18_FPN_phantom.yaml", group_size=None)
    cfg = build_cfg(str(config), ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0], cpu=True)
    predictor = CXRPredictor(cfg)
    for source in (dicom, tmp_path / "ramp.dicom"):
        pixels, detections = {}, {}
        for depth in (8, 16):
            target = tmp_path / f"{source.stem}_{depth}.png"
            assert convert_one(ImageJob(source.stem, source, target), 256, depth).status == "converted"
            assert cv2.imread(str(target), cv2.IMREAD_UNCHANGED).dtype == (np.uint8 if depth == 8 else np.uint16)
            pixels[depth] = read_gray(target)
            with torch.no_grad():
                detections[depth] = predictor.predict(predictor.prepare(pixels[depth]), pixels[depth].shape)
        assert np.abs(pixels[8].astype(int) - pixels[16].astype(int)).max() <= 1  # within rounding
        assert len(detections[8]) > 0 and len(detections[8]) == len(detections[16])
        np.testing.assert_allclose(detections[16].pred_boxes.tensor, detections[8].pred_boxes.tensor, atol=1.0)
        np.testing.assert_allclose(detections[16].scores, detections[8].scores, atol=0.02)








def _record(path: Path, width: int, height: int) -> dict:
    return {"file_name": str(path), "image_id": 7, "width": width, "height": height}


def test_image_reader_refuses_empty_truncated_and_huge_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    truncated_png(tmp_path / "truncated.png")
    write_gray_png(tmp_path / "huge.png", HUGE, HUGE)
    for name, message in (("empty.png", "the file is empty"),
                          ("truncated.png", "not a decodable PNG/JPEG image")):
        with pytest.raises(ValueError, match=rf"cannot read image '.*{name}' \(dataset record image_id=7\): {message}"):
            read_gray_image(_record(tmp_path / name, 64, 64))
    with PeakMemory("cpu") as memory, pytest.raises(ValueError, match=r"huge\.png.* 10000x10000 pixels .* above the"):
        read_gray_image(_record(tmp_path / "huge.png", HUGE, HUGE))
    assert memory.peak_mib < 40, "the 95 MiB image must not be decoded"
