"""Localization metrics on small hand-built maps whose answers are worked out in the comments."""
import math

import numpy as np
import pytest
import torch

from cxr_codet.evaluation.localization_metrics import (
    DEFAULT_THRESHOLDS,
    LocalizationAccumulator,
    bootstrap_ci,
    boxes_to_mask,
    cnr,
    macro_average,
    mean_threshold_iou,
    pointing_game,
    threshold_ious,
    two_class_miou,
)
from cxr_codet.modeling.postprocessing import heatmap_to_boxes, mask_to_boxes, normalize_map

NAN = np.nan


def _box_map():
    """4 x 4 map: 4 at three pixels and 2 at one pixel of the box [1, 1, 3, 3], 2.5 at (0, 0), 0 elsewhere."""
    heatmap = np.zeros((4, 4))
    heatmap[1:3, 1:3] = [[4, 4], [4, 2]]
    heatmap[0, 0] = 2.5
    return heatmap


def _nan_border_map():
    """5 x 5 map with a NaN border around a 3 x 3 interior."""
    heatmap = np.full((5, 5), NAN)
    heatmap[1:4, 1:4] = [[4, 6, 0], [6, 6, 2], [0, 2, 0]]
    return heatmap


def test_boxes_to_mask_uses_pixel_centres():
    # Pixel centres are at 0.5, 1.5, 2.5, 3.5. Columns with 0.4 <= c + 0.5 < 2.5: 0, 1.
    # Rows with 0.6 <= r + 0.5 < 2.2: only row 1.
    mask = boxes_to_mask([[0.4, 0.6, 2.5, 2.2]], (4, 4))
    expected = np.zeros((4, 4), bool)
    expected[1, 0:2] = True
    np.testing.assert_array_equal(mask, expected)


def test_boxes_to_mask_clips_unions_and_accepts_no_boxes():
    clipped = boxes_to_mask([[-5, -5, 100, 2]], (4, 3))
    assert clipped[:2].all() and not clipped[2:].any()
    # Two overlapping boxes: the union has 2 x 2 + 2 x 2 - 1 = 7 pixels, stored as booleans (no 2s).
    union = boxes_to_mask(np.array([[0, 0, 2, 2], [1, 1, 3, 3]], dtype=np.float32), (4, 4))
    assert union.dtype == bool and union.sum() == 7
    assert not boxes_to_mask([], (3, 3)).any()
    assert not boxes_to_mask(np.zeros((0, 4)), (3, 3)).any()


def test_boxes_to_mask_rejects_inverted_box():
    with pytest.raises(ValueError, match=r"box 1 .* x1 >= x0"):
        boxes_to_mask([[0, 0, 1, 1], [3, 0, 1, 1]], (4, 4))


def test_normalize_map_to_minus_one_one_and_degenerate_maps():
    np.testing.assert_array_equal(normalize_map([[0, 2], [4, NAN]]), [[-1, 0], [1, NAN]])
    np.testing.assert_array_equal(normalize_map(np.full((2, 2), 7.0)), np.zeros((2, 2)))
    assert np.isnan(normalize_map(np.full((2, 2), NAN))).all()
    with pytest.raises(ValueError, match=r"2-D map .* \(2, 2, 2\)"):
        normalize_map(np.zeros((2, 2, 2)))


def test_threshold_ious_by_hand():
    # Normalised: 4 -> 1, 2.5 -> 0.25, 2 -> 0, 0 -> -1. The ground truth is the box [1, 1, 3, 3] (4 pixels).
    # t = 0.1, 0.2: mask = three 4s + the 2.5 outside: inter 3, union 5 -> 0.6.
    # t = 0.3, 0.4, 0.5: mask = three 4s: inter 3, union 4 -> 0.75. Mean (2 * 0.6 + 3 * 0.75) / 5 = 0.69.
    gt = boxes_to_mask([[1, 1, 3, 3]], (4, 4))
    np.testing.assert_allclose(threshold_ious(_box_map(), gt), [0.6, 0.6, 0.75, 0.75, 0.75])
    assert mean_threshold_iou(_box_map(), gt) == pytest.approx(0.69)
    assert DEFAULT_THRESHOLDS == (0.1, 0.2, 0.3, 0.4, 0.5)


