"""demo/inputs.py and the demo command line on bad inputs: skipped by name, the rest processed."""
import json
import logging
import os
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


@pytest.fixture(scope="module")
def rcnn_demo_config(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("rcnn"), PHANTOM / "faster_rcnn_R18_FPN_phantom.yaml",
                           group_size=None)


def _no_model(monkeypatch):
    """Make building the model fail the test: refusals must come before any work."""
    def refuse(*args, **kwargs):
        pytest.fail("the demo built its model although it should have refused to start")
    monkeypatch.setattr("cxr_codet.demo.cli.CXRPredictor", refuse)


def _scan_folder(folder: Path) -> Path:
    from dicom_files import ramp, write_dicom

    folder.mkdir()
    cv2.imwrite(str(folder / "scan.png"), (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8))
    write_dicom(folder / "ct.dcm", ramp(64, 64))
    return folder


def _start_error(caplog, status) -> str:
    assert status == 2
    lines = {r.getMessage() for r in caplog.records if r.getMessage().startswith("demo cannot start: ")}
    assert len(lines) == 1, caplog.text
    return lines.pop()


def test_outputs_never_overwrite_an_input(rcnn_demo_config, tmp_path, caplog, monkeypatch):
    logging.getLogger("cxr_codet.demo.cli").addHandler(caplog.handler)
    _no_model(monkeypatch)
    scans = _scan_folder(tmp_path / "scans")
    before = {p.name: p.read_bytes() for p in scans.iterdir()}
    base = ["--config-file", str(rcnn_demo_config), "--input", str(scans)]
    line = _start_error(caplog, demo_main(base + ["--output", str(scans)]))
    assert line == (f"demo cannot start: writing the outputs would overwrite 1 input: {scans / 'scan.png'} (--output "
                    f"{scans}); choose an --output and --dicom-out folder that holds none of the inputs")
    (tmp_path / "link").symlink_to(scans, target_is_directory=True)
    caplog.clear()
    line = _start_error(caplog, demo_main(base + ["--output", str(tmp_path / "link")]))
    assert f"would overwrite 1 input: {scans / 'scan.png'} (--output {tmp_path / 'link'})" in line
    caplog.clear()
    line = _start_error(caplog, demo_main(base + ["--output", str(tmp_path / "out"), "--dicom-out", str(scans)]))
    assert f"would overwrite 1 input: {scans / 'ct.dcm'} (--dicom-out {scans})" in line
    hard = tmp_path / "hard"
    hard.mkdir()
    os.link(scans / "scan.png", hard / "scan.png")  # the same file under another name
    caplog.clear()
    line = _start_error(caplog, demo_main(["--config-file", str(rcnn_demo_config), "--input", str(hard / "scan.png"),
                                           "--output", str(scans)]))
    assert f"would overwrite 1 input: {hard / 'scan.png'} (--output {scans})" in line
    assert {p.name: p.read_bytes() for p in scans.iterdir()} == before
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_made_and_bad_numbers_are_refused_first(rcnn_demo_config, tmp_path, caplog,
                                                                                monkeypatch):
    logging.getLogger("cxr_codet.demo.cli").addHandler(caplog.handler)
    _no_model(monkeypatch)
    scans = _scan_folder(tmp_path / "scans")
    (tmp_path / "taken").write_text("a file")
    base = ["--config-file", str(rcnn_demo_config), "--input", str(scans)]
    cases = [
        (["--output", str(tmp_path / "taken")], f"--output {tmp_path / 'taken'} is a file, not a folder"),
        (["--output", str(tmp_path / "taken" / "sub")],
         f"--output {tmp_path / 'taken' / 'sub'} cannot be created: {tmp_path / 'taken'} is a file"),
        (["--output", str(tmp_path / "out"), "--dicom-out", str(tmp_path / "taken")],
         f"--dicom-out {tmp_path / 'taken'} is a file, not a folder"),
        (["--output", str(tmp_path / "out"), "--dicom-long-side", "-5"],
         "--dicom-long-side must be 0 (keep the DICOM size) or at least 16, got -5"),
        (["--output", str(tmp_path / "out"), "--confidence-threshold", "nan"],
         "--confidence-threshold must be a finite number, got nan"),
        (["--output", str(tmp_path / "out"), "--confidence-threshold", "1.5", "--dicom-long-side", "8"],
         "--confidence-threshold must be in [0, 1], got 1.5; --dicom-long-side must be 0 (keep the DICOM size) or at "
         "least 16, got 8"),
    ]
    for extra, message in cases:
        caplog.clear()
        assert _start_error(caplog, demo_main(base + extra)) == f"demo cannot start: {message}", extra
    caplog.clear()
    misspelt = ["--output", str(tmp_path / "out"), "--vocabulary", "vindr_cxr_trian"]
    line = _start_error(caplog, demo_main(base + misspelt))
    assert line.startswith("demo cannot start: unknown vocabulary 'vindr_cxr_trian': did you mean vindr_cxr_train")
    assert not (tmp_path / "out").exists()


def test_a_misspelt_vocabulary_suggests_the_closest_names():
    from cxr_codet.modeling.text.vocabularies import resolve_vocabulary

    with pytest.raises(KeyError) as info:
        resolve_vocabulary("vindr_cxr_trian")
    message = info.value.args[0]
    assert message.startswith("unknown vocabulary 'vindr_cxr_trian': did you mean vindr_cxr_train, ")
    assert "ade20k" not in message and "coco_2017" not in message
    assert "? Use vindr_cxr or nih_cxr14 (the built-in finding lists) or a registered CXR dataset, e.g." in message
    with pytest.raises(KeyError, match=r"unknown vocabulary 'nih_cxr': did you mean nih_cxr14, "):
        resolve_vocabulary("nih_cxr")
    with pytest.raises(KeyError) as info:
        resolve_vocabulary("zzzz")
    assert info.value.args[0].startswith("unknown vocabulary 'zzzz': Use vindr_cxr or nih_cxr14")
    assert "ade20k" not in info.value.args[0]
