"""COCO-style box evaluation: hand-computed APs, missing classes and size buckets, relative buckets,
eval_results.json, the per-class AP50 chart and the evaluator registry, on tiny COCO datasets."""
import json
import logging
import uuid

import numpy as np
import pytest
import torch
from conftest import make_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import Boxes, Instances
from PIL import Image

from cxr_codet.evaluation import (
    CLASSES_WITHOUT_GT_KEY,
    SIZE_BUCKETS_WITHOUT_GT_KEY,
    CXRCOCOEvaluator,
    build_evaluator,
    coco_evaluation,
    per_class_ap50_rows,
    plot_per_class_ap50,
    read_eval_results,
    write_eval_results,
)
from cxr_codet.evaluation.class_mapped import prediction_index_map, rename_predictions

CLASSES = ["Nodule", "Effusion", "Pneumothorax"]  # COCO category ids 1, 2, 3


NODULE, EFFUSION, PNEUMOTHORAX = 0, 1, 2  # contiguous ids the model predicts


# Recall 1/2 at precision 1 on COCO's 101 recall thresholds: 51 of them reach precision 1.
HALF_RECALL_AP = 100 * 51 / 101


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# Four 64x64 images; Pneumothorax has no ground truth anywhere; image 4 is "No finding".
SMALL_SPLIT = {
    "images": [(1, 64, 64), (2, 64, 64), (3, 64, 64), (4, 64, 64)],
    "boxes": [  # (image id, category id, [x, y, w, h])
        (1, 1, [10, 10, 20, 20]),
        (1, 2, [30, 30, 25, 25]),
        (2, 1, [5, 5, 20, 20]),
        (3, 2, [20, 20, 30, 30]),
    ],
}


# A 50x50 box on a 1000x1000 image (relative area 0.0025: small) and on a 100x100 image (0.25: large);
# both are "medium" (32^2 to 96^2 px) in absolute terms.
MIXED_SIZES = {
    "images": [(1, 1000, 1000), (2, 100, 100)],
    "boxes": [(1, 1, [100, 100, 50, 50]), (2, 1, [10, 10, 50, 50])],
}


# Image 1: its box found (0.9) after a 20x20 false positive (0.95; small in both senses). Image 2: a 40x40
# box elsewhere (IoU 0, score 0.5; relative area 0.16: large, 1600 px: medium).
MIXED_DETECTIONS = {
    1: [(100, 100, 150, 150, 0.9, NODULE), (500, 500, 520, 520, 0.95, NODULE)],
    2: [(60, 60, 100, 100, 0.5, NODULE)],
}