def test_threshold_ious_exclude_nan_border():
    # Box [0, 0, 3, 3] covers 9 pixels, of which 4 are valid: (1,1)=4, (1,2)=6, (2,1)=6, (2,2)=6.
    # Normalised over the interior (0..6): 6 -> 1, 4 -> 1/3, 2 -> -1/3, 0 -> -1.
    # t = 0.1..0.3: mask = {4, 6, 6, 6} = valid ground truth -> 1. t = 0.4, 0.5: three 6s -> 3/4.
    # Mean (3 * 1 + 2 * 0.75) / 5 = 0.9 (counting the NaN pixels of the box would give 4/9 at t = 0.1).
    gt = boxes_to_mask([[0, 0, 3, 3]], (5, 5))
    np.testing.assert_allclose(threshold_ious(_nan_border_map(), gt), [1, 1, 1, 0.75, 0.75])
    assert mean_threshold_iou(_nan_border_map(), gt) == pytest.approx(0.9)


def test_threshold_ious_degenerate_cases():
    gt = boxes_to_mask([[1, 1, 3, 3]], (4, 4))
    # A constant map normalises to zeros: no pixel above a positive threshold, IoU 0.
    np.testing.assert_array_equal(threshold_ious(np.ones((4, 4)), gt), np.zeros(5))
    # An empty ground truth cannot be scored: NaN.
    assert np.isnan(threshold_ious(_box_map(), np.zeros((4, 4), bool))).all()
    assert math.isnan(mean_threshold_iou(_box_map(), np.zeros((4, 4), bool)))
    with pytest.raises(ValueError, match=r"gt_mask has shape \(3, 3\), expected \(4, 4\)"):
        threshold_ious(_box_map(), np.ones((3, 3), bool))


def test_cnr_by_hand_sign_kept():
    # in = {1, 3}: mean 2, population var 1; out = {0, 2, 0, 2}: mean 1, var 1. CNR = (2 - 1) / sqrt(2).
    heatmap = np.array([[1.0, 3.0, 0.0], [2.0, 0.0, 2.0]])
    gt = boxes_to_mask([[0, 0, 2, 1]], (2, 3))
    assert cnr(heatmap, gt) == pytest.approx(1 / math.sqrt(2))
    assert cnr(-heatmap, gt) == pytest.approx(-1 / math.sqrt(2))
    assert cnr(3.0 * heatmap + 7.0, gt) == pytest.approx(1 / math.sqrt(2))


def test_cnr_ground_truth_is_a_union_not_a_sum():
    # The second box overlaps the first at pixel (0, 1); a summed mask would drop that pixel from "in".
    heatmap = np.array([[1.0, 3.0, 0.0], [2.0, 0.0, 2.0]])
    gt = boxes_to_mask([[0, 0, 2, 1], [1, 0, 2, 1]], (2, 3))
    assert cnr(heatmap, gt) == pytest.approx(1 / math.sqrt(2))


def test_cnr_excludes_nan_pixels():
    # in = {4, 6, 6, 6}: mean 5.5, var 0.75; out = {0, 2, 0, 2, 0}: mean 0.8, var 1.6 - 0.64 = 0.96.
    # CNR = 4.7 / sqrt(1.71).
    gt = boxes_to_mask([[0, 0, 3, 3]], (5, 5))
    assert cnr(_nan_border_map(), gt) == pytest.approx(4.7 / math.sqrt(1.71))


def test_cnr_degenerate_cases():
    gt = boxes_to_mask([[1, 1, 3, 3]], (4, 4))
    assert cnr(np.full((4, 4), 5.0), gt) == 0.0  # constant map: no contrast
    assert math.isnan(cnr(gt.astype(float), gt))  # binary map: both variances 0, means differ
    assert math.isnan(cnr(_box_map(), np.zeros((4, 4), bool)))  # no "in" pixel
    assert math.isnan(cnr(_box_map(), np.ones((4, 4), bool)))  # no "out" pixel


