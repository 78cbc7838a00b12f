"""evaluation/progression_evaluation.py: per-region metrics on hand-counted cases, and the evaluator's checks."""
import numpy as np
import pytest
import torch

from cxr_codet.data.datasets.imagenome import PROGRESSION_LABELS
from cxr_codet.evaluation.progression_evaluation import (
    PREDICTIONS_FILE,
    ProgressionEvaluator,
    macro_f1,
    progression_metrics,
)


def test_progression_metrics_average_over_regions():
    regions = ["a", "a", "a", "a", "b", "b"]
    truth = [0, 1, 2, 2, 0, 1]
    predicted = [0, 1, 2, 0, 1, 1]
    results = progression_metrics(regions, truth, predicted)
    # region a: accuracy 3/4; F1 improved 2/3 (tp 1, predicted 2, present 1), worsened 1, no change 2/3.
    assert results["accuracy-a"] == pytest.approx(75.0)
    assert results["macro_F1-a"] == pytest.approx(100 * (2 / 3 + 1 + 2 / 3) / 3)
    # region b: accuracy 1/2; F1 improved 0, worsened 2/3.
    assert results["accuracy-b"] == pytest.approx(50.0)
    assert results["macro_F1-b"] == pytest.approx(100 * (0 + 2 / 3) / 2)
    assert results["accuracy"] == pytest.approx((75.0 + 50.0) / 2)
    assert results["macro_F1"] == pytest.approx((results["macro_F1-a"] + results["macro_F1-b"]) / 2)
    assert results["pooled_accuracy"] == pytest.approx(100 * 4 / 6)
    assert results["confusion-no change-improved"] == 1 and results["confusion-improved-worsened"] == 1
    assert sum(results[f"confusion-{t}-{p}"] for t in PROGRESSION_LABELS for p in PROGRESSION_LABELS) == 6
    assert results["num_samples-a"] == 4 and results["num_regions"] == 2
    assert macro_f1(np.array([2, 2]), np.array([2, 2])) == 1.0


def test_progression_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="equally many"):
        progression_metrics(["a"], [0, 1], [0])
    with pytest.raises(ValueError, match="outside 0..2"):
        progression_metrics(["a"], [3], [0])


def test_evaluator_checks_that_outputs_match_the_inputs_regions(tmp_path):
    evaluator = ProgressionEvaluator("cxr_phantom_pairs_tiny_val", str(tmp_path), distributed=False)
    regions = [{"name": "left upper lung zone", "label": 1}, {"name": "right mid lung zone", "label": 2}]
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    output = {"progression": {"regions": ["left upper lung zone", "right mid lung zone"],
                              "labels": list(PROGRESSION_LABELS), "scores": scores}}
    evaluator.process([{"image_id": "b|a", "regions": regions}], [output])
    results = evaluator.evaluate()["progression"]
    assert results["pooled_accuracy"] == 50.0 and results["accuracy"] == 50.0  # one region right, one wrong
    assert (tmp_path / PREDICTIONS_FILE).read_text().splitlines()[2].startswith("b|a,right mid lung zone,no change,improved")
    swapped = dict(output["progression"], regions=list(reversed(output["progression"]["regions"])))
    with pytest.raises(ValueError, match="the model scored regions"):
        evaluator.process([{"image_id": "b|a", "regions": regions}], [{"progression": swapped}])
