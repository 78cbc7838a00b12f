"""Short training runs on the real NIH ChestX-ray14 box subset (../shared/data) at 512 px, with the
baseline Faster R-CNN and with CXR-CoDet, through tools/train_net.py: they complete and evaluate."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains through tools/train_net.py on real NIH boxes

REPO = Path(__file__).resolve().parents[1]
NIH_CLASSES = 8
SHORT_RUN = [
    "DATASETS.TRAIN", "('nih_cxr14_bbox_train',)", "DATASETS.TEST", "('nih_cxr14_bbox_val',)",
    "MODEL.ROI_HEADS.NUM_CLASSES", str(NIH_CLASSES),
    "INPUT.MIN_SIZE_TRAIN", "(512,)", "INPUT.MAX_SIZE_TRAIN", "512",
    "INPUT.MIN_SIZE_TEST", "512", "INPUT.MAX_SIZE_TEST", "512",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.STEPS", "(1000,)", "DATALOADER.NUM_WORKERS", "0", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
]


@pytest.fixture(scope="module")
def nih_root(shared_data, tmp_path_factory):
    """A datasets root whose nih_cxr14/ is the shared subset, linked in place (never copied)."""
    root = tmp_path_factory.mktemp("datasets_with_nih")
    os.symlink(shared_data / "nih-cxr14-bbox", root / "nih_cxr14")
    return root


@pytest.mark.parametrize(
    "config", ["faster_rcnn_R18_FPN_phantom.yaml", "cxr_codet_R18_FPN_phantom.yaml"]
)
def test_short_run_on_real_nih_boxes_trains_and_evaluates(nih_root, tmp_path, config):
    env = dict(os.environ, DETECTRON2_DATASETS=str(nih_root))
    cmd = [
        sys.executable, "tools/train_net.py", "--config-file", f"configs/phantom/{config}",
        *SHORT_RUN, "OUTPUT_DIR", str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    bbox = json.loads((tmp_path / "eval_results.json").read_text())["nih_cxr14_bbox_val"]["bbox"]
    per_class = {k for k in bbox if k.startswith("AP50-")}
    assert per_class, bbox
    assert per_class | {f"AP50-{c}" for c in bbox.get("classes_without_ground_truth", [])} == {
        f"AP50-{c}" for c in
        ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"]
    }
    assert all(0.0 <= bbox[k] <= 100.0 for k in per_class)
