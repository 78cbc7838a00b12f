"""tools/demo.py on the real DICOM and on phantom images, with tiny models the tests build and save: overlay
PNG and detection JSON per image, boxes on the original pixel grid, dataset and custom vocabularies."""
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from conftest import PHANTOM, REPO_ROOT
from dicom_files import REAL_DICOM
from tiny_cxr_codet import save_tiny_model

from cxr_codet.config import build_cfg
from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES, VINDR_CXR_CLASSES
from cxr_codet.data.datasets.builtin import datasets_root
from cxr_codet.data.datasets.phantom import ensure_cxr_phantom
from cxr_codet.demo.cli import main as demo_main
from cxr_codet.demo.inputs import collect_inputs
from cxr_codet.demo.outputs import unique_stems
from cxr_codet.demo.predictor import CXRPredictor

JSON_KEYS = {"input", "kind", "width", "height", "decoded_width", "decoded_height", "box_format", "vocabulary",
             "confidence_threshold", "detections"}


@pytest.fixture(scope="module")
def codet_config(tmp_path_factory):
    """A tiny CXR-CoDet whose classifier uses the offline MiniLM embeddings (so new names can be encoded)."""
    folder = tmp_path_factory.mktemp("codet")
    return save_tiny_model(folder, PHANTOM / "cxr_codet_R18_FPN_phantom.yaml", embeddings=None)


@pytest.fixture(scope="module")
def rcnn_config(tmp_path_factory):
    return save_tiny_model(
        tmp_path_factory.mktemp("rcnn"), PHANTOM / "faster_rcnn_R18_FPN_phantom.yaml", group_size=None
    )


@pytest.fixture(scope="module")
def phantom_images(tmp_path_factory):
    """Three phantom radiographs (128 px) in a folder, plus a non-image file the folder scan must ignore."""
    _, image_root = ensure_cxr_phantom(datasets_root(), 24, 128, 2)
    folder = tmp_path_factory.mktemp("phantom_inputs")
    for name in ("000000.png", "000001.png", "000002.png"):
        shutil.copy(Path(image_root) / name, folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _boxes(record):
    return np.array([d["box"] for d in record["detections"]], dtype=np.float64).reshape(-1, 4)


def _assert_boxes_inside(record):
    boxes = _boxes(record)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= record["width"]).all() and (boxes[:, 3] <= record["height"]).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


@pytest.mark.slow
def test_demo_tool_on_the_real_dicom_and_phantom_images(codet_config, phantom_images, shared_data, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "tools/demo.py", "--config-file", str(codet_config),
        "--input", str(shared_data / REAL_DICOM), str(phantom_images), "--output", str(out),
        "--confidence-threshold", "0", "--dicom-long-side", "512", "--cpu",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=os.environ)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summary = json.loads((out / "demo_summary.json").read_text())
    assert [Path(p["input"]).name for p in summary["processed"]] == [
        "cr-chest-jpeg-baseline.dcm", "000000.png", "000001.png", "000002.png"
    ]
    assert summary["skipped"] == []
    for stem in ("cr-chest-jpeg-baseline", "000000", "000001", "000002"):
        record = json.loads((out / f"{stem}.json").read_text())
        assert set(record) == JSON_KEYS
        assert record["vocabulary"] == list(VINDR_CXR_CLASSES) and record["confidence_threshold"] == 0.0
        assert record["detections"], "threshold 0 keeps every detection of the untrained model"
        for detection in record["detections"]:
            assert set(detection) == {"finding", "class_id", "score", "box"}
            assert detection["finding"] == VINDR_CXR_CLASSES[detection["class_id"]] and 0 <= detection["score"] <= 1
        _assert_boxes_inside(record)
        overlay = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (record["decoded_height"], record["decoded_width"], 3)
        assert not (overlay[..., 0] == overlay[..., 1]).all(), "boxes are drawn in colour on the gray image"

    dicom = json.loads((out / "cr-chest-jpeg-baseline.json").read_text())
    assert dicom["kind"] == "dicom"
    assert (dicom["width"], dicom["height"]) == (1024, 1024)  # the DICOM's own grid ...
    assert (dicom["decoded_width"], dicom["decoded_height"]) == (512, 512)  # ... though decoded at 512
    assert _boxes(dicom)[:, 2:].max() > 512, "boxes must be mapped back to the original 1024 grid"
    phantom = json.loads((out / "000000.json").read_text())
    assert phantom["kind"] == "image" and (phantom["width"], phantom["height"]) == (128, 128)


def test_custom_vocabulary_detects_the_given_names(codet_config, phantom_images, tmp_path):
    out = tmp_path / "out"
    status = demo_main([
        "--config-file", str(codet_config), "--input", str(phantom_images / "000000.png"), "--output", str(out),
        "--confidence-threshold", "0", "--custom-vocabulary", "Nodule, Rib fracture",
    ])
    assert status == 0
    record = json.loads((out / "000000.json").read_text())
    assert record["vocabulary"] == ["Nodule", "Rib fracture"]
    assert record["detections"]
    assert {d["class_id"] for d in record["detections"]} <= {0, 1}
    assert {d["finding"] for d in record["detections"]} <= {"Nodule", "Rib fracture"}


