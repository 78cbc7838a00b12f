"""engine/startup.py: start-up errors as one line a user can act on (exit status 2, no traceback unless
--debug), and the checks that span components."""
import uuid

import cv2
import numpy as np
import pytest
from conftest import BASELINE, REPO_ROOT, make_cfg, tiny_opts
from detectron2.data import DatasetCatalog, MetadataCatalog

from cxr_codet.engine.launcher import run_train_net
from cxr_codet.engine.startup import StartupError, check_image_level_only_support

TINY = tiny_opts("SOLVER.IMS_PER_BATCH", 2)


def _one_line_error(capsys, argv) -> str:
    assert run_train_net(argv) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("train_net.py: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err  # torch may warn first
    return errors[0]


def test_wrong_config_path_suggests_the_closest(capsys):
    line = _one_line_error(capsys, ["--config-file", "configs/phantom/faster_rcnn_R18_FPN_phantm.yaml"])
    assert "config file 'configs/phantom/faster_rcnn_R18_FPN_phantm.yaml' does not exist" in line
    assert "did you mean configs/phantom/faster_rcnn_R18_FPN_phantom.yaml" in line


def test_misspelt_keys_and_bad_values_name_the_key_and_the_closest(capsys, tmp_path):
    line = _one_line_error(capsys, ["--config-file", BASELINE, "SOLVER.BASE_LRR", "0.1"])
    assert "Non-existent key: SOLVER.BASE_LRR; did you mean SOLVER.BASE_LR?" in line
    yaml_file = tmp_path / "typo.yaml"
    yaml_file.write_text(f"_BASE_: {REPO_ROOT / BASELINE}\nDATALOADER:\n  SKIP_BAD_IMAGE: true\n")
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


def test_start_up_refuses_image_level_only_images_for_a_box_only_detector():
    cfg = make_cfg(None, "SEED", 0, "DATASETS.TRAIN_BOX_FRACTION", 0.5, tiny=False)
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"  # Faster R-CNN
    with pytest.raises(ValueError, match="which GeneralizedRCNN would train on as if they had no lesion; set "
                                         "DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY True.*or use MODEL.META_ARCHITECTURE "
                                         "'CXRCoDet'"):
        check_image_level_only_support(cfg)
    cfg.MODEL.META_ARCHITECTURE = "CXRCoDet"
    check_image_level_only_support(cfg)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY = True
    check_image_level_only_support(cfg)


def test_entry_points_refuse_a_code_running_checkpoint_with_one_line(tmp_path, capsys, caplog, monkeypatch):
    """train_net (training and --eval-only) and the demo, each with MODEL.WEIGHTS; MODEL.INIT.WEIGHTS; benchmark."""
    import logging

    from checkpoint_files import code_running_pkl, code_running_pth, detector_pth, detic_state
    from tiny_cxr_codet import save_tiny_model

    from cxr_codet.benchmark.tasks import BenchmarkSettings, benchmark_eval
    from cxr_codet.config import build_cfg
    from cxr_codet.demo.cli import main as demo_main
    from cxr_codet.safe_checkpoint import TRUST_OPT_IN as OPT_IN, UnsafeCheckpointError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    marker = tmp_path / "ran"
    pkl, pth = code_running_pkl(tmp_path / "evil.pkl", marker), code_running_pth(tmp_path / "evil.pth", marker, {})
    base = [*TINY, "OUTPUT_DIR", str(tmp_path / "out"), "SOLVER.MAX_ITER", "1"]
    for flags, extra in ((["--eval-only"], ["MODEL.WEIGHTS", str(pkl)]), ([], ["MODEL.WEIGHTS", str(pth)]),
                         ([], ["MODEL.WEIGHTS", "", "MODEL.INIT.WEIGHTS", str(pth)])):
        line = _one_line_error(capsys, ["--config-file", BASELINE, *flags, *base, *extra])
        path = pkl if flags else pth
        assert line.startswith(f"train_net.py: error: {path}: refused to load: unpickling it would call builtins.exec")
        assert line.endswith(OPT_IN)
    truncated = tmp_path / "model_final.pth"
    truncated.write_bytes(detector_pth(tmp_path / "whole.pth", detic_state()).read_bytes()[:5000])
    line = _one_line_error(capsys, ["--config-file", BASELINE, "--eval-only", *base, "MODEL.WEIGHTS", str(truncated)])
    assert line.startswith(f"train_net.py: error: {truncated}: not a readable checkpoint: truncated or corrupt")
    cfg = build_cfg(BASELINE, [*TINY, "MODEL.WEIGHTS", str(pkl)], cpu=True)
    with pytest.raises(UnsafeCheckpointError, match="refused to load: unpickling it would call builtins.exec"):
        benchmark_eval(cfg, BenchmarkSettings(iterations=1, warmup=0))
    logging.getLogger("cxr_codet.demo.cli").addHandler(caplog.handler)
    config = save_tiny_model(tmp_path / "model", BASELINE, group_size=None)
    image = tmp_path / "scan.png"
    import cv2
    cv2.imwrite(str(image), np.zeros((64, 64), np.uint8))
    args = ["--config-file", str(config), "--input", str(image), "--output", str(tmp_path / "demo")]
    assert demo_main(args + ["--opts", "MODEL.WEIGHTS", str(pkl)]) == 2
    assert f"demo cannot start: {pkl}: refused to load" in caplog.text and OPT_IN in caplog.text
    assert not marker.exists()
    assert demo_main(args + ["--opts", "MODEL.WEIGHTS", str(pkl), "MODEL.TRUST_CHECKPOINT_CODE", "True"]) == 0
    assert marker.exists()
