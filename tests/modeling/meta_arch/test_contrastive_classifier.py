"""The image-report contrastive classifier: metrics on hand-computed cases, the classification evaluator, the two
training stages, which text the head sees (and that "report" leaks the label while "retrieved" cannot), Grad-CAM
outputs, the ViT image encoder and its weight loader, and a train + evaluate run through CXRTrainer."""
import numpy as np
import pytest
import torch
from conftest import TINY_SIZE, make_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from cxr_codet.data.build import build_cxr_test_loader, build_cxr_train_loader
from cxr_codet.data.classes import VINDR_CXR_CLASSES
from cxr_codet.engine.trainer import CXRTrainer
from cxr_codet.evaluation import read_eval_results
from cxr_codet.evaluation.build import build_configured_evaluator
from cxr_codet.evaluation.classification_evaluation import (
    OVERLAY_FOLDER,
    ClassificationEvaluator,
    binary_metrics,
    classification_results,
)
from cxr_codet.modeling.backbone import ViTBackbone, load_vit_weights
from cxr_codet.modeling.meta_arch import ABNORMAL, ContrastiveClassifier
from cxr_codet.modeling.meta_arch.contrastive_classifier import eval_mode

CONFIG = "configs/phantom/contrastive_classifier_R18_phantom.yaml"


PRETRAIN_ITERS = 2


def classifier_cfg(*overrides):
    """The phantom classifier config shrunk for tests, with narrow layers and a short first stage."""
    return make_cfg(
        CONFIG, "MODEL.IMAGE_CLASSIFIER.EMBED_DIM", 16, "MODEL.IMAGE_CLASSIFIER.HIDDEN_DIMS", [16, 16],
        "MODEL.IMAGE_CLASSIFIER.PRETRAIN_ITERS", PRETRAIN_ITERS, *overrides,
    )


TINY_VIT = ("MODEL.BACKBONE.NAME", "build_vit_backbone", "MODEL.VIT.ARCH", "vit_tiny_patch16_224",
            "MODEL.VIT.EMBED_DIM", 32, "MODEL.VIT.DEPTH", 2, "MODEL.VIT.NUM_HEADS", 2, "MODEL.VIT.IMG_SIZE", TINY_SIZE,
            "MODEL.IMAGE_CLASSIFIER.IN_FEATURE", "vit", "MODEL.IMAGE_CLASSIFIER.GRADCAM.TARGET_LAYER",
            "backbone.vit.blocks.1")


@pytest.fixture(scope="module")
def train_batch():
    return next(iter(build_cxr_train_loader(classifier_cfg())))


@pytest.fixture(scope="module")
def test_inputs():
    return next(iter(build_cxr_test_loader(classifier_cfg(), "cxr_phantom_tiny_val")))


def test_binary_metrics_match_hand_counts():
    m = binary_metrics([1, 1, 0, 0, 1], [0.9, 0.4, 0.6, 0.1, 0.8], threshold=0.5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 1)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision_pos"] == pytest.approx(2 / 3) and m["recall_pos"] == pytest.approx(2 / 3)
    assert m["f1_pos"] == pytest.approx(2 / 3)
    assert m["precision_neg"] == pytest.approx(1 / 2) and m["recall_neg"] == pytest.approx(1 / 2)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of the 6 positive-negative pairs are ordered correctly
    assert binary_metrics([1, 1], [0.2, 0.9])["roc_auc"] is None
    assert binary_metrics([0, 0], [0.2, 0.9])["precision_pos"] == 0.0
    with pytest.raises(ValueError, match="equally long"):
        binary_metrics([1, 0], [0.5])


def test_classification_results_layout():
    truth = {ABNORMAL: [True, True, False, False], "Nodule/Mass": [True, False, False, False],
             "Cardiomegaly": [False, False, False, False]}
    scores = {ABNORMAL: [0.9, 0.3, 0.2, 0.6], "Nodule/Mass": [0.8, 0.1, 0.3, 0.2], "Cardiomegaly": [0.1, 0.7, 0.2, 0.1]}
    results = classification_results(truth, scores)
    assert results["accuracy"] == pytest.approx(50.0)
    assert results["ROC_AUC"] == pytest.approx(75.0)
    assert (results["confusion-abnormal-abnormal"], results["confusion-abnormal-normal"]) == (1, 1)
    assert (results["confusion-normal-abnormal"], results["confusion-normal-normal"]) == (1, 1)
    assert results["precision-abnormal"] == pytest.approx(50.0) and results["recall-normal"] == pytest.approx(50.0)
    assert results["num_images"] == 4 and results["num_abnormal"] == 2
    assert results["ROC_AUC-Nodule/Mass"] == pytest.approx(100.0) and results["F1-Nodule/Mass"] == pytest.approx(100.0)
    assert "ROC_AUC-Cardiomegaly" not in results  # no positive image: undefined, left out
    assert results["FP-Cardiomegaly"] == 1 and results["num_positive-Cardiomegaly"] == 0
    assert results["mROC_AUC"] == pytest.approx(100.0)
    assert results["mF1"] == pytest.approx(50.0)