def test_vocabulary_of_another_dataset(codet_config, phantom_images, tmp_path):
    out = tmp_path / "out"
    status = demo_main([
        "--config-file", str(codet_config), "--input", str(phantom_images / "000001.png"), "--output", str(out),
        "--confidence-threshold", "0", "--vocabulary", "nih_cxr14",
    ])
    assert status == 0
    record = json.loads((out / "000001.json").read_text())
    assert record["vocabulary"] == list(NIH_CXR14_BBOX_CLASSES)
    assert {d["finding"] for d in record["detections"]} <= set(NIH_CXR14_BBOX_CLASSES)


def test_faster_rcnn_refuses_a_custom_vocabulary_but_runs_its_own(rcnn_config, phantom_images, tmp_path, caplog):
    predictor = CXRPredictor(build_cfg(str(rcnn_config)))
    assert not predictor.open_vocabulary
    with pytest.raises(ValueError, match=r"GeneralizedRCNN detects a fixed set of 14 classes .* cannot switch"):
        predictor.use_vocabulary(["Nodule", "Rib fracture"])
    predictor.use_vocabulary(list(VINDR_CXR_CLASSES))  # its own vocabulary is fine

    logging.getLogger("cxr_codet.demo.cli").addHandler(caplog.handler)
    args = ["--config-file", str(rcnn_config), "--input", str(phantom_images), "--output", str(tmp_path / "out")]
    assert demo_main(args + ["--custom-vocabulary", "Nodule"]) == 2
    assert "demo cannot start" in caplog.text and "fixed set of 14 classes" in caplog.text
    assert not (tmp_path / "out").exists()
    assert demo_main(args + ["--vocabulary", "vindr_cxr", "--confidence-threshold", "0.0"]) == 0
    record = json.loads((tmp_path / "out" / "000002.json").read_text())
    assert record["vocabulary"] == list(VINDR_CXR_CLASSES)
    _assert_boxes_inside(record)


def test_setup_errors_are_named(rcnn_config, phantom_images, tmp_path, caplog):
    logging.getLogger("cxr_codet.demo.cli").addHandler(caplog.handler)
    base = ["--config-file", str(rcnn_config), "--output", str(tmp_path / "out")]
    assert demo_main(base + ["--input", str(tmp_path / "absent.png")]) == 2
    assert "absent.png: no such file or folder" in caplog.text
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    assert demo_main(base + ["--input", str(empty)]) == 2
    assert "empty_folder: the folder holds no" in caplog.text
    image = str(phantom_images / "000000.png")
    assert demo_main(base + ["--input", image, "--opts", "MODEL.WEIGHTS", str(tmp_path / "none.pth")]) == 2
    assert "none.pth: no such checkpoint file" in caplog.text
    assert demo_main(base + ["--input", image, "--confidence-threshold", "1.5"]) == 2
    assert "--confidence-threshold must be in [0, 1]" in caplog.text
    assert demo_main(base + ["--input", image, "--vocabulary", "no_such_vocabulary"]) == 2
    assert "unknown vocabulary 'no_such_vocabulary'" in caplog.text
    assert demo_main(base + ["--input", image, "--opts", "SOLVER.MAX_ITERS", "1"]) == 2
    assert "Non-existent key: SOLVER.MAX_ITERS" in caplog.text
    assert not (tmp_path / "out").exists()


def test_inputs_and_output_names(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "a.dcm").write_bytes(b"x")
    (tmp_path / "b.JPG").write_bytes(b"x")
    (tmp_path / "c.txt").write_bytes(b"x")
    found = collect_inputs([str(tmp_path), str(tmp_path / "a.png")])
    assert [p.name for p in found] == ["a.dcm", "a.png", "b.JPG"]  # folder scan by suffix, no repeats
    assert unique_stems(found) == ["a", "a_png", "b"]
    assert unique_stems([Path("x/demo_summary.png"), Path("y/demo_summary.png")], reserved=["demo_summary"]) == [
        "demo_summary_png", "demo_summary_png_2"
    ]


def test_demo_writes_a_dicom_overlay_of_the_real_dicom_in_its_study(codet_config, phantom_images, shared_data,
                                                                   tmp_path):
    out, dicom_out = tmp_path / "out", tmp_path / "dicom"
    status = demo_main([
        "--config-file", str(codet_config), "--input", str(shared_data / REAL_DICOM), str(phantom_images / "000000.png"),
        "--output", str(out), "--dicom-out", str(dicom_out), "--confidence-threshold", "0",
        "--dicom-long-side", "512", "--cpu",
    ])
    assert status == 0
    source = pydicom.dcmread(shared_data / REAL_DICOM, stop_before_pixels=True)
    sc = pydicom.dcmread(dicom_out / "cr-chest-jpeg-baseline.dcm")
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.PatientID == source.PatientID
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID and sc.SOPInstanceUID != source.SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    png = cv2.imread(str(out / "cr-chest-jpeg-baseline.png"), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(sc.pixel_array, cv2.cvtColor(png, cv2.COLOR_BGR2RGB))  # the overlay, as RGB
    assert sorted(p.name for p in dicom_out.iterdir()) == ["cr-chest-jpeg-baseline.dcm"]  # none for the PNG input
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["processed"][0]["dicom"] == str(dicom_out / "cr-chest-jpeg-baseline.dcm")
