"""Short training runs on the real NIH ChestX-ray14 box subset (../shared/data) at 512 px, with the
baseline Faster R-CNN and with CXR-CoDet (configs/nih/), through tools/train_net.py: they complete and
evaluate, with COCO AP, the VinBigData mAP@0.4 and FROC in eval_results.json."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import BASELINE, REPO_ROOT
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from cxr_codet.config import build_cfg
from cxr_codet.modeling.checkpoint_init import init_from_cfg

FP_RATES = ("0.125", "0.25", "0.5", "1", "2", "4", "8")


SHORT_RUN = [
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.STEPS", "(1000,)", "DATALOADER.NUM_WORKERS", "0", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
]


@pytest.fixture(scope="module")
def nih_root(shared_data, tmp_path_factory):
    """A datasets root whose nih_cxr14/ is the shared subset, linked in place (never copied)."""
    root = tmp_path_factory.mktemp("datasets_with_nih")
    os.symlink(shared_data / "nih-cxr14-bbox", root / "nih_cxr14")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("config", ["faster_rcnn_R18_FPN_nih.yaml", "cxr_codet_R18_FPN_nih.yaml"])
def test_short_run_on_real_nih_boxes_trains_and_evaluates(nih_root, tmp_path, config):
    env = dict(os.environ, DETECTRON2_DATASETS=str(nih_root))
    cmd = [
        sys.executable, "tools/train_net.py", "--config-file", f"configs/nih/{config}",
        *SHORT_RUN, "OUTPUT_DIR", str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    bbox = json.loads((tmp_path / "eval_results.json").read_text())["nih_cxr14_bbox_val"]["bbox"]
    per_class = {k for k in bbox if k.startswith("AP50-")}
    assert per_class, bbox
    assert per_class | {f"AP50-{c}" for c in bbox.get("classes_without_ground_truth", [])} == {
        f"AP50-{c}" for c in
        ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"]
    }
    assert all(0.0 <= bbox[k] <= 100.0 for k in per_class)
    chest_xray_metrics = ["mAP@0.4", "FROC-CPM", *(f"FROC-sens@{rate}" for rate in FP_RATES)]
    assert all(key in bbox and math.isfinite(bbox[key]) and 0 <= bbox[key] <= 100 for key in chest_xray_metrics), bbox
    assert bbox["FROC-CPM"] == pytest.approx(sum(bbox[f"FROC-sens@{rate}"] for rate in FP_RATES) / 7)
    assert (tmp_path / "froc_nih_cxr14_bbox_val.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "phantom_config, nih_config, reinitialized",
    [
        ("faster_rcnn_R18_FPN_phantom.yaml", "faster_rcnn_R18_FPN_nih_from_phantom.yaml", ["roi_heads.box_predictor"]),
        ("cxr_codet_R18_FPN_phantom.yaml", "cxr_codet_R18_FPN_nih_from_phantom.yaml", []),
    ],
)
def test_from_phantom_configs_load_a_phantom_detector(tmp_path, phantom_config, nih_config, reinitialized):
    """Synthetic-to-real pretraining: an (untrained) phantom-vocabulary detector saved like a training run loads
    into the NIH model; the baseline re-initialises its 14-finding classifier, CXR-CoDet keeps every weight and
    only swaps the vocabulary (8 NIH class embeddings from the text encoder)."""
    cache = ["MODEL.TEXT_ENCODER.CACHE_DIR", str(tmp_path / "text_cache")]
    phantom = build_model(build_cfg(str(REPO_ROOT / "configs" / "phantom" / phantom_config), cache, cpu=True))
    DetectionCheckpointer(phantom, save_dir=str(tmp_path)).save("model_final")
    cfg = build_cfg(str(REPO_ROOT / "configs" / "nih" / nih_config),
                    ["MODEL.INIT.WEIGHTS", str(tmp_path / "model_final.pth"), *cache], cpu=True)
    nih = build_model(cfg)
    report = init_from_cfg(nih, cfg)

    assert report.reinitialized == reinitialized
    predictor = "roi_heads.box_predictor."
    assert report.unexpected == [] and all(k.startswith(predictor) for k in report.missing), report.missing
    nih_state, phantom_state = nih.state_dict(), phantom.state_dict()
    for key in report.matched:
        assert torch.equal(nih_state[key], phantom_state[key]), key
    assert any(k.startswith("backbone.bottom_up.res5") for k in report.matched)
    if reinitialized:  # the 15-way classifier and 14 x 4 box deltas do not fit 8 findings
        assert set(report.shape_mismatched) | set(report.dropped) >= {predictor + "bbox_pred.weight",
                                                                      predictor + "cls_score.weight"}
    else:
        assert report.shape_mismatched == {}
        assert predictor + "cls_score.proj.weight" in report.matched
        assert nih.roi_heads.box_predictor.cls_score.num_training_classes == 8


@pytest.mark.slow
def test_baseline_zero_shot_config_scores_phantom_classes_as_nih_findings(nih_root, tmp_path):
    """configs/nih/faster_rcnn_R18_FPN_phantom_zero_shot.yaml: a 14-finding (VinDr vocabulary) detector is
    evaluated on NIH boxes through TEST.CLASS_MAPPING; the results name NIH's 8 findings and the log counts
    the predictions of VinDr-only classes that were left out."""
    phantom = build_model(build_cfg(BASELINE, cpu=True))
    DetectionCheckpointer(phantom, save_dir=str(tmp_path)).save("untrained")
    env = dict(os.environ, DETECTRON2_DATASETS=str(nih_root))
    cmd = [
        sys.executable, "tools/train_net.py", "--config-file", "configs/nih/faster_rcnn_R18_FPN_phantom_zero_shot.yaml",
        "--eval-only", "MODEL.WEIGHTS", str(tmp_path / "untrained.pth"), "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
        "OUTPUT_DIR", str(tmp_path / "zero_shot"),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    bbox = json.loads((tmp_path / "zero_shot" / "eval_results.json").read_text())["nih_cxr14_bbox_val"]["bbox"]
    per_class = {k[len("AP50-"):] for k in bbox if k.startswith("AP50-")} | set(bbox.get("classes_without_ground_truth", []))
    assert per_class == {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia",
                         "Pneumothorax"}
    log = (tmp_path / "zero_shot" / "log.txt").read_text()
    assert "nih_cxr14_bbox->vindr_cxr:" in log and "without a dataset equivalent were left out" in log
