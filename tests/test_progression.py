"""Progression detection: Poincare-ball operations against closed forms, the Euclidean ablation, the per-region
metrics on hand-counted cases, the phantom pair generator, the image-pair mapper, and ProgressionDetector on the
tiny phantom pairs (losses, inference, the data layer's pair mapping, a train + evaluate run through CXRTrainer)."""
import math

import numpy as np
import pytest
import torch
from conftest import TINY_SIZE, tiny_phantom_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from cxr_codet.data.build import build_cxr_test_loader, build_cxr_train_loader, build_mapper
from cxr_codet.data.datasets.imagenome import PROGRESSION_LABELS
from cxr_codet.data.datasets.phantom_pairs import REGION_NAMES, render_phantom_pair
from cxr_codet.data.image_pairs import ImagePairMapper
from cxr_codet.data.mapper import CXRDatasetMapper
from cxr_codet.engine.trainer import CXRTrainer
from cxr_codet.evaluation import read_eval_results
from cxr_codet.evaluation.progression_evaluation import (
    PREDICTIONS_FILE,
    ProgressionEvaluator,
    macro_f1,
    progression_metrics,
)
from cxr_codet.modeling.hyperbolic import (
    EuclideanSpace,
    PoincareBall,
    build_geometry,
    expmap0,
    logmap0,
    mobius_add,
    poincare_distance,
)

CONFIG = "configs/phantom/progression_hyperbolic_R18_phantom_pairs.yaml"


def progression_cfg(*overrides):
    """The phantom progression config on the tiny pair splits, with small widths."""
    return tiny_phantom_cfg(
        CONFIG, "MODEL.PROGRESSION.HIDDEN_DIM", 32, "MODEL.PROGRESSION.EMBED_DIM", 16, *overrides,
        splits=("cxr_phantom_pairs_tiny_train", "cxr_phantom_pairs_tiny_val"),
    )


# -- Poincare ball ---------------------------------------------------------------------------------------------

def arcosh_distance(x, y, c):
    """The Poincare distance in its arcosh form, computed independently of mobius_add."""
    num = 2 * c * (x - y).pow(2).sum(-1)
    den = (1 - c * x.pow(2).sum(-1)) * (1 - c * y.pow(2).sum(-1))
    return torch.acosh(1 + num / den) / math.sqrt(c)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_poincare_maps_and_distance_match_closed_forms(c):
    torch.manual_seed(0)
    v = torch.randn(6, 5, dtype=torch.float64) * 0.6
    w = torch.randn(6, 5, dtype=torch.float64) * 0.6
    x, y = expmap0(v, c), expmap0(w, c)
    assert (x.norm(dim=-1) < 1 / math.sqrt(c)).all()
    torch.testing.assert_close(logmap0(x, c), v)
    torch.testing.assert_close(poincare_distance(torch.zeros_like(v), x, c), 2 * v.norm(dim=-1))
    torch.testing.assert_close(poincare_distance(x, y, c), arcosh_distance(x, y, c))
    torch.testing.assert_close(poincare_distance(x, y, c), poincare_distance(y, x, c))
    assert poincare_distance(x, x, c).abs().max() < 1e-6


def test_mobius_addition_identities_and_the_ball_boundary():
    torch.manual_seed(1)
    x = expmap0(torch.randn(4, 3, dtype=torch.float64))
    torch.testing.assert_close(mobius_add(torch.zeros_like(x), x), x)
    torch.testing.assert_close(mobius_add(x, torch.zeros_like(x)), x)
    assert mobius_add(-x, x).abs().max() < 1e-12
    far = expmap0(torch.full((1, 3), 1e4))
    assert far.norm() < 1.0 and torch.isfinite(poincare_distance(far, x)).all()
    with pytest.raises(ValueError, match="positive curvature"):
        expmap0(x, c=0.0)


def test_small_curvature_approaches_twice_the_euclidean_distance():
    x = torch.tensor([[0.01, 0.02]], dtype=torch.float64)
    y = torch.tensor([[-0.03, 0.01]], dtype=torch.float64)
    assert poincare_distance(x, y, 1e-6).item() == pytest.approx(2 * (x - y).norm().item(), rel=1e-4)


