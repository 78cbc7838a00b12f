"""Localization evaluator (hand-made maps with known scores, overlays, error messages), per-dataset evaluator
selection (TEST.EVALUATORS_BY_DATASET) and heat-map overlays, on tiny datasets written to tmp_path."""
import json
import uuid

import cv2
import numpy as np
import pytest
import torch
from conftest import make_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluators
from detectron2.structures import BoxMode

from cxr_codet.evaluation import read_eval_results, write_eval_results
from cxr_codet.evaluation.build import build_configured_evaluator, build_evaluator, configured_evaluator_types
from cxr_codet.evaluation.heatmap_overlays import BOX_COLOR, heatmap_overlay, save_heatmap_overlay
from cxr_codet.evaluation.localization_evaluation import (
    OVERLAY_FOLDER,
    LocalizationEvaluator,
    ground_truth_samples,
)

CLASSES = ["Nodule", "Effusion", "Cardiomegaly"]


SIZE = 32


def _register(tmp_path, records, **metadata):
    """Register `records` (images written as gray PNGs) under a fresh name; returns the name."""
    name = f"loc_eval_{uuid.uuid4().hex[:8]}"
    for record in records:
        path = tmp_path / f"{name}_{record['image_id']}.png"
        cv2.imwrite(str(path), np.full((record["height"], record["width"]), 100, np.uint8))
        record["file_name"] = str(path)
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).set(thing_classes=list(CLASSES), evaluator_type="coco", **metadata)
    return name


def _annotation(category, xywh):
    return {"bbox": list(xywh), "bbox_mode": BoxMode.XYWH_ABS, "category_id": category, "iscrowd": 0}


def _records():
    """Image 1: a Nodule box and an Effusion box; image 2: a Nodule box; image 3: no finding."""
    return [
        {"image_id": 1, "height": SIZE, "width": SIZE,
         "annotations": [_annotation(0, (4, 4, 8, 8)), _annotation(1, (16, 20, 12, 8))]},
        {"image_id": 2, "height": SIZE, "width": SIZE, "annotations": [_annotation(0, (20, 2, 6, 6))]},
        {"image_id": 3, "height": SIZE, "width": SIZE, "annotations": []},
    ]


def _box_map(xyxy, inside=1.0, outside=0.0, shape=(SIZE, SIZE)):
    """A map that is `inside` on the box's pixels and `outside` elsewhere."""
    heatmap = np.full(shape, outside, np.float32)
    x0, y0, x1, y1 = xyxy
    heatmap[y0:y1, x0:x1] = inside
    return torch.from_numpy(heatmap)


def _output(maps_by_finding):
    """A model output with one map per vocabulary finding (maps not given are flat zeros)."""
    maps = [maps_by_finding.get(name, torch.zeros(SIZE, SIZE)) for name in CLASSES]
    return {"localization": {"findings": list(CLASSES), "prompts": [f"Findings suggesting {c}." for c in CLASSES],
                             "heatmaps": torch.stack(maps)}}


def _cfg(**overrides):
    return make_cfg(None, *(item for pair in overrides.items() for item in pair), tiny=False)


def test_ground_truth_samples_group_boxes_by_finding_as_xyxy():
    samples = ground_truth_samples(_records()[0], CLASSES)
    assert [(finding, phrase) for finding, phrase, _ in samples] == [("Effusion", None), ("Nodule", None)]
    np.testing.assert_allclose(samples[1][2], [[4, 4, 12, 12]])
    np.testing.assert_allclose(samples[0][2], [[16, 20, 28, 28]])
    assert ground_truth_samples(_records()[2], CLASSES) == []


def test_ground_truth_samples_of_a_phrase_record_take_all_its_boxes():
    record = {"phrase": "small left apical nodule", "category_name": "Nodule",
              "annotations": [_annotation(0, (0, 0, 4, 4)), _annotation(0, (10, 10, 2, 2))]}
    [(finding, phrase, boxes)] = ground_truth_samples(record, CLASSES)
    assert (finding, phrase) == ("Nodule", "small left apical nodule")
    np.testing.assert_allclose(boxes, [[0, 0, 4, 4], [10, 10, 12, 12]])


def test_ground_truth_samples_reject_unknown_category():
    record = {"file_name": "x.png", "annotations": [_annotation(7, (0, 0, 4, 4))]}
    with pytest.raises(ValueError, match="x.png: annotation category_id 7 is outside the dataset's 3 classes"):
        ground_truth_samples(record, CLASSES)


