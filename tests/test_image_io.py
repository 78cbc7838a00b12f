"""16-bit PNGs: one reader (cxr_codet.data.image_io) for the mapper, the demo and the overlays reads them at full
depth and windows them, so a 12-bit image stored in 16 bits is not black and the converter's --bit-depth 16
output gives the same detections as its 8-bit output."""
import logging
import re
from pathlib import Path

import cv2
import numpy as np
import torch
from test_demo import save_tiny_model
from test_dicom import ramp, write_dicom

from cxr_codet.data import image_io
from cxr_codet.data.converters.images import ImageJob, convert_one
from cxr_codet.data.image_io import read_gray
from cxr_codet.data.mapper import CXRDatasetMapper
from cxr_codet.demo.inputs import read_input_image
from cxr_codet.demo.predictor import CXRPredictor
from cxr_codet.config import build_cfg

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "configs" / "phantom"


def _twelve_bit(path: Path) -> np.ndarray:
    """A 12-bit ramp (0..4095) written as a 16-bit PNG; returns what its 8-bit rendering should be."""
    values = (np.arange(64 * 80).reshape(64, 80) * 4095 // (64 * 80 - 1)).astype(np.uint16)
    cv2.imwrite(str(path), values)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    return np.rint(values * (255 / 4095)).astype(np.uint8)


def test_twelve_bit_png_is_windowed_not_black_in_reader_mapper_and_demo(tmp_path, caplog):
    expected = _twelve_bit(tmp_path / "twelve.png")
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
        str(path.relative_to(REPO)) for path in sorted((REPO / "cxr_codet").rglob("*.py"))
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


def test_evaluator_overlay_of_a_16_bit_image_shows_the_windowed_image(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from cxr_codet.evaluation.localization_evaluation import OVERLAY_FOLDER, LocalizationEvaluator

    expected = _twelve_bit(tmp_path / "twelve.png")
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
