"""VOC-style AP at one IoU (the VinBigData mAP@0.4) and FROC: hand-computed small cases, and mAP@0.4 against
an independent VOC-devkit-style implementation on a real-sized random example."""
import numpy as np
import pytest

from cxr_codet.evaluation.detection_metrics import (
    FROC_FP_RATES,
    BoxSet,
    all_point_average_precision,
    box_iou,
    center_inside,
    froc,
    froc_by_class,
    mean_voc_average_precision,
    voc_average_precision,
)

UNIT = [0, 0, 10, 10]


def boxes(rows, scored=True):
    """BoxSet from rows (image, label, x0, y0, x1, y1[, score])."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7 if scored else 6)
    return BoxSet.build(rows[:, 0].astype(int), rows[:, 2:6], rows[:, 1].astype(int),
                        rows[:, 6] if scored else None)


def test_box_iou_and_center_inside_hand_values():
    assert box_iou([UNIT], [[0, 0, 10, 4.5]])[0, 0] == pytest.approx(0.45)
    assert box_iou([UNIT], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    assert box_iou([UNIT], [[20, 20, 30, 30]])[0, 0] == 0.0
    # Centres (5, 5) inside, (10, 10) on the border (inside), (11, 11) outside.
    assert center_inside([[4, 4, 6, 6], [6, 6, 14, 14], [9, 9, 13, 13]], [UNIT])[:, 0].tolist() == [True, True, False]


def test_all_point_ap_is_the_area_under_the_precision_envelope_not_11_point():
    # Recall 1/2 at precision 1, then 1 at precision 2/3: 0.5 * 1 + 0.5 * 2/3.
    ap = all_point_average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3])
    assert ap == pytest.approx(0.5 + 1 / 3)
    eleven_point = (6 * 1.0 + 5 * (2 / 3)) / 11  # VOC 2007's variant gives another value
    assert abs(ap - eleven_point) > 0.01
    assert all_point_average_precision([], []) == 0.0


def test_voc_ap_counts_a_duplicate_as_false_positive():
    gts = boxes([(0, 0, *UNIT), (0, 0, 20, 20, 30, 30)], scored=False)
    dets = boxes([(0, 0, *UNIT, 0.9), (0, 0, 0, 0, 10, 9, 0.8), (0, 0, 20, 20, 30, 30, 0.7)])
    # TP, FP (its best box is taken), TP: recall .5 .5 1, precision 1 .5 2/3.
    assert voc_average_precision(dets, gts, 0) == pytest.approx(0.5 + 1 / 3)


def test_voc_ap_matches_only_the_highest_iou_box_as_the_devkit_does():
    gts = boxes([(0, 0, *UNIT), (0, 0, 0, 2, 10, 12)], scored=False)
    # The second detection overlaps box 2 with IoU 0.74, but its best box (IoU 0.90) is already taken:
    # an FP under VOC's rule (COCO's matcher would take box 2 and give AP 1).
    dets = boxes([(0, 0, *UNIT, 0.9), (0, 0, 0, 0.5, 10, 10.5, 0.8)])
    assert box_iou(dets.boxes[1], gts.boxes[1])[0, 0] == pytest.approx(85 / 115)
    assert voc_average_precision(dets, gts, 0) == pytest.approx(0.5)


def test_voc_ap_iou_threshold_04_accepts_what_05_rejects():
    gts = boxes([(0, 0, *UNIT)], scored=False)
    dets = boxes([(0, 0, 0, 0, 10, 4.5, 0.9)])  # IoU 0.45
    assert voc_average_precision(dets, gts, 0, iou_threshold=0.4) == pytest.approx(1.0)
    assert voc_average_precision(dets, gts, 0, iou_threshold=0.5) == pytest.approx(0.0)


def test_mean_voc_ap_skips_classes_without_ground_truth_and_ignores_other_images_and_classes():
    gts = boxes([(0, 0, *UNIT), (1, 1, *UNIT)], scored=False)
    dets = boxes([(0, 0, *UNIT, 0.9), (1, 0, *UNIT, 0.95), (1, 1, *UNIT, 0.5), (0, 2, *UNIT, 0.9)])
    mean, per_class = mean_voc_average_precision(dets, gts, [0, 1, 2])
    # Class 0: an FP on image 1 (no class-0 box there) ranked above the TP: precision 1/2 at recall 1.
    assert per_class == {0: pytest.approx(0.5), 1: pytest.approx(1.0), 2: None}
    assert mean == pytest.approx(0.75)


# FROC on two images with one class-0 box each; scores descend 0.9 .. 0.5.
FROC_GTS = [(0, 0, *UNIT), (1, 0, *UNIT)]


FROC_DETS = [
    (0, 0, *UNIT, 0.9),  # hit
    (1, 0, 50, 50, 60, 60, 0.8),  # FP
    (0, 0, 0, 0, 10, 9, 0.7),  # a second hit on a found box: ignored, not an FP
    (1, 0, 4, 4, 6, 6, 0.6),  # IoU 0.04, centre inside: a hit only by centre
    (0, 0, 50, 50, 60, 60, 0.5),  # FP
]


def test_froc_by_centre_hand_computed():
    result = froc(boxes(FROC_DETS), boxes(FROC_GTS, scored=False), num_images=2, hit="center")
    # (FPPI, sensitivity) after each threshold: (0, .5) (.5, .5) (.5, .5) (.5, 1) (1, 1).
    np.testing.assert_allclose(result.fp_per_image, [0, 0, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(result.sensitivity, [0, 0.5, 0.5, 0.5, 1.0, 1.0])
    assert result.fp_rates == FROC_FP_RATES
    assert result.sensitivity_at == pytest.approx((0.5, 0.5, 1, 1, 1, 1, 1))
    assert result.cpm == pytest.approx(6 / 7)


def test_froc_by_iou_hand_computed():
    result = froc(boxes(FROC_DETS), boxes(FROC_GTS, scored=False), num_images=2, hit="iou", iou_threshold=0.4)
    # The centre-only detection is now an FP: image 2's box is never found.
    np.testing.assert_allclose(result.fp_per_image, [0, 0, 0.5, 0.5, 1.0, 1.5])
    assert result.sensitivity_at == pytest.approx((0.5,) * 7)
    assert result.cpm == pytest.approx(0.5)
    # Four images halve the false positives per image: 1 FP at rate 0.125 x 4 = 0.5 is now reachable.
    assert froc(boxes(FROC_DETS), boxes(FROC_GTS, scored=False), num_images=4).sensitivity_at[0] == 0.5


def test_froc_treats_equal_scores_as_one_threshold():
    gts = boxes([(0, 0, *UNIT)], scored=False)
    dets = boxes([(0, 0, *UNIT, 0.9), (0, 0, 50, 50, 60, 60, 0.9)])
    result = froc(dets, gts, num_images=1, fp_rates=(0.5, 1.0))
    np.testing.assert_allclose(result.fp_per_image, [0, 1])
    np.testing.assert_allclose(result.sensitivity, [0, 1])
    assert result.sensitivity_at == (0.0, 1.0)


def test_froc_without_detections_or_ground_truth():
    gts = boxes(FROC_GTS, scored=False)
    assert froc(boxes([]), gts, num_images=2).cpm == 0.0
    assert froc(boxes(FROC_DETS), boxes([], scored=False), num_images=2) is None
    with pytest.raises(ValueError, match="TEST.FROC.HIT_CRITERION.*'centre'"):
        froc(boxes(FROC_DETS), gts, num_images=2, hit="centre")
    with pytest.raises(ValueError, match="positive number of images"):
        froc(boxes(FROC_DETS), gts, num_images=0)


def test_froc_by_class_pools_classes_for_the_overall_curve_and_needs_the_right_class():
    gts = boxes([(0, 0, *UNIT), (0, 1, 20, 20, 30, 30)], scored=False)
    dets = boxes([(0, 0, *UNIT, 0.9), (0, 0, 20, 20, 30, 30, 0.8)])  # the 2nd has the wrong class: an FP
    results = froc_by_class(dets, gts, [0, 1], num_images=1, fp_rates=(0.5, 1.0))
    assert results[0].sensitivity_at == (1.0, 1.0)
    assert results[1].sensitivity_at == (0.0, 0.0) and results[1].cpm == 0.0
    assert results[None].sensitivity_at == (0.5, 0.5)


def _devkit_style_map(det_rows, gt_rows, classes, iou_threshold):
    """An independent VOC (2010+) mAP written like the devkit's loop: per class, images' boxes in dicts
    with used-flags, detections in descending score, IoU by scalar arithmetic, AP from the mrec/mpre
    envelope evaluated where recall changes."""
    aps = []
    for c in classes:
        gt = {}
        for image, label, *box in gt_rows:
            if label == c:
                gt.setdefault(image, {"boxes": [], "used": []})
                gt[image]["boxes"].append(box)
                gt[image]["used"].append(False)
        npos = sum(len(v["boxes"]) for v in gt.values())
        if npos == 0:
            continue
        ds = sorted([r for r in det_rows if r[1] == c], key=lambda r: -r[6])
        tp, fp = [], []
        for image, _, x0, y0, x1, y1, _ in ds:
            best, jbest = -1.0, -1
            for j, (gx0, gy0, gx1, gy1) in enumerate(gt.get(image, {"boxes": []})["boxes"]):
                iw, ih = min(x1, gx1) - max(x0, gx0), min(y1, gy1) - max(y0, gy0)
                if iw > 0 and ih > 0:
                    inter = iw * ih
                    o = inter / ((x1 - x0) * (y1 - y0) + (gx1 - gx0) * (gy1 - gy0) - inter)
                    if o > best:
                        best, jbest = o, j
            if best >= iou_threshold and not gt[image]["used"][jbest]:
                gt[image]["used"][jbest] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        ctp, cfp, rec, prec = 0, 0, [], []
        for t, f in zip(tp, fp):
            ctp, cfp = ctp + t, cfp + f
            rec.append(ctp / npos)
            prec.append(ctp / (ctp + cfp))
        mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        aps.append(sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]))
    return sum(aps) / len(aps)


def test_map_at_04_equals_an_independent_devkit_style_computation_on_a_real_sized_example():
    # 200 images of 512 px, 8 findings, 0-3 boxes each; 30 detections per image: jittered copies of the
    # ground truth (some with the wrong class) and random boxes, with continuous random scores.
    rng = np.random.default_rng(0)
    gt_rows, det_rows = [], []
    for image in range(200):
        for _ in range(rng.integers(0, 4)):
            x0, y0 = rng.uniform(0, 400, 2)
            w, h = rng.uniform(15, 110, 2)
            gt_rows.append((image, int(rng.integers(0, 8)), x0, y0, x0 + w, y0 + h))
        own = [r for r in gt_rows if r[0] == image]
        for k in range(30):
            if own and k < 3 * len(own):
                _, label, x0, y0, x1, y1 = own[k % len(own)]
                label = label if rng.random() < 0.8 else int(rng.integers(0, 8))
                jitter = rng.normal(0, 0.15 * (x1 - x0), 4)
                box = (x0 + jitter[0], y0 + jitter[1], x1 + jitter[2], y1 + jitter[3])
                if box[2] <= box[0] or box[3] <= box[1]:
                    box = (x0, y0, x1, y1)
            else:
                x0, y0 = rng.uniform(0, 450, 2)
                box = (x0, y0, x0 + rng.uniform(10, 60), y0 + rng.uniform(10, 60))
                label = int(rng.integers(0, 8))
            det_rows.append((image, label, *box, float(rng.random())))
    assert len(gt_rows) > 250 and len(det_rows) == 6000
    expected = _devkit_style_map(det_rows, gt_rows, range(8), 0.4)
    mean, per_class = mean_voc_average_precision(boxes(det_rows), boxes(gt_rows, scored=False), range(8), 0.4)
    assert 0.05 < expected < 0.95  # a non-trivial case
    assert mean == pytest.approx(expected, abs=1e-12)
    assert mean != pytest.approx(mean_voc_average_precision(boxes(det_rows), boxes(gt_rows, scored=False),
                                                            range(8), 0.5)[0])