def test_evaluator_reads_ground_truth_from_the_dataset(tmp_path):
    records = DatasetCatalog.get("cxr_phantom_tiny_val")
    evaluator = ClassificationEvaluator("cxr_phantom_tiny_val", str(tmp_path), distributed=False)
    labels = [ABNORMAL, "Nodule/Mass", "Edema"]  # "Edema" is not a VinDr-CXR finding: not scored
    for record in records:
        nodule = VINDR_CXR_CLASSES.index("Nodule/Mass") in record["image_labels"]
        scores = torch.tensor([1.0 if record["image_labels"] else 0.0, 1.0 if nodule else 0.0, 0.5])
        evaluator.process([{"image_id": record["image_id"]}], [{"classification": {"labels": labels, "scores": scores}}])
    results = evaluator.evaluate()["classification"]
    assert results["accuracy"] == 100.0 and results["accuracy-Nodule/Mass"] == 100.0
    assert results["num_abnormal"] == sum(bool(r["image_labels"]) for r in records)
    assert not any(key.endswith("Edema") for key in results)
    with pytest.raises(ValueError, match="no 'classification' entry"):
        evaluator.process([{"image_id": records[0]["image_id"]}], [{"instances": None}])


def test_pretraining_then_head_with_frozen_encoders(train_batch):
    torch.manual_seed(0)
    model = build_model(classifier_cfg())
    assert isinstance(model, ContrastiveClassifier)
    model.train()
    with EventStorage(PRETRAIN_ITERS - 1):
        losses = model(train_batch)
    assert set(losses) == {"loss_contrastive"} and torch.isfinite(losses["loss_contrastive"])
    losses["loss_contrastive"].backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    assert model.head[0].weight.grad is None
    model.zero_grad(set_to_none=True)
    with EventStorage(PRETRAIN_ITERS):
        losses = model(train_batch)
    assert set(losses) == {"loss_classifier"}
    losses["loss_classifier"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.text_projection.parameters())
    assert model.head[0].weight.grad.abs().sum() > 0
    assert model.training and model.backbone.training  # the encoders' eval mode is restored
    projection, statistics = model.image_projection
    with torch.no_grad(), eval_mode(model.backbone):  # re-estimated on the frozen encoder: this batch's moments
        linear = projection(model.pooled_features(model.preprocess_image(train_batch)))
    torch.testing.assert_close(statistics.running_mean, linear.mean(dim=0))
    assert statistics.num_batches_tracked == 1
    assert not any(name.startswith("text.") for name in model.state_dict())


def test_training_outside_an_event_storage_is_a_clear_error(train_batch):
    model = build_model(classifier_cfg())
    model.train()
    with pytest.raises(RuntimeError, match="EventStorage"):
        model(train_batch)


@pytest.mark.parametrize("head_text, leaks", [("report", True), ("retrieved", False), ("none", False)])
def test_only_the_report_head_text_sees_the_label(test_inputs, head_text, leaks):
    torch.manual_seed(0)
    model = build_model(classifier_cfg("MODEL.IMAGE_CLASSIFIER.HEAD_TEXT", head_text)).eval()
    record = dict(test_inputs[0])
    other = dict(record, image_labels=[] if record["image_labels"] else [0])  # same pixels, other findings
    with torch.no_grad():
        scores, other_scores = (model([x])[0]["classification"]["scores"] for x in (record, other))
    assert model.head[0].in_features == 16 * (1 if head_text == "none" else 2)
    assert (not torch.allclose(scores, other_scores)) == leaks


def test_inference_returns_probabilities_and_gradcam_maps(test_inputs):
    torch.manual_seed(0)
    model = build_model(classifier_cfg()).eval()
    with torch.no_grad():
        [output] = model(test_inputs[:1])
    record = test_inputs[0]
    assert output["classification"]["labels"] == [ABNORMAL, *VINDR_CXR_CLASSES]
    scores = output["classification"]["scores"]
    assert scores.shape == (15,) and ((scores >= 0) & (scores <= 1)).all()
    heatmaps = output["gradcam"]["heatmaps"]
    assert heatmaps.shape == (15, record["height"], record["width"])
    assert heatmaps.min() >= -1 and heatmaps.max() <= 1
    assert output["localization"]["findings"] == list(VINDR_CXR_CLASSES)
    torch.testing.assert_close(output["localization"]["heatmaps"], heatmaps[1:])
    no_gradcam = build_model(classifier_cfg("MODEL.IMAGE_CLASSIFIER.GRADCAM.ENABLED", False)).eval()
    assert set(no_gradcam(test_inputs[:1])[0]) == {"classification"}