def test_two_class_miou_by_hand():
    # pred: 4 pixels, gt: 4 pixels, overlap 2. Foreground IoU 2 / 6 = 1/3.
    # Background: inter = 16 - |fg union| = 10, union = 16 - |fg inter| = 14 -> 5/7.
    # mIoU = (1/3 + 5/7) / 2 = 11/21.
    pred = boxes_to_mask([[0, 0, 2, 2]], (4, 4))
    gt = boxes_to_mask([[1, 0, 3, 2]], (4, 4))
    assert two_class_miou(pred, gt) == pytest.approx(11 / 21)
    assert two_class_miou(torch.from_numpy(pred), gt) == pytest.approx(11 / 21)


def test_two_class_miou_valid_region_and_degenerate_cases():
    empty = np.zeros((3, 3), bool)
    assert two_class_miou(empty, empty) == 1.0  # only background present, predicted perfectly
    # Valid = top row only: pred fills it, gt is empty there -> fg IoU 0, background absent from pred:
    # bg inter 0, union 3 -> 0. Mean 0.
    valid = np.zeros((3, 3), bool)
    valid[0] = True
    gt = np.zeros((3, 3), bool)
    gt[2] = True
    assert two_class_miou(valid, gt, valid) == 0.0
    with pytest.raises(ValueError, match="gt_mask has shape"):
        two_class_miou(empty, np.zeros((2, 2), bool))


def test_pointing_game_hit_miss_and_ties():
    gt = boxes_to_mask([[1, 1, 3, 3]], (4, 4))
    assert pointing_game(_box_map(), gt) == 1.0  # the three 4s lie in the box
    outside = _box_map()
    outside[3, 3] = 9.0
    assert pointing_game(outside, gt) == 0.0
    tie = _box_map()
    tie[0, 3] = 4.0  # a tied maximum outside the box
    assert pointing_game(tie, gt) == 0.0
    assert pointing_game(np.ones((4, 4)), gt) == 0.0  # a flat map never scores


def test_pointing_game_ignores_non_finite_pixels():
    gt = boxes_to_mask([[1, 1, 3, 3]], (4, 4))
    heatmap = _box_map()
    heatmap[0, 3], heatmap[3, 0] = NAN, np.inf
    assert pointing_game(heatmap, gt) == 1.0
    assert math.isnan(pointing_game(heatmap, np.zeros((4, 4), bool)))


def test_macro_average_per_finding_then_over_findings():
    # Nodule mean 1, Effusion mean 0 (NaN ignored) -> macro 0.5, whereas the pooled mean would be 0.25.
    per_finding, overall = macro_average({"Nodule": [1.0], "Effusion": [0.0, 0.0, NAN, 0.0], "Mass": [NAN]})
    assert per_finding["Nodule"] == 1.0 and per_finding["Effusion"] == 0.0 and math.isnan(per_finding["Mass"])
    assert overall == 0.5
    assert math.isnan(macro_average({})[1])


def test_bootstrap_ci_covers_mean_and_is_seeded():
    values = np.random.default_rng(3).normal(0.5, 0.1, size=200)
    low, high = bootstrap_ci(values, seed=1)
    # Standard error 0.1 / sqrt(200) ~ 0.0071, so the 95% interval is about 0.028 wide around the mean.
    assert low < values.mean() < high
    assert 0.015 < high - low < 0.045
    assert bootstrap_ci(values, seed=1) == (low, high)
    assert bootstrap_ci(values, seed=2) != (low, high)


def test_bootstrap_ci_degenerate_and_stratified():
    assert bootstrap_ci([0.7]) == (pytest.approx(0.7), pytest.approx(0.7))
    assert all(math.isnan(v) for v in bootstrap_ci([NAN, NAN]))
    # Each finding constant: every stratified replicate of the macro average is 0.5, while pooling the six
    # values and resampling them gives a wide interval.
    assert bootstrap_ci({"a": [0, 0, 0], "b": [1, 1, 1]}) == (pytest.approx(0.5), pytest.approx(0.5))
    pooled_low, pooled_high = bootstrap_ci([0, 0, 0, 1, 1, 1])
    assert pooled_high - pooled_low > 0.5
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=95)