def test_perfect_and_inverted_maps_give_known_scores(tmp_path):
    name = _register(tmp_path, _records())
    evaluator = LocalizationEvaluator(name, n_bootstrap=20)
    perfect = {"Nodule": _box_map((4, 4, 12, 12)), "Effusion": _box_map((16, 20, 28, 28))}
    evaluator.process([{"image_id": 1}], [_output(perfect)])
    evaluator.process([{"image_id": 2}], [_output({"Nodule": _box_map((20, 2, 26, 8), inside=0.0, outside=1.0)})])
    evaluator.process([{"image_id": 3}], [_output({})])  # no boxes: nothing to score
    results = evaluator.evaluate()["localization"]
    assert results["num_samples"] == 3 and results["num_samples-Nodule"] == 2
    assert results["IoU-Effusion"] == pytest.approx(1.0)
    assert results["IoU-Nodule"] == pytest.approx(0.5)  # 1 for image 1, 0 for the inverted map
    assert results["IoU"] == pytest.approx(0.75)  # per finding, then over findings
    assert results["PointingGame-Nodule"] == pytest.approx(0.5)
    assert results["mIoU_2class-Effusion"] == pytest.approx(1.0)
    assert np.isnan(results["CNR-Effusion"])  # a binary map has zero variances: CNR undefined
    assert "IoU-Cardiomegaly" not in results


def test_smooth_maps_give_finite_cnr_with_the_right_sign(tmp_path):
    name = _register(tmp_path, _records()[1:2])
    evaluator = LocalizationEvaluator(name, n_bootstrap=20)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    peak = torch.from_numpy(np.exp(-((xx - 23) ** 2 + (yy - 5) ** 2) / 20.0).astype(np.float32))
    evaluator.process([{"image_id": 2}], [_output({"Nodule": peak})])
    results = evaluator.evaluate()["localization"]
    assert results["CNR"] > 1.0 and results["PointingGame"] == 1.0


