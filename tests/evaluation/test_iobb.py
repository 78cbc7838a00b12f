"""Wang et al.'s localization accuracy by IoBB: boxes from a heat map, intersection over the predicted box."""
import numpy as np
import pytest

from cxr_codet.evaluation.iobb import WANG_MAP_THRESHOLD, IoBBAccumulator, iobb


def test_iobb_divides_by_the_predicted_box():
    gt = np.array([[0, 0, 10, 10]])
    assert iobb(gt, np.array([[0, 0, 20, 20]]))[0, 0] == pytest.approx(0.25)  # a box 4x the lesion
    assert iobb(gt, np.array([[2, 2, 6, 6]]))[0, 0] == pytest.approx(1.0)     # a box inside the lesion
    assert iobb(gt, np.array([[20, 20, 30, 30]]))[0, 0] == 0.0
    assert iobb(gt, np.zeros((0, 4))).shape == (1, 0)


def _map_with_blob(box, shape=(40, 40)):
    heatmap = np.zeros(shape)
    x0, y0, x1, y1 = box
    heatmap[y0:y1, x0:x1] = 1.0
    return heatmap


def test_accuracy_per_finding_and_threshold():
    acc = IoBBAccumulator(thresholds=(0.1, 0.25, 0.5))
    acc.add("Nodule", _map_with_blob((0, 0, 10, 10)), np.array([[0, 0, 10, 10]]))       # exact: IoBB 1
    acc.add("Nodule", _map_with_blob((0, 0, 20, 20)), np.array([[0, 0, 10, 10]]))       # 4x too big: 0.25
    acc.add("Mass", np.zeros((40, 40)), np.array([[0, 0, 10, 10], [20, 20, 30, 30]]))  # flat map: no box at all
    out = acc.summarize()
    assert out["IoBB_acc@0.1-Nodule"] == 1.0
    assert out["IoBB_acc@0.25-Nodule"] == 0.5  # IoBB must exceed T
    assert out["IoBB_acc@0.5-Nodule"] == 0.5
    assert out["IoBB_acc@0.1-Mass"] == 0.0 and out["num_boxes-IoBB-Mass"] == 2
    assert out["IoBB_acc@0.1"] == pytest.approx(0.5)  # mean over the two findings


def test_merge_and_settings():
    a, b = IoBBAccumulator((0.5,)), IoBBAccumulator((0.5,))
    a.add("Nodule", _map_with_blob((0, 0, 10, 10)), np.array([[0, 0, 10, 10]]))
    b.merge(a.best_by_finding())
    assert b.summarize() == a.summarize()
    assert WANG_MAP_THRESHOLD == pytest.approx(0.4118, abs=1e-4)
    with pytest.raises(ValueError, match="IOBB_THRESHOLDS"):
        IoBBAccumulator((1.5,))
    with pytest.raises(ValueError, match="IOBB_MAP_THRESHOLD"):
        IoBBAccumulator(map_threshold=2.0)