def test_geometries_change_and_distance():
    ball, flat = PoincareBall(curvature=1.0, clip_radius=2.0), EuclideanSpace(clip_radius=2.0)
    prior, current = torch.tensor([[0.3, 0.0]]), torch.tensor([[0.0, 0.4]])
    torch.testing.assert_close(flat.change(prior, current), current - prior)
    torch.testing.assert_close(flat.distance(prior, current), torch.tensor([0.5]))
    torch.testing.assert_close(ball.distance(ball.change(prior, current), torch.zeros(1, 2)), ball.distance(prior, current))
    assert ball.to_manifold(torch.tensor([[30.0, 40.0]])).norm() == pytest.approx(math.tanh(2.0), rel=1e-5)
    assert flat.to_manifold(torch.tensor([[30.0, 40.0]])).norm() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="GEOMETRY must be one of"):
        build_geometry("spherical")


# -- metrics ---------------------------------------------------------------------------------------------------

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


# -- data ------------------------------------------------------------------------------------------------------

def test_phantom_pairs_are_deterministic_and_lesions_match_their_zones():
    first, again = render_phantom_pair(96, 5, 3), render_phantom_pair(96, 5, 3)
    np.testing.assert_array_equal(first.current, again.current)
    labels = []
    for index in range(30):
        pair = render_phantom_pair(96, 5, index)
        assert set(pair.prior_boxes) == set(REGION_NAMES) and pair.prior.shape == (96, 96)
        assert len({lesion.region for lesion in pair.lesions}) == len(pair.lesions)
        for lesion in pair.lesions:
            x, y = lesion.centre
            box = pair.prior_boxes[lesion.region]
            # the prior image is shifted by at most MAX_SHIFT of the side; the zone box moves with it
            assert box[0] - 4 <= x <= box[2] + 4 and box[1] - 4 <= y <= box[3] + 4
            sizes = {"worsened": (lesion.prior, lesion.current), "improved": (lesion.current, lesion.prior)}
            if lesion.comparison in sizes:
                smaller, larger = sizes[lesion.comparison]
                assert larger == (1.0, 1.0) and (smaller is None or smaller[0] < 0.7)
            else:
                assert lesion.prior == lesion.current
            labels.append(lesion.comparison)
    assert set(labels) == set(PROGRESSION_LABELS)


def test_registered_phantom_pairs_load_through_the_comparison_loader():
    records = DatasetCatalog.get("cxr_phantom_pairs_tiny_train")
    assert len(records) == 12
    assert MetadataCatalog.get("cxr_phantom_pairs_tiny_train").evaluator_type == "progression"
    for record in records:
        assert record["file_name"].endswith("_current.png") and record["prior_file_name"].endswith("_prior.png")
        for region in record["regions"]:
            assert region["name"] in REGION_NAMES
            assert PROGRESSION_LABELS[region["label"]] == region["comparison"]
            assert region["name"] in region["description"]


def test_pair_mapper_resizes_both_images_and_flips_them_together(tmp_path):
    record = DatasetCatalog.get("cxr_phantom_pairs_tiny_train")[0]
    cfg = progression_cfg("INPUT.MIN_SIZE_TEST", 32, "INPUT.MAX_SIZE_TEST", 32)
    mapped = ImagePairMapper(cfg, is_train=False)(record)
    assert mapped["image"].shape == mapped["prior_image"].shape == (3, 32, 32)
    assert mapped["image"].dtype == torch.uint8
    torch.testing.assert_close(mapped["current_boxes"], torch.tensor([r["current_box"] for r in record["regions"]]) / 2)
    torch.testing.assert_close(mapped["prior_boxes"], torch.tensor([r["prior_box"] for r in record["regions"]]) / 2)
    assert mapped["progression_labels"].tolist() == [r["label"] for r in record["regions"]]
    train_mapper = ImagePairMapper(progression_cfg("INPUT.RANDOM_FLIP", "horizontal"), is_train=True)
    for seed in range(4):
        np.random.seed(seed)
        flipped = np.random.rand() < 0.5
        np.random.seed(seed)
        out = train_mapper(record)
        for key, box_key in (("current_boxes", "current_box"), ("prior_boxes", "prior_box")):
            original = torch.tensor([r[box_key] for r in record["regions"]], dtype=torch.float32)
            expected = torch.stack([TINY_SIZE - original[:, 2], original[:, 1], TINY_SIZE - original[:, 0],
                                    original[:, 3]], dim=1) if flipped else original
            torch.testing.assert_close(out[key], expected)