def _two_blob_map():
    """6 x 8 map: blob A = 1.0 at rows/cols 1-2; blob B = 0.6 at rows 3-4, cols 5-7, 0.9 at (4, 7)."""
    heatmap = np.zeros((6, 8))
    heatmap[1:3, 1:3] = 1.0
    heatmap[3:5, 5:8] = 0.6
    heatmap[4, 7] = 0.9
    return heatmap


def test_heatmap_to_boxes_components_and_scores():
    # Normalised: 1 -> 1, 0.9 -> 0.8, 0.6 -> 0.2, 0 -> -1. At 0.1 both blobs; B's mean = (5 * 0.6 + 0.9) / 6.
    boxes, scores = heatmap_to_boxes(_two_blob_map(), threshold=0.1, score="mean")
    np.testing.assert_array_equal(boxes, [[1, 1, 3, 3], [5, 3, 8, 5]])
    np.testing.assert_allclose(scores, [1.0, 0.65], rtol=1e-6)
    _, max_scores = heatmap_to_boxes(_two_blob_map(), threshold=0.1, score="max")
    np.testing.assert_allclose(max_scores, [1.0, 0.9], rtol=1e-6)
    # At 0.3 only the 0.9 pixel of B survives.
    boxes, scores = heatmap_to_boxes(_two_blob_map(), threshold=0.3)
    np.testing.assert_array_equal(boxes, [[1, 1, 3, 3], [7, 4, 8, 5]])
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    with pytest.raises(ValueError, match="unknown box score 'median'"):
        heatmap_to_boxes(_two_blob_map(), score="median")


def test_mask_to_boxes_connectivity_roundtrip_and_empty():
    diagonal = np.array([[1, 0], [0, 1]], bool)
    assert len(mask_to_boxes(diagonal, connectivity=1)[0]) == 2
    np.testing.assert_array_equal(mask_to_boxes(diagonal, connectivity=2)[0], [[0, 0, 2, 2]])
    rectangles = boxes_to_mask([[0, 0, 2, 3], [4, 1, 7, 2]], (4, 8))
    boxes, scores = mask_to_boxes(rectangles)
    np.testing.assert_array_equal(boxes_to_mask(boxes, (4, 8)), rectangles)
    np.testing.assert_array_equal(scores, [1.0, 1.0])
    boxes, scores = mask_to_boxes(np.zeros((3, 3), bool))
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def _effusion_miss():
    """4 x 4 map with its only bright pixel at (0, 0), far from the box [2, 2, 4, 4]."""
    heatmap = np.zeros((4, 4))
    heatmap[0, 0] = 1.0
    return heatmap


def test_accumulator_per_sample_metrics_by_hand():
    acc = LocalizationAccumulator()
    hit = np.zeros((4, 4))
    hit[1:3, 1:3] = [[4, 4], [4, 2]]
    metrics = acc.add("Nodule", hit, boxes=[[1, 1, 3, 3]])
    # Mask at every threshold = the three 4s: IoU 3/4. in = {4, 4, 4, 2}: mean 3.5, var 0.75; out all 0.
    # Two-class: fg 3/4, bg 12/13 -> (3/4 + 12/13) / 2 = 87/104.
    assert metrics["IoU"] == pytest.approx(0.75) and metrics["IoU@0.3"] == pytest.approx(0.75)
    assert metrics["CNR"] == pytest.approx(3.5 / math.sqrt(0.75))
    assert metrics["mIoU_2class"] == pytest.approx(87 / 104)
    assert metrics["PointingGame"] == 1.0
    miss = acc.add("Effusion", torch.from_numpy(_effusion_miss()), boxes=[[2, 2, 4, 4]])
    # in = four 0s; out = eleven 0s and one 1: mean 1/12, var 11/144 -> CNR = -1/sqrt(11).
    # Two-class: fg 0, bg: inter 11, union 16 -> 11/32.
    assert miss["IoU"] == 0.0 and miss["PointingGame"] == 0.0
    assert miss["CNR"] == pytest.approx(-1 / math.sqrt(11))
    assert miss["mIoU_2class"] == pytest.approx(11 / 32)


