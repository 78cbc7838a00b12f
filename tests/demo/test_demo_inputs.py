"""demo/inputs.py and the demo command line on bad inputs: skipped by name, the rest processed."""
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import BASELINE, PHANTOM
from dicom_files import REAL_DICOM
from image_files import HUGE, truncated_png, write_gray_png
from tiny_cxr_codet import save_tiny_model

from cxr_codet.demo.cli import main as demo_main
from cxr_codet.demo.vocabulary import demo_vocabulary


def test_nonexistent_input_is_skipped_and_the_rest_processed(tmp_path, caplog):
    logging.getLogger("cxr_codet.demo.cli").addHandler(caplog.handler)
    config = save_tiny_model(tmp_path / "model", PHANTOM / "faster_rcnn_R18_FPN_phantom.yaml", group_size=None)
    cv2.imwrite(str(tmp_path / "scan.png"), (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8))
    (tmp_path / "empty_folder").mkdir()
    out = tmp_path / "out"
    status = demo_main(["--config-file", str(config), "--output", str(out), "--input", str(tmp_path / "absent.png"),
                        str(tmp_path / "scan.png"), str(tmp_path / "empty_folder")])
    assert status == 1
    summary = json.loads((out / "demo_summary.json").read_text())
    assert [Path(p["input"]).name for p in summary["processed"]] == ["scan.png"]
    reasons = {Path(s["input"]).name: s["reason"] for s in summary["skipped"]}
    assert reasons["absent.png"].endswith("absent.png: no such file or folder")
    assert "empty_folder: the folder holds no" in reasons["empty_folder"]
    assert "Processed 1 of 3 inputs" in caplog.text and "skipped 2" in caplog.text


def test_custom_vocabulary_refuses_names_that_differ_only_in_case():
    with pytest.raises(ValueError, match=r"more than once \(names are compared ignoring case.*\): Nodule / nodule;"):
        demo_vocabulary(None, "Nodule,Pleural effusion,nodule")
    with pytest.raises(ValueError, match=r": ILD / ILD;"):
        demo_vocabulary(None, "ILD,ILD")
    assert demo_vocabulary(None, "Nodule,Pleural effusion") == ["Nodule", "Pleural effusion"]














def test_demo_skips_bad_inputs_by_name_and_handles_a_1x1_image(tmp_path, shared_data):
    config = save_tiny_model(tmp_path / "model", Path(BASELINE), group_size=None)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "empty.png").write_bytes(b"")
    truncated_png(inputs / "truncated.png")
    real = (shared_data / REAL_DICOM).read_bytes()
    (inputs / "truncated.dcm").write_bytes(real[: len(real) // 3])
    write_gray_png(inputs / "huge.png", HUGE, HUGE)
    write_gray_png(inputs / "one.png", 1, 1)
    write_gray_png(inputs / "sliver.png", 3000, 1)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    out = tmp_path / "out"
    status = demo_main(["--config-file", str(config), "--input", str(inputs), str(notes), "--output", str(out),
                        "--confidence-threshold", "0"])
    assert status == 1  # some inputs were skipped
    summary = json.loads((out / "demo_summary.json").read_text())
    assert [Path(p["input"]).name for p in summary["processed"]] == ["one.png"]
    reasons = {Path(s["input"]).name: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"empty.png", "truncated.png", "truncated.dcm", "huge.png", "sliver.png", "notes.txt"}
    assert reasons["empty.png"].endswith("empty.png: the file is empty")
    assert "truncated.png: not a decodable PNG/JPEG image" in reasons["truncated.png"]
    assert "truncated.dcm: the file is truncated" in reasons["truncated.dcm"]
    assert "huge.png: the image is 10000x10000 pixels" in reasons["huge.png"]
    assert "cannot resize an image of 3000x1 pixels" in reasons["sliver.png"]
    assert "notes.txt: not a decodable PNG/JPEG image" in reasons["notes.txt"]
    record = json.loads((out / "one.json").read_text())
    assert (record["width"], record["height"]) == (1, 1) and record["detections"]
    boxes = np.array([d["box"] for d in record["detections"]])
    assert boxes.min() >= 0 and boxes.max() <= 1
