"""tools/train_net.py start-up errors: one line a user can act on, exit status 2, no traceback unless --debug;
--help describes the tool; the log's last line and config dumps are right."""
import os
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from cxr_codet.engine.launcher import run_train_net
from cxr_codet.engine.startup import StartupError

REPO = Path(__file__).resolve().parents[1]
BASELINE = "configs/phantom/faster_rcnn_R18_FPN_phantom.yaml"
TINY = ["DATASETS.TRAIN", "('cxr_phantom_tiny_train',)", "DATASETS.TEST", "('cxr_phantom_tiny_val',)",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]


def _tool(*args, timeout=300):
    cmd = [sys.executable, "tools/train_net.py", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=os.environ)


def _one_line_error(capsys, argv) -> str:
    assert run_train_net(argv) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("train_net.py: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err  # torch may warn first
    return errors[0]


@pytest.mark.slow
def test_tool_without_config_file_prints_one_line_and_help_explains(tmp_path):
    proc = _tool()
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "train_net.py: error: no --config-file given; pass one of the configs under configs/, e.g. "
        "--config-file configs/phantom/faster_rcnn_R18_FPN_phantom.yaml"
    )
    help_text = _tool("--help").stdout
    assert "Train or evaluate a cxr-codet model" in help_text
    assert "--num-gpus N then starts N CPU processes joined by gloo" in help_text
    assert "--debug" in help_text and "exit with status 2" in help_text


def test_wrong_config_path_suggests_the_closest(capsys):
    line = _one_line_error(capsys, ["--config-file", "configs/phantom/faster_rcnn_R18_FPN_phantm.yaml"])
    assert "config file 'configs/phantom/faster_rcnn_R18_FPN_phantm.yaml' does not exist" in line
    assert "did you mean configs/phantom/faster_rcnn_R18_FPN_phantom.yaml" in line


def test_misspelt_keys_and_bad_values_name_the_key_and_the_closest(capsys, tmp_path):
    line = _one_line_error(capsys, ["--config-file", BASELINE, "SOLVER.BASE_LRR", "0.1"])
    assert "Non-existent key: SOLVER.BASE_LRR; did you mean SOLVER.BASE_LR?" in line
    yaml_file = tmp_path / "typo.yaml"
    yaml_file.write_text(f"_BASE_: {REPO / BASELINE}\nDATALOADER:\n  SKIP_BAD_IMAGE: true\n")
    line = _one_line_error(capsys, ["--config-file", str(yaml_file)])
    assert "Non-existent config key: DATALOADER.SKIP_BAD_IMAGE; did you mean DATALOADER.SKIP_BAD_IMAGES?" in line
    line = _one_line_error(capsys, ["--config-file", BASELINE, "SOLVER.MAX_ITER", "many"])
    assert "SOLVER.MAX_ITER" in line
    yaml_file.write_text("MODEL: [unclosed\n")
    assert "the config file is not valid YAML" in _one_line_error(capsys, ["--config-file", str(yaml_file)])


def test_misspelt_dataset_lists_closest_cxr_names_and_how_to_register(capsys):
    line = _one_line_error(capsys, ["--config-file", BASELINE, "DATASETS.TRAIN", "('nih_cxr14_bbox_trian',)"])
    assert "DATASETS.TRAIN: dataset 'nih_cxr14_bbox_trian' is not registered; did you mean nih_cxr14_bbox_train" in line
    assert "coco_2017_train" not in line  # detectron2's built-ins are not suggested for a CXR name
    assert "CXR datasets: cxr_phantom_train" in line and "register_cxr_coco" in line


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(StartupError, match="no --config-file given"):
        run_train_net(["--debug"])


def test_missing_images_and_weights_stop_the_run_with_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    name = f"startup_{uuid.uuid4().hex[:8]}"
    cv2.imwrite(str(tmp_path / "fine.png"), np.zeros((64, 64), np.uint8))
    records = [{"file_name": str(tmp_path / f), "image_id": k, "width": 64, "height": 64, "annotations": []}
               for k, f in enumerate(["fine.png", "gone.png"])]
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).set(thing_classes=["Nodule"], evaluator_type="coco")
    base = ["--config-file", BASELINE, *TINY, "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.ROI_HEADS.NUM_CLASSES", "1"]
    line = _one_line_error(capsys, base + ["DATASETS.TRAIN", f"('{name}',)"])
    assert f"1 of 2 images of the training set ({name}) cannot be used: " in line
    assert "gone.png (image_id 1): the file does not exist" in line
    line = _one_line_error(capsys, base + ["DATASETS.TEST", f"('{name}',)", "SOLVER.MAX_ITER", "1"])
    assert f"1 of 2 images of the test set {name} cannot be used" in line  # before training, not after it
    line = _one_line_error(capsys, base + ["--eval-only", "MODEL.WEIGHTS", str(tmp_path / "nowhere.pth")])
    assert "nowhere.pth" in line


@pytest.mark.slow
def test_training_log_ends_with_the_true_iteration_count_and_has_no_colour_codes(tmp_path):
    out = tmp_path / "out"
    proc = _tool("--config-file", BASELINE, *TINY, "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0",
                 "DATASETS.TEST", "()", "OUTPUT_DIR", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "Running with full config" in log and "\x1b[" not in log
    assert log.strip().splitlines()[-1].endswith("Training finished after 2 iterations")