def test_vit_image_encoder_gives_gradcam_maps_on_its_patch_grid(test_inputs):
    torch.manual_seed(0)
    model = build_model(classifier_cfg(*TINY_VIT)).eval()
    assert isinstance(model.backbone, ViTBackbone)
    with torch.no_grad():
        [output] = model(test_inputs[:1])
    heatmaps = output["gradcam"]["heatmaps"]
    assert heatmaps.shape == (15, test_inputs[0]["height"], test_inputs[0]["width"])
    assert torch.isfinite(heatmaps).all() and (heatmaps.amax(dim=(1, 2)) > heatmaps.amin(dim=(1, 2))).any()


def test_vit_weights_load_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    source = ViTBackbone("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32)
    state = {"module." + k: v for k, v in source.vit.state_dict().items()}
    state["head.weight"] = torch.zeros(10, 32)  # a classifier head the backbone does not have
    torch.save({"model": state}, tmp_path / "vit.pth")
    target = ViTBackbone("vit_tiny_patch16_224", weights=str(tmp_path / "vit.pth"), embed_dim=32, depth=2,
                         num_heads=2, img_size=64)
    torch.testing.assert_close(target.vit.blocks[1].mlp.fc1.weight, source.vit.blocks[1].mlp.fc1.weight)
    assert target.vit.pos_embed.shape == (1, 1 + 16, 32)  # resampled from the 2 x 2 grid to 4 x 4
    image = torch.randn(1, 3, 48, 80)
    assert target(image)["vit"].shape == (1, 32, 3, 5)
    deeper = ViTBackbone("vit_tiny_patch16_224", embed_dim=32, depth=3, num_heads=2, img_size=32)
    torch.save(deeper.vit.state_dict(), tmp_path / "deeper.pth")
    with pytest.raises(ValueError, match="unexpected keys.*blocks.2"):
        load_vit_weights(source.vit, str(tmp_path / "deeper.pth"))
    (tmp_path / "broken.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth: cannot read ViT weights"):
        load_vit_weights(source.vit, str(tmp_path / "broken.pth"))


@pytest.mark.parametrize("override, message", [
    (("MODEL.IMAGE_CLASSIFIER.HEAD_TEXT", "caption"), "HEAD_TEXT must be one of"),
    (("MODEL.IMAGE_CLASSIFIER.IN_FEATURE", "res3"), "IN_FEATURE 'res3' is not a backbone output"),
    (("MODEL.IMAGE_CLASSIFIER.GRADCAM.TARGET_LAYER", "backbone.res9"), r"modules under 'backbone'.*'backbone.res4'"),
])
def test_bad_settings_are_named(override, message):
    with pytest.raises((ValueError, KeyError), match=message):
        build_model(classifier_cfg(*override))


@pytest.mark.slow
def test_train_and_evaluate_through_the_trainer(tmp_path):
    schedule = ("SOLVER.MAX_ITER", PRETRAIN_ITERS + 1, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", (),
                "OUTPUT_DIR", str(tmp_path))
    trainer = CXRTrainer(classifier_cfg(*schedule, "DATASETS.TEST", ()))
    trainer.train()  # two contrastive iterations, then one of the head
    cfg = classifier_cfg(*schedule, "TEST.CLASSIFICATION.NUM_OVERLAYS", 2,
                         "TEST.EVALUATORS_BY_DATASET", [["cxr_phantom_tiny_val", "classification"]])
    evaluator = build_configured_evaluator(cfg, "cxr_phantom_tiny_val", str(tmp_path / "inference"))
    assert isinstance(evaluator, ClassificationEvaluator)
    CXRTrainer.test(cfg, trainer.model, evaluators=[evaluator])
    results = read_eval_results(str(tmp_path / "eval_results.json"))["cxr_phantom_tiny_val"]["classification"]
    records = DatasetCatalog.get("cxr_phantom_tiny_val")
    assert results["num_images"] == len(records)
    assert results["num_abnormal"] == sum(bool(r["image_labels"]) for r in records)
    assert all(np.isfinite(results[key]) for key in ("accuracy", "precision-abnormal", "F1-normal"))
    overlays = sorted(p.name for p in (tmp_path / "inference" / OVERLAY_FOLDER).glob("*.png"))
    assert len({name.split("_")[0] for name in overlays}) == 2 and any(name.endswith("_abnormal.png") for name in overlays)
