"""modeling/meta_arch/progression.py: ProgressionDetector's losses, its refusal of single-image inputs, and a
train + evaluate run through CXRTrainer."""
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from tiny_cxr_codet import progression_cfg

from cxr_codet.data.build import build_cxr_train_loader
from cxr_codet.data.mapper import CXRDatasetMapper
from cxr_codet.engine.trainer import CXRTrainer
from cxr_codet.evaluation import read_eval_results
from cxr_codet.evaluation.progression_evaluation import (
    PREDICTIONS_FILE,
)


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