def test_accumulator_summary_macro_averages_counts_and_cis():
    acc = LocalizationAccumulator(n_bootstrap=200, seed=0)
    hit = np.zeros((4, 4))
    hit[1:3, 1:3] = [[4, 4], [4, 2]]
    acc.add("Nodule", hit, boxes=[[1, 1, 3, 3]])
    acc.add("Effusion", _effusion_miss(), boxes=[[2, 2, 4, 4]])
    acc.add("Effusion", hit, gt_mask=boxes_to_mask([[1, 1, 3, 3]], (4, 4)))
    assert acc.add("Effusion", hit, boxes=[[10, 10, 12, 12]]) == {}  # box off the map: skipped, counted
    assert len(acc) == 3
    summary = acc.summarize()
    # Effusion IoU = (0 + 0.75) / 2 = 0.375, Nodule 0.75 -> macro 0.5625 (pooled mean would be 0.5).
    assert summary["IoU-Nodule"] == pytest.approx(0.75)
    assert summary["IoU-Effusion"] == pytest.approx(0.375)
    assert summary["IoU"] == pytest.approx(0.5625)
    assert summary["IoU@0.1"] == pytest.approx(0.5625)
    assert summary["PointingGame"] == pytest.approx(0.75)
    assert summary["CNR-Effusion"] == pytest.approx((3.5 / math.sqrt(0.75) - 1 / math.sqrt(11)) / 2)
    assert summary["num_samples"] == 3.0 and summary["num_skipped"] == 1.0
    assert summary["num_samples-Effusion"] == 2.0 and summary["num_skipped-Effusion"] == 1.0
    # One Nodule sample: a zero-width interval; the macro interval covers the macro mean.
    assert summary["IoU_ci_low-Nodule"] == summary["IoU_ci_high-Nodule"] == pytest.approx(0.75)
    assert summary["IoU_ci_low"] <= summary["IoU"] <= summary["IoU_ci_high"]
    assert summary["IoU_ci_low"] < summary["IoU_ci_high"]
    assert all(isinstance(value, float) for value in summary.values())
    assert acc.summarize() == summary  # seeded
    acc.reset()
    assert len(acc) == 0 and acc.summarize()["num_samples"] == 0.0


def test_accumulator_mask_fn_and_argument_errors():
    hit = np.zeros((4, 4))
    hit[1:3, 1:3] = [[4, 4], [4, 2]]
    # mask_fn = map > 1 selects the whole box: both classes exact, two-class mIoU 1.
    acc = LocalizationAccumulator(mask_fn=lambda heatmap: heatmap > 1)
    assert acc.add("Nodule", hit, boxes=[[1, 1, 3, 3]])["mIoU_2class"] == 1.0
    with pytest.raises(ValueError, match="exactly one of `boxes` and `gt_mask`"):
        acc.add("Nodule", hit)
    with pytest.raises(ValueError, match="thresholds must not be empty"):
        LocalizationAccumulator(thresholds=())
    with pytest.raises(ValueError, match="confidence"):
        LocalizationAccumulator(confidence=1.5)


def test_accumulator_leaves_undefined_cnr_out_and_logs_it(caplog):
    # A binary map matching its box has an undefined CNR (both variances 0): left out of CNR only.
    acc = LocalizationAccumulator(n_bootstrap=50)
    binary = boxes_to_mask([[1, 1, 3, 3]], (4, 4)).astype(float)
    acc.add("Nodule", binary, boxes=[[1, 1, 3, 3]])
    acc.add("Nodule", _effusion_miss(), boxes=[[2, 2, 4, 4]])
    with caplog.at_level("WARNING", logger="cxr_codet.evaluation.localization_metrics"):
        summary = acc.summarize()
    assert summary["CNR"] == pytest.approx(-1 / math.sqrt(11))
    assert summary["IoU"] == pytest.approx(0.5)  # (1 + 0) / 2: both samples count for IoU
    assert "CNR undefined (NaN) and left out for {'Nodule': 1}" in caplog.text