@pytest.fixture
def register_split(tmp_path):
    """Write a COCO json plus blank PNGs to tmp_path and register it; returns the dataset name."""
    names = []

    def register(split, evaluator_type="coco", with_area=True):
        name = f"cxr_eval_test_{uuid.uuid4().hex[:8]}"
        image_dir = tmp_path / name
        image_dir.mkdir()
        images = []
        for image_id, width, height in split["images"]:
            file_name = f"{image_id}.png"
            Image.new("L", (width, height)).save(image_dir / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        annotations = [
            {"id": i + 1, "image_id": image_id, "category_id": cat_id, "bbox": box, "iscrowd": 0,
             **({"area": box[2] * box[3]} if with_area else {})}
            for i, (image_id, cat_id, box) in enumerate(split["boxes"])
        ]
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
        json_file = tmp_path / f"{name}.json"
        json_file.write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
        DatasetCatalog.register(name, lambda: load_coco_json(str(json_file), str(image_dir), name))
        MetadataCatalog.get(name).set(json_file=str(json_file), image_root=str(image_dir),
                                      evaluator_type=evaluator_type)
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture
def eval_log(caplog):
    """caplog that sees the evaluation package's records (the evaluator's and its chest X-ray metrics') even if a
    setup_logger stopped their propagation."""
    module_logger = logging.getLogger(coco_evaluation.__name__.rsplit(".", 1)[0])
    module_logger.addHandler(caplog.handler)
    propagate, module_logger.propagate = module_logger.propagate, False
    caplog.set_level(logging.INFO, logger=module_logger.name)
    yield caplog
    module_logger.removeHandler(caplog.handler)
    module_logger.propagate = propagate


def evaluate(evaluator, image_sizes, detections):
    """Feed detections {image id: [(x0, y0, x1, y1, score, class)]} like detectron2's inference loop."""
    evaluator.reset()
    for image_id, width, height in image_sizes:
        rows = detections.get(image_id, [])
        instances = Instances((height, width))
        instances.pred_boxes = Boxes(torch.tensor([r[:4] for r in rows], dtype=torch.float32).reshape(-1, 4))
        instances.scores = torch.tensor([r[4] for r in rows], dtype=torch.float32)
        instances.pred_classes = torch.tensor([r[5] for r in rows], dtype=torch.int64)
        evaluator.process([{"image_id": image_id, "height": height, "width": width}],
                          [{"instances": instances}])
    return evaluator.evaluate()


def perfect_detections(split, score=0.9):
    detections = {}
    for image_id, cat_id, (x, y, w, h) in split["boxes"]:
        detections.setdefault(image_id, []).append((x, y, x + w, y + h, score, cat_id - 1))
    return detections


def test_perfect_predictions_give_100_and_omit_class_without_ground_truth(register_split, eval_log):
    name = register_split(SMALL_SPLIT)
    detections = perfect_detections(SMALL_SPLIT)
    detections[4] = [(5, 5, 40, 40, 0.95, PNEUMOTHORAX)]  # a false positive of a class with no ground truth
    results = evaluate(CXRCOCOEvaluator(name, distributed=False), SMALL_SPLIT["images"], detections)

    bbox = results["bbox"]
    assert bbox["AP"] == pytest.approx(100)
    assert bbox["AP50"] == pytest.approx(100)
    assert bbox["AP50-Nodule"] == pytest.approx(100)
    assert bbox["AP50-Effusion"] == pytest.approx(100)
    assert bbox["AP-Effusion"] == pytest.approx(100)
    assert "AP50-Pneumothorax" not in bbox and "AP-Pneumothorax" not in bbox
    assert bbox["APs"] == pytest.approx(100)  # every box is under 32^2 px
    assert "APm" not in bbox and "APl" not in bbox  # no ground truth there: missing, not 0 or NaN
    assert all(np.isfinite(v) for v in bbox.values())
    log = eval_log.text
    assert "| Pneumothorax |" in log and "missing (no ground truth)" in log
    assert "median 64 x 64 px" in log and "stored image coordinates" in log


def test_ground_truth_without_area_uses_box_area(register_split, eval_log):
    name = register_split(MIXED_SIZES, with_area=False)
    bbox = evaluate(CXRCOCOEvaluator(name, distributed=False), MIXED_SIZES["images"],
                    MIXED_DETECTIONS)["bbox"]
    assert bbox["APm"] == pytest.approx(HALF_RECALL_AP)  # both 50x50 boxes: 2500 px, medium
    assert "2 annotations have no 'area'" in eval_log.text


def test_one_wrong_class_gives_hand_computed_ap(register_split):
    name = register_split(SMALL_SPLIT)
    detections = perfect_detections(SMALL_SPLIT)
    detections[2] = [(5, 5, 25, 25, 0.8, EFFUSION)]  # the Nodule of image 2 called Effusion
    bbox = evaluate(CXRCOCOEvaluator(name, distributed=False), SMALL_SPLIT["images"], detections)["bbox"]

    # Nodule: 1 of 2 boxes found. Effusion: both found before the false positive (score 0.8 < 0.9).
    assert bbox["AP50-Nodule"] == pytest.approx(HALF_RECALL_AP)
    assert bbox["AP50-Effusion"] == pytest.approx(100)
    assert bbox["AP50"] == pytest.approx((HALF_RECALL_AP + 100) / 2)


def test_voc_map_at_04_and_froc_beside_coco_ap_hand_computed(register_split, tmp_path, eval_log):
    name = register_split(SMALL_SPLIT)
    detections = perfect_detections(SMALL_SPLIT)
    detections[2] = [(5, 5, 25, 25, 0.8, EFFUSION)]  # the Nodule of image 2 called Effusion
    cfg = make_cfg(None, "OUTPUT_DIR", str(tmp_path), tiny=False)
    bbox = evaluate(build_evaluator(cfg, name), SMALL_SPLIT["images"], detections)["bbox"]

    # VOC all-point AP: Nodule recall 1/2 at precision 1 -> 50 (COCO's 101 points give 50.5); Effusion 100.
    assert bbox["AP@0.4-Nodule"] == pytest.approx(50)
    assert bbox["AP@0.4-Effusion"] == pytest.approx(100)
    assert bbox["mAP@0.4"] == pytest.approx(75)
    assert bbox["AP50-Nodule"] == pytest.approx(HALF_RECALL_AP)
    # FROC over 4 images: the 3 hits score 0.9 (sensitivity 3/4 at 0 FP); the FP (0.8) adds 0.25 FP per image.
    assert bbox["FROC-CPM-Nodule"] == pytest.approx(50)
    assert bbox["FROC-CPM-Effusion"] == pytest.approx(100)
    assert bbox["FROC-CPM"] == pytest.approx(75)
    assert [bbox[f"FROC-sens@{r}"] for r in ("0.125", "0.25", "0.5", "1", "2", "4", "8")] == pytest.approx([75] * 7)
    assert "FROC-CPM-Pneumothorax" not in bbox and "AP@0.4-Pneumothorax" not in bbox
    assert (tmp_path / f"froc_{name}.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "FROC (hit: IoU >= 0.4" in eval_log.text and "| all findings |" in eval_log.text


def test_froc_hit_by_centre_and_bad_settings(register_split, tmp_path):
    name = register_split(SMALL_SPLIT)
    detections = perfect_detections(SMALL_SPLIT)
    detections[2] = [(14, 14, 16, 16, 0.9, NODULE)]  # a 2x2 box at the Nodule's centre: IoU 0.01
    evaluator = CXRCOCOEvaluator(name, distributed=False, froc_hit="center", plot_froc=False)
    bbox = evaluate(evaluator, SMALL_SPLIT["images"], detections)["bbox"]
    assert bbox["FROC-CPM-Nodule"] == pytest.approx(100)
    assert bbox["AP@0.4-Nodule"] == pytest.approx(50)  # the IoU-based AP still misses it
    with pytest.raises(ValueError, match="TEST.FROC.HIT_CRITERION"):
        CXRCOCOEvaluator(name, froc_hit="centre")
    with pytest.raises(ValueError, match="TEST.VOC_IOU_THRESHOLD"):
        CXRCOCOEvaluator(name, voc_iou_threshold=40)
    with pytest.raises(ValueError, match="TEST.FROC.FP_RATES"):
        CXRCOCOEvaluator(name, froc_fp_rates=(1, 0.5))


def test_shifted_boxes_pass_low_iou_thresholds_only(register_split):
    name = register_split(SMALL_SPLIT)
    detections = perfect_detections(SMALL_SPLIT)
    for image_id in (1, 2):  # shift both 20x20 Nodule boxes 4 px right: IoU 16/24 = 0.667
        detections[image_id] = [
            (x0 + 4, y0, x1 + 4, y1, s, c) if c == NODULE else (x0, y0, x1, y1, s, c)
            for x0, y0, x1, y1, s, c in detections[image_id]
        ]
    bbox = evaluate(CXRCOCOEvaluator(name, distributed=False), SMALL_SPLIT["images"], detections)["bbox"]

    assert bbox["AP50-Nodule"] == pytest.approx(100)
    assert bbox["AP-Nodule"] == pytest.approx(40)  # matched at IoU 0.50, 0.55, 0.60, 0.65 of ten
    assert bbox["AP75"] == pytest.approx(50)  # Nodule 0, Effusion 100
    assert bbox["AP"] == pytest.approx(70)


def test_no_detections_give_zero_ap_for_classes_with_ground_truth(register_split):
    name = register_split(SMALL_SPLIT)
    bbox = evaluate(CXRCOCOEvaluator(name, distributed=False), SMALL_SPLIT["images"], {})["bbox"]
    assert bbox["AP50"] == 0 and bbox["AP50-Nodule"] == 0 and bbox["AP50-Effusion"] == 0
    assert "AP50-Pneumothorax" not in bbox


def test_prediction_with_unknown_class_is_rejected(register_split):
    name = register_split(SMALL_SPLIT)
    with pytest.raises(ValueError, match="class 7, but .* has 3 classes"):
        evaluate(CXRCOCOEvaluator(name, distributed=False), SMALL_SPLIT["images"],
                 {1: [(0, 0, 10, 10, 0.9, 7)]})


@pytest.mark.parametrize(
    "size_buckets, expected, missing",
    [
        ("absolute", {"APm": HALF_RECALL_AP}, ("APs", "APl")),  # the small false positive is ignored
        ("relative", {"APs": 50.0, "APl": 0.0}, ("APm",)),  # precision 1/2 at full recall
    ],
)
def test_relative_size_buckets_differ_from_absolute(register_split, tmp_path, size_buckets, expected,
                                                    missing):
    name = register_split(MIXED_SIZES)
    # the FROC chart goes to OUTPUT_DIR
    cfg = make_cfg(None, "TEST.SIZE_BUCKETS", size_buckets, "TEST.PLOT_PER_CLASS_AP", False, "OUTPUT_DIR", str(tmp_path),
                   tiny=False)
    evaluator = build_evaluator(cfg, name, str(tmp_path / "inference"))
    bbox = evaluate(evaluator, MIXED_SIZES["images"], MIXED_DETECTIONS)["bbox"]

    assert bbox["AP50"] == pytest.approx(HALF_RECALL_AP / 2)  # buckets do not change the overall AP
    for metric, value in expected.items():
        assert bbox[metric] == pytest.approx(value)
    for metric in missing:
        assert metric not in bbox


def test_bad_size_bucket_settings_are_rejected(register_split):
    name = register_split(SMALL_SPLIT)
    with pytest.raises(ValueError, match="TEST.SIZE_BUCKETS"):
        CXRCOCOEvaluator(name, size_buckets="pixels")
    with pytest.raises(ValueError, match="TEST.RELATIVE_AREA_RANGES"):
        CXRCOCOEvaluator(name, size_buckets="relative", relative_area_ranges=(0.2, 0.1))


def test_pycocotools_fallback_is_announced_once(register_split, eval_log, monkeypatch):
    monkeypatch.setattr(coco_evaluation, "_ANNOUNCED_PYCOCOTOOLS", False)
    name = register_split(SMALL_SPLIT)
    CXRCOCOEvaluator(name)
    CXRCOCOEvaluator(name)
    announcements = [r for r in eval_log.records if "detectron2._C" in r.getMessage()]
    assert len(announcements) == 1
    assert announcements[0].levelno == logging.INFO and "pycocotools" in announcements[0].getMessage()


def test_build_evaluator_rejects_unknown_evaluator_type(register_split, tmp_path):
    name = register_split(SMALL_SPLIT, evaluator_type="localization_maps")
    cfg = make_cfg(tiny=False)
    with pytest.raises(ValueError, match="'localization_maps', for which no evaluator is registered"):
        build_evaluator(cfg, name, str(tmp_path))
    with pytest.raises(ValueError, match="no such registered dataset"):
        build_evaluator(cfg, "cxr_eval_test_not_registered", str(tmp_path))


def test_evaluator_writes_per_class_chart(register_split, tmp_path):
    name = register_split(SMALL_SPLIT)
    out_dir = tmp_path / "inference"
    evaluate(CXRCOCOEvaluator(name, output_dir=str(out_dir), distributed=False), SMALL_SPLIT["images"],
             perfect_detections(SMALL_SPLIT))
    chart = out_dir / f"per_class_ap50_{name}.png"
    assert chart.read_bytes()[:8] == PNG_SIGNATURE
    assert json.loads((out_dir / "coco_instances_results.json").read_text())[0]["category_id"] in (1, 2)

    quiet_dir = tmp_path / "no_plot"
    evaluate(CXRCOCOEvaluator(name, output_dir=str(quiet_dir), plot_per_class_ap=False,
                              distributed=False), SMALL_SPLIT["images"], perfect_detections(SMALL_SPLIT))
    assert not (quiet_dir / f"per_class_ap50_{name}.png").exists()


def test_chart_shows_class_without_ground_truth_as_not_available(tmp_path):
    bbox = {"AP50": 60.0, "AP50-Nodule": 20.0, "AP50-Effusion": 100.0,
            CLASSES_WITHOUT_GT_KEY: ["Pneumothorax"]}
    assert per_class_ap50_rows(bbox) == [("Nodule", 20.0), ("Effusion", 100.0), ("Pneumothorax", None)]
    assert per_class_ap50_rows(bbox, class_names=["Pneumothorax", "Nodule"]) == [
        ("Pneumothorax", None), ("Nodule", 20.0)]
    path = plot_per_class_ap50(bbox, str(tmp_path / "chart.png"), title="test")
    assert (tmp_path / "chart.png").read_bytes()[:8] == PNG_SIGNATURE and path.endswith("chart.png")
    with pytest.raises(ValueError, match="no per-class AP50"):
        plot_per_class_ap50({"AP50": 1.0}, str(tmp_path / "empty.png"), title="empty")


def test_eval_results_json_lists_missing_entries_and_merges_tasks(register_split, tmp_path):
    name = register_split(SMALL_SPLIT)
    results = evaluate(CXRCOCOEvaluator(name, distributed=False), SMALL_SPLIT["images"],
                       perfect_detections(SMALL_SPLIT))
    path = write_eval_results({name: dict(results)}, str(tmp_path))

    saved = read_eval_results(path)
    assert saved[name]["bbox"]["AP50-Nodule"] == pytest.approx(100)
    assert saved[name]["bbox"][CLASSES_WITHOUT_GT_KEY] == ["Pneumothorax"]
    assert saved[name]["bbox"][SIZE_BUCKETS_WITHOUT_GT_KEY] == ["APm", "APl"]

    write_eval_results({name: {"localization": {"mIoU": 41.5, "CNR": float("nan")}}}, str(tmp_path))
    write_eval_results({"other_split": {"bbox": {"AP50": 12.0}}}, str(tmp_path))
    saved = read_eval_results(path)
    assert saved[name]["bbox"]["AP50"] == pytest.approx(100)  # kept beside the new task
    assert saved[name]["localization"] == {"mIoU": 41.5, "CNR": None}  # strict JSON: NaN -> null
    assert saved["other_split"] == {"bbox": {"AP50": 12.0}}

    write_eval_results({name: {"bbox": {"AP50": 50.0, "AP50-Nodule": 50.0}}}, str(tmp_path))
    saved = read_eval_results(path)
    assert saved[name]["bbox"]["AP50"] == 50.0 and "AP50-Effusion" not in saved[name]["bbox"]
    assert saved[name]["bbox"][CLASSES_WITHOUT_GT_KEY] == ["Effusion", "Pneumothorax"]
    assert saved[name]["localization"]["mIoU"] == 41.5


def test_eval_results_io_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="metric 'AP50' of task 'bbox' of dataset 'd'"):
        write_eval_results({"d": {"bbox": {"AP50": "high"}}}, str(tmp_path))
    bad = tmp_path / "eval_results.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="eval_results.json: not valid JSON"):
        read_eval_results(str(bad))
    with pytest.raises(FileNotFoundError, match="no such evaluation results file"):
        read_eval_results(str(tmp_path / "missing.json"))


def test_class_mapping_scores_a_vindr_vocabulary_model_on_nih_names(register_split, tmp_path, caplog):
    """TEST.CLASS_MAPPING: predictions of VinDr classes count as the NIH classes mapped to them (Nodule/Mass
    as Nodule, Pleural effusion as Effusion); a VinDr-only class (Aortic enlargement) is left out and counted."""
    name = register_split(SMALL_SPLIT)
    cfg = make_cfg(None, "OUTPUT_DIR", str(tmp_path), "DATASETS.TRAIN", ("cxr_phantom_train",), tiny=False)  # VinDr's
    vindr = list(MetadataCatalog.get("cxr_phantom_train").thing_classes)
    to_vindr = {NODULE: vindr.index("Nodule/Mass"), EFFUSION: vindr.index("Pleural effusion")}
    detections = {image_id: [(*box, score, to_vindr[cls]) for *box, score, cls in rows]
                  for image_id, rows in perfect_detections(SMALL_SPLIT).items()}
    detections[4] = [(5, 5, 40, 40, 0.95, vindr.index("Aortic enlargement"))]

    cfg.TEST.CLASS_MAPPING = "nih_cxr14_bbox->vindr_cxr"
    with caplog.at_level(logging.INFO, logger="cxr_codet.evaluation.class_mapped"):
        bbox = evaluate(build_evaluator(cfg, name, str(tmp_path)), SMALL_SPLIT["images"], detections)["bbox"]
    assert bbox["AP50-Nodule"] == pytest.approx(100) and bbox["AP50-Effusion"] == pytest.approx(100)
    assert "1 predictions of model classes without a dataset equivalent were left out (Aortic enlargement 1)" \
        in caplog.text

    cfg.TEST.CLASS_MAPPING = "nih_cxr14_bbox->ms_cxr"
    with pytest.raises(KeyError, match="no class mapping nih_cxr14_bbox -> ms_cxr"):
        build_evaluator(cfg, name, str(tmp_path))
    cfg.TEST.CLASS_MAPPING = "nih_cxr14_bbox"
    with pytest.raises(ValueError, match="must read '<dataset vocabulary>-><model vocabulary>'"):
        build_evaluator(cfg, name, str(tmp_path))


def test_one_model_class_stands_for_several_dataset_classes():
    """VinDr's Nodule/Mass predictions are copied to NIH Mass and NIH Nodule; unmapped model classes vanish."""
    nih = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"]
    vindr = list(MetadataCatalog.get("cxr_phantom_train").thing_classes)
    index_map = prediction_index_map(nih, vindr, "nih_cxr14_bbox->vindr_cxr")
    assert index_map[nih.index("Mass")] == index_map[nih.index("Nodule")] == vindr.index("Nodule/Mass")
    assert index_map[nih.index("Pneumonia")] == vindr.index("Lung Opacity")

    instances = Instances((64, 64))
    instances.pred_boxes = Boxes(torch.tensor([[0, 0, 10, 10], [5, 5, 20, 20]], dtype=torch.float32))
    instances.scores = torch.tensor([0.9, 0.8])
    instances.pred_classes = torch.tensor([vindr.index("Nodule/Mass"), vindr.index("ILD")])
    renamed = rename_predictions(instances, index_map)
    assert sorted(renamed.pred_classes.tolist()) == [nih.index("Mass"), nih.index("Nodule")]
    assert renamed.scores.tolist() == pytest.approx([0.9, 0.9])
    assert torch.equal(renamed.pred_boxes.tensor, instances.pred_boxes.tensor[[0, 0]])
    with pytest.raises(ValueError, match="'Pleural effusion', which is not a class of the model"):
        prediction_index_map(["Effusion"], ["Nodule/Mass"], "nih_cxr14_bbox->vindr_cxr")


def test_class_mapping_is_refused_for_a_model_that_classifies_with_the_dataset_names():
    from cxr_codet.engine.trainer import CXRTrainer

    class OpenVocabularyModel(torch.nn.Module):
        def set_test_vocabulary(self, class_names):
            raise AssertionError("the conflict must be reported before any dataset is evaluated")

    cfg = make_cfg(None, "TEST.CLASS_MAPPING", "nih_cxr14_bbox->vindr_cxr", tiny=False)
    with pytest.raises(ValueError, match=r"OpenVocabularyModel classifies with each test dataset's own class names"):
        CXRTrainer.test(cfg, OpenVocabularyModel())


def test_ground_truth_is_what_the_loader_kept(tmp_path, eval_log):
    """Boxes the loader skips (zero area, outside the image) are not ground truth, clipped ones count clipped, and
    a class whose every box was skipped is missing, not AP 0."""
    from cxr_codet.data.datasets.coco_cxr import register_cxr_coco
    from cxr_codet.evaluation import loader_ground_truth

    logging.getLogger(loader_ground_truth.__name__).addHandler(eval_log.handler)
    eval_log.set_level(logging.INFO, logger=loader_ground_truth.__name__)
    name = f"cxr_eval_loader_{uuid.uuid4().hex[:8]}"
    (tmp_path / "images").mkdir()
    boxes = [  # (image id, category id, [x, y, w, h])
        (1, 1, [10, 10, 20, 20]),
        (1, 2, [-1.5, 30, 10, 20]),  # 1.5 px outside the 100 px image: clipped to [0, 30, 8.5, 20]
        (2, 1, [40, 40, 20, 20]),
        (2, 1, [300, 300, 10, 10]),  # outside the image: skipped
        (2, 3, [50, 50, 0, 10]),  # the only Pneumothorax box, zero width: skipped
    ]
    json_file = tmp_path / "test.json"
    json_file.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in (1, 2)],
        "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "iscrowd": 0}
                        for k, (i, c, b) in enumerate(boxes)],
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)],
    }))
    register_cxr_coco(name, str(json_file), str(tmp_path / "images"), class_names=CLASSES)
    try:
        detections = {1: [(10, 10, 30, 30, 0.9, NODULE), (0, 30, 8.5, 50, 0.8, EFFUSION)],
                      2: [(40, 40, 60, 60, 0.7, NODULE)]}
        bbox = evaluate(CXRCOCOEvaluator(name, distributed=False), [(1, 100, 100), (2, 100, 100)], detections)["bbox"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        logging.getLogger(loader_ground_truth.__name__).removeHandler(eval_log.handler)
    assert bbox["AP"] == pytest.approx(100) and bbox["AP50-Effusion"] == pytest.approx(100)
    assert bbox["AP-Effusion"] == pytest.approx(100)  # against the clipped box, not the one outside the image
    assert "AP50-Pneumothorax" not in bbox and "AP-Pneumothorax" not in bbox
    assert (f"{json_file}: '{name}' is evaluated against the 3 boxes its loader kept, not the file's 5: 2 skipped "
            "and 1 clipped by the loader (its warning says why); findings whose every box was skipped, reported as "
            "missing: Pneumothorax (1 box)") in eval_log.text
