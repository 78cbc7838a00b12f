"""Demo input handling: a path that does not exist is skipped and counted like an unreadable image (exit 1), and a
custom vocabulary may not name one finding twice in different case."""
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_demo import save_tiny_model

from cxr_codet.demo.cli import main as demo_main
from cxr_codet.demo.vocabulary import demo_vocabulary

PHANTOM = Path(__file__).resolve().parents[1] / "configs" / "phantom"


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