def test_pair_mapper_rejects_records_without_a_prior_and_wrong_sizes():
    cfg = progression_cfg()
    record = DatasetCatalog.get("cxr_phantom_pairs_tiny_train")[0]
    with pytest.raises(KeyError, match="prior_file_name"):
        ImagePairMapper(cfg, is_train=False)({"file_name": record["file_name"], "image_id": 1})
    with pytest.raises(ValueError, match="says 65 x 64"):
        ImagePairMapper(cfg, is_train=False)(dict(record, prior_height=65))


# -- model -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_batch():
    return next(iter(build_cxr_train_loader(progression_cfg())))


@pytest.mark.parametrize("geometry", ["poincare", "euclidean"])
def test_training_losses_are_finite_and_reach_every_part(train_batch, geometry):
    torch.manual_seed(0)
    model = build_model(progression_cfg("MODEL.PROGRESSION.GEOMETRY", geometry))
    model.train()
    losses = model(train_batch)
    assert set(losses) == {"loss_progression", "loss_alignment", "loss_text"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for module in (model.backbone, model.region_head, model.classifier, model.text_projection):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert not any(name.startswith("text.") for name in model.state_dict())


def test_the_model_refuses_single_image_inputs_in_training_and_at_inference():
    model = build_model(progression_cfg())
    single = CXRDatasetMapper(progression_cfg(), is_train=False)(DatasetCatalog.get("cxr_phantom_pairs_tiny_val")[0])
    for training in (True, False):
        model.train(training)
        with pytest.raises(ValueError, match="has no 'prior_image': use a comparison dataset .*metadata mapper "
                                             "'image_pair'"):
            model([single])


def test_the_data_layer_maps_pair_datasets_as_pairs_for_training_and_test():
    torch.manual_seed(0)
    cfg = progression_cfg()
    assert MetadataCatalog.get("cxr_phantom_pairs_tiny_val").mapper == "image_pair"
    assert isinstance(build_mapper(cfg, ["cxr_phantom_pairs_tiny_train"], is_train=True), ImagePairMapper)
    model = build_model(cfg).eval()
    loaded = next(iter(build_cxr_test_loader(cfg, "cxr_phantom_pairs_tiny_val")))
    assert "prior_image" in loaded[0] and "prior_boxes" in loaded[0]
    record = DatasetCatalog.get("cxr_phantom_pairs_tiny_val")[0]
    with torch.no_grad():
        from_loader = model(loaded)[0]["progression"]
        from_pair = model([ImagePairMapper(cfg, is_train=False)(record)])[0]["progression"]
    assert from_loader["regions"] == [r["name"] for r in record["regions"]]
    assert from_loader["labels"] == list(PROGRESSION_LABELS)
    assert from_loader["scores"].shape == (len(record["regions"]), 3)
    torch.testing.assert_close(from_loader["scores"].sum(dim=1), torch.ones(len(record["regions"])))
    torch.testing.assert_close(from_loader["scores"], from_pair["scores"])
    batch = next(iter(build_cxr_train_loader(cfg)))
    assert all("prior_image" in item and "progression_labels" in item for item in batch)


@pytest.mark.slow
def test_train_and_evaluate_through_the_trainer(tmp_path):
    cfg = progression_cfg("SOLVER.MAX_ITER", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", (), "OUTPUT_DIR", str(tmp_path))
    trainer = CXRTrainer(cfg)
    trainer.train()  # ends with CXRTrainer.test: the pair dataset's evaluator_type picks the progression evaluator
    results = read_eval_results(str(tmp_path / "eval_results.json"))["cxr_phantom_pairs_tiny_val"]["progression"]
    expected = sum(len(r["regions"]) for r in DatasetCatalog.get("cxr_phantom_pairs_tiny_val"))
    assert results["num_samples"] == expected
    assert 0.0 <= results["accuracy"] <= 100.0 and 0.0 <= results["macro_F1"] <= 100.0
    lines = (tmp_path / "inference" / "cxr_phantom_pairs_tiny_val" / PREDICTIONS_FILE).read_text().splitlines()
    assert len(lines) == expected + 1 and lines[0].startswith("image_id,region,truth,prediction")