def test_boxes_are_rescaled_to_a_map_of_another_size(tmp_path):
    name = _register(tmp_path, _records()[1:2])
    evaluator = LocalizationEvaluator(name, n_bootstrap=20)
    half = _box_map((10, 1, 13, 4), shape=(SIZE // 2, SIZE // 2))  # the box (20, 2, 26, 8) at half size
    evaluator.process([{"image_id": 2}], [{"localization": {"findings": ["Nodule"], "prompts": ["p"],
                                                            "heatmaps": half[None]}}])
    assert evaluator.evaluate()["localization"]["IoU"] == pytest.approx(1.0)


def test_phrase_maps_are_matched_by_phrase(tmp_path):
    record = {"image_id": 5, "height": SIZE, "width": SIZE, "phrase": "nodule in the right upper zone",
              "category_name": "Nodule", "annotations": [_annotation(0, (4, 4, 8, 8))]}
    name = _register(tmp_path, [record])
    evaluator = LocalizationEvaluator(name, n_bootstrap=20)
    output = {"localization": {"findings": ["Nodule", "Nodule"],
                               "prompts": ["Findings suggesting Nodule.", "nodule in the right upper zone"],
                               "heatmaps": torch.stack([torch.zeros(SIZE, SIZE), _box_map((4, 4, 12, 12))])}}
    evaluator.process([{"image_id": 5}], [output])
    assert evaluator.evaluate()["localization"]["IoU-Nodule"] == pytest.approx(1.0)


def test_overlays_are_written_for_the_first_images_only(tmp_path):
    name = _register(tmp_path, _records())
    evaluator = LocalizationEvaluator(name, str(tmp_path / "out"), num_overlays=1, n_bootstrap=20)
    for image_id in (1, 2):
        evaluator.process([{"image_id": image_id}], [_output({"Nodule": _box_map((4, 4, 12, 12))})])
    evaluator.evaluate()
    written = sorted(p.name for p in (tmp_path / "out" / OVERLAY_FOLDER).iterdir())
    stem = f"{name}_1"
    assert written == [f"{stem}_Effusion.png", f"{stem}_Nodule.png"]
    overlay = cv2.imread(str(tmp_path / "out" / OVERLAY_FOLDER / f"{stem}_Nodule.png"))
    assert overlay.shape == (SIZE, SIZE, 3)


def test_output_without_maps_and_unmapped_findings_raise_clear_errors(tmp_path):
    name = _register(tmp_path, _records())
    evaluator = LocalizationEvaluator(name, n_bootstrap=20)
    with pytest.raises(ValueError, match="no 'localization' entry"):
        evaluator.process([{"image_id": 1}], [{"instances": None}])
    output = {"localization": {"findings": ["Cardiomegaly"], "prompts": ["p"], "heatmaps": torch.zeros(1, SIZE, SIZE)}}
    with pytest.raises(ValueError, match="TEST_VOCABULARY_FROM_DATASET"):
        evaluator.process([{"image_id": 2}], [output])
    with pytest.raises(KeyError, match="image_id 99"):
        evaluator.process([{"image_id": 99}], [output])


def test_bad_settings_are_rejected(tmp_path):
    name = _register(tmp_path, _records())
    with pytest.raises(ValueError, match="TWO_CLASS_MASK must be one of"):
        LocalizationEvaluator(name, two_class_mask="otsu")
    with pytest.raises(ValueError, match="NUM_OVERLAYS must be >= 0"):
        LocalizationEvaluator(name, num_overlays=-1)


def test_gmm_two_class_mask_is_used_when_asked(tmp_path):
    name = _register(tmp_path, _records()[1:2])
    evaluator = LocalizationEvaluator(name, two_class_mask="gmm", n_bootstrap=20)
    evaluator.process([{"image_id": 2}], [_output({"Nodule": _box_map((20, 2, 26, 8), inside=5.0)})])
    # The GMM mask's 3x3 smoothing drops the 6x6 box's 4 corners: fg IoU 32/36, bg IoU 988/992 (the
    # threshold masks would score 1.0 here).
    assert evaluator.evaluate()["localization"]["mIoU_2class"] == pytest.approx((32 / 36 + 988 / 992) / 2)


def test_results_go_to_eval_results_json_under_localization(tmp_path):
    name = _register(tmp_path, _records()[1:2])
    evaluator = LocalizationEvaluator(name, n_bootstrap=20)
    evaluator.process([{"image_id": 2}], [_output({"Nodule": _box_map((20, 2, 26, 8))})])
    path = write_eval_results({name: evaluator.evaluate()}, str(tmp_path))
    saved = read_eval_results(path)[name]["localization"]
    assert saved["IoU"] == pytest.approx(1.0) and saved["CNR"] is None
    assert json.loads(open(path).read())[name]["localization"]["num_samples"] == 1


def test_evaluators_by_dataset_selects_and_combines_evaluators(tmp_path):
    name = _register(tmp_path, _records(), json_file=str(tmp_path / "unused.json"))
    cfg = _cfg(**{"TEST.EVALUATORS_BY_DATASET": [[name, "localization"], ["other_dataset", "coco", "localization"]]})
    assert configured_evaluator_types(cfg, name) == ["localization"]
    assert configured_evaluator_types(cfg, "other_dataset") == ["coco", "localization"]
    assert configured_evaluator_types(cfg, "not_listed") is None
    assert build_configured_evaluator(cfg, "not_listed", str(tmp_path)) is None
    evaluator = build_configured_evaluator(cfg, name, str(tmp_path))
    evaluator.reset()
    evaluator.process([{"image_id": 1}], [_output({"Nodule": _box_map((4, 4, 12, 12))})])
    results = evaluator.evaluate()["localization"]
    assert results["num_samples"] == 2 and results["IoU-Nodule"] == pytest.approx(1.0)


def test_evaluators_by_dataset_combines_several(tmp_path):
    name = _register(tmp_path, _records())
    cfg = _cfg(**{"TEST.EVALUATORS_BY_DATASET": [[name, "localization", "localization"]]})
    combined = build_configured_evaluator(cfg, name, str(tmp_path))
    assert isinstance(combined, DatasetEvaluators) and len(combined._evaluators) == 2
    through_build = build_evaluator(cfg, name, str(tmp_path))  # the list wins over the dataset's evaluator_type
    assert isinstance(through_build, DatasetEvaluators) and len(through_build._evaluators) == 2


@pytest.mark.parametrize("entries, message", [
    ([["only_a_name"]], r"must be \[dataset_name, evaluator_type, ...\]"),
    ([["d", "no_such_evaluator"]], r"unknown evaluator type\(s\) \['no_such_evaluator'\] for 'd'"),
])
def test_evaluators_by_dataset_bad_entries(entries, message):
    with pytest.raises(ValueError, match=message):
        configured_evaluator_types(_cfg(**{"TEST.EVALUATORS_BY_DATASET": entries}), "d")


def test_heatmap_overlay_colours_valid_pixels_and_draws_boxes(tmp_path):
    image = np.full((40, 50), 80, np.uint8)
    heatmap = np.tile(np.linspace(0, 1, 50), (40, 1))
    heatmap[:5] = np.nan
    overlay = heatmap_overlay(image, heatmap, boxes=[[10, 10, 30, 30]])
    assert overlay.shape == (40, 50, 3) and overlay.dtype == np.uint8
    assert (overlay[:5] == 80).all()  # NaN rows: the plain image
    assert tuple(overlay[10, 20]) == BOX_COLOR  # top edge of the box
    assert overlay[20, 45, 2] > overlay[20, 45, 0]  # high values red, low values blue
    assert overlay[20, 2, 0] > overlay[20, 2, 2]
    path = save_heatmap_overlay(str(tmp_path / "sub" / "o.png"), image, heatmap, [[10, 10, 30, 30]], title="Nodule")
    assert cv2.imread(path).shape == (40, 50, 3)


def test_heatmap_overlay_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"heat map has shape \(4, 4\), image has \(5, 5\)"):
        heatmap_overlay(np.zeros((5, 5), np.uint8), np.zeros((4, 4)))
