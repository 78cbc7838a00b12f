"""modeling/meta_arch/afloc.py: AFLoc's registration, reports, losses, prompt maps and boxes, and an evaluation
on the real NIH subset."""
import numpy as np
import pytest
import torch
from conftest import TINY_SIZE, make_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from torch.nn import functional as F

from cxr_codet.data.build import build_cxr_test_loader, build_cxr_train_loader
from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES, VINDR_CXR_CLASSES
from cxr_codet.data.descriptions import compose_report
from cxr_codet.engine.trainer import CXRTrainer
from cxr_codet.evaluation import read_eval_results
from cxr_codet.evaluation.build import build_configured_evaluator
from cxr_codet.modeling.meta_arch import AFLoc
from cxr_codet.modeling.meta_arch.image_text import positives_by_key

CONFIG = "configs/phantom/afloc_R18_phantom.yaml"


def afloc_cfg(*overrides):
    """The phantom AFLoc config shrunk for tests, with a narrow joint space; short prompts and AFLoc's blur
    of 1.5 cells, which the map tests spell out."""
    return make_cfg(
        CONFIG, "MODEL.AFLOC.EMBED_DIM", 32, "MODEL.PROMPTS.GRANULARITY", "unelaborate",
        "MODEL.LOCALIZATION_MAPS.BLUR_SIGMA", 1.5, *overrides,
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(afloc_cfg())


@pytest.fixture(scope="module")
def train_batch():
    cfg = afloc_cfg()
    return next(iter(build_cxr_train_loader(cfg)))


def test_positives_by_key_pairs_equal_findings():
    keys = [("findings", (1, 3)), ("findings", ()), ("findings", (1, 3))]
    assert positives_by_key(keys).tolist() == [[True, False, True], [False, True, False], [True, False, True]]


def test_model_is_registered_with_its_taps_and_keeps_the_text_encoder_out_of_the_checkpoint(model):
    assert isinstance(model, AFLoc)
    assert model.word_projection[0].in_channels == 128 and model.sentence_projection[0].in_channels == 256
    assert model.global_projection[0].in_features == 512 and model.text_projection.out_features == 32
    assert isinstance(model.global_projection[1], torch.nn.BatchNorm1d)  # IMAGE_PROJECTION_NORM "BN"
    assert not any(key.startswith("text.") for key in model.state_dict())  # the encoder is no submodule
    assert {"text_mean", "text_std"} <= set(model.state_dict())  # the fixed word statistics are saved
    assert all("encoder" not in name for name, _ in model.named_parameters())
    assert model.text.encoder.dim == 384  # all-MiniLM-L6-v2, frozen
    assert not any(p.requires_grad for p in model.text.encoder.parameters())


def test_word_statistics_spread_the_frozen_report_features_apart(model):
    reports = [compose_report([name], "unelaborate") for name in VINDR_CXR_CLASSES[:6]]
    raw = F.normalize(model.text.levels(reports).report, dim=-1)
    standardised = F.normalize((model.text.levels(reports).report - model.text_mean) / model.text_std, dim=-1)
    off_diagonal = ~torch.eye(6, dtype=torch.bool)
    assert (raw @ raw.t())[off_diagonal].mean() > 0.5  # one common direction dominates the raw features
    assert (standardised @ standardised.t())[off_diagonal].mean() < (raw @ raw.t())[off_diagonal].mean() - 0.2


def test_missing_backbone_tap_is_a_clear_error():
    cfg = afloc_cfg("MODEL.RESNETS.OUT_FEATURES", ["res3", "res4"])
    with pytest.raises(ValueError, match=r"AFLoc reads backbone outputs \{'global': 'res5'\}"):
        build_model(cfg)


def test_training_reports_are_composed_from_findings(model):
    report, key = model.training_report({"image_labels": [10, 3]})
    assert key == ("findings", (3, 10))
    assert report in {compose_report(["Cardiomegaly", "Pleural effusion"], g) for g in ("elaborate", "unelaborate")}
    assert model.training_report({"report": "FINDINGS: Small nodule.", "image_labels": [8]}) == (
        "FINDINGS: Small nodule.", ("report", "FINDINGS: Small nodule."))
    with pytest.raises(ValueError, match="'a.png' has neither 'image_labels', 'annotations' nor 'instances'"):
        model.training_report({"file_name": "a.png"})
    with pytest.raises(ValueError, match=r"finding ids \[20\] outside 0..13"):
        model.training_report({"file_name": "a.png", "image_labels": [20]})


def test_training_gives_three_finite_losses_with_gradients(model, train_batch):
    model.train()
    losses = model(train_batch)
    assert set(losses) == {"loss_afloc_word", "loss_afloc_sentence", "loss_afloc_report"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()
    for module in (model.word_projection, model.sentence_projection, model.global_projection,
                   model.text_projection, model.backbone.stem):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    with pytest.raises(ValueError, match="at least 2 images per batch"):
        model(train_batch[:1])


def test_inference_returns_prompt_maps_and_boxes(model):
    model.eval()
    cfg = afloc_cfg()
    record = next(iter(build_cxr_test_loader(cfg, "cxr_phantom_tiny_val")))
    [output] = model(record)
    localization = output["localization"]
    assert localization["findings"] == list(VINDR_CXR_CLASSES)
    assert localization["prompts"][10] == "Findings suggesting pleural effusion."
    heatmaps = localization["heatmaps"]
    assert heatmaps.shape == (14, 128, 128)  # the original image size, not the 64 px input
    assert heatmaps.min() == -1.0 and heatmaps.max() == 1.0
    instances = output["instances"]
    assert instances.image_size == (128, 128) and len(instances) > 0
    assert instances.pred_classes.max() < 14 and torch.isfinite(instances.scores).all()
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 2] > boxes[:, 0]).all() and boxes.min() >= 0 and boxes.max() <= 128


def test_maps_follow_the_prompt_pipeline(model):
    """A map is the report vector dotted with the deep map, blurred, upsampled, normalised to [-1, 1]."""
    model.eval()
    image = torch.randint(0, 255, (3, TINY_SIZE, TINY_SIZE), dtype=torch.uint8)
    [output] = model([{"image": image, "height": TINY_SIZE, "width": TINY_SIZE}])
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        grid = model.grid_maps(model.backbone(images.tensor), [output["localization"]["prompts"][0]])[0, 0]
    from scipy import ndimage
    blurred = torch.from_numpy(ndimage.gaussian_filter(grid.numpy(), 1.5, mode="reflect"))
    upsampled = F.interpolate(blurred[None, None], size=(TINY_SIZE, TINY_SIZE), mode="bilinear")[0, 0]
    expected = 2 * (upsampled - upsampled.min()) / (upsampled.max() - upsampled.min()) - 1
    torch.testing.assert_close(output["localization"]["heatmaps"][0], expected, atol=1e-4, rtol=0)


def test_test_vocabulary_phrases_and_nan_border(model):
    model.eval()
    image = torch.randint(0, 255, (3, TINY_SIZE, TINY_SIZE), dtype=torch.uint8)
    model.set_test_vocabulary(list(NIH_CXR14_BBOX_CLASSES))
    try:
        [output] = model([{"image": image, "height": 100, "width": 100}])
        assert output["localization"]["findings"] == list(NIH_CXR14_BBOX_CLASSES)
        assert output["localization"]["heatmaps"].shape == (8, 100, 100)
    finally:
        model.reset_test_vocabulary()
    assert model.vocabulary == list(VINDR_CXR_CLASSES)
    [output] = model([{"image": image, "phrase": "Small nodule in the right upper zone.", "category_name": "Nodule/Mass"}])
    assert output["localization"]["prompts"] == ["Small nodule in the right upper zone."]
    assert set(output["instances"].pred_classes.tolist()) <= {8}
    with pytest.raises(KeyError, match="no description for finding 'Unicorn'"):
        model.set_test_vocabulary(["Unicorn"])
    border_model_settings = model.map_settings
    model.map_settings = type(border_model_settings)(border_fraction=0.125)
    try:
        [output] = model([{"image": image}])
        heatmap = output["localization"]["heatmaps"][0]
        assert torch.isnan(heatmap[:8]).all() and torch.isnan(heatmap[:, -8:]).all()
        assert torch.isfinite(heatmap[8:-8, 8:-8]).all()
    finally:
        model.map_settings = border_model_settings


def test_bimodal_bias_merging_option_gives_finite_maps(model):
    model.eval()
    settings = model.map_settings
    model.map_settings = type(settings)(bbm_enabled=True, bbm_mode="linear")
    try:
        [output] = model([{"image": torch.randint(0, 255, (3, TINY_SIZE, TINY_SIZE), dtype=torch.uint8)}])
    finally:
        model.map_settings = settings
    heatmaps = output["localization"]["heatmaps"]
    assert heatmaps.shape == (14, TINY_SIZE, TINY_SIZE) and torch.isfinite(heatmaps).all()


@pytest.mark.slow
def test_train_and_evaluate_through_the_trainer(tmp_path):
    cfg = afloc_cfg("SOLVER.MAX_ITER", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", (), "OUTPUT_DIR", str(tmp_path),
                    "TEST.LOCALIZATION.BOOTSTRAP_SAMPLES", 20, "TEST.LOCALIZATION.NUM_OVERLAYS", 2,
                    "TEST.EVALUATORS_BY_DATASET", [["cxr_phantom_tiny_val", "localization"]])
    trainer = CXRTrainer(cfg)
    trainer.train()
    evaluator = build_configured_evaluator(cfg, "cxr_phantom_tiny_val", str(tmp_path / "inference"))
    CXRTrainer.test(cfg, trainer.model, evaluators=[evaluator])
    results = read_eval_results(str(tmp_path / "eval_results.json"))["cxr_phantom_tiny_val"]["localization"]
    scored = sum(len({a["category_id"] for a in r["annotations"]}) for r in DatasetCatalog.get("cxr_phantom_tiny_val"))
    assert results["num_samples"] == scored
    assert all(np.isfinite(results[m]) for m in ("IoU", "CNR", "mIoU_2class", "PointingGame"))
    assert len(list((tmp_path / "inference" / "heatmap_overlays").glob("*.png"))) >= 2


def test_evaluation_on_the_real_nih_subset_reports_finite_metrics_per_finding(model, shared_data, tmp_path):
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import inference_on_dataset

    from cxr_codet.data.datasets.nih_cxr14 import register_nih_cxr14_bbox
    from cxr_codet.evaluation.localization_evaluation import LocalizationEvaluator

    register_nih_cxr14_bbox(str(shared_data / "nih-cxr14-bbox"), prefix="nih_afloc_test")
    everything = "nih_afloc_test_all"
    records = DatasetCatalog.get(everything)
    subset = [next(r for r in records if finding in r["image_labels"]) for finding in range(8)]  # one per finding
    name = "nih_afloc_test_subset"
    DatasetCatalog.register(name, lambda: [dict(r) for r in subset])
    MetadataCatalog.get(name).set(thing_classes=list(NIH_CXR14_BBOX_CLASSES), evaluator_type="coco")
    cfg = afloc_cfg("DATASETS.TEST", (name,))
    model.eval()
    model.set_test_vocabulary(list(NIH_CXR14_BBOX_CLASSES))
    try:
        evaluator = LocalizationEvaluator(name, str(tmp_path), n_bootstrap=20, num_overlays=1)
        results = inference_on_dataset(model, build_cxr_test_loader(cfg, name), evaluator)["localization"]
    finally:
        model.reset_test_vocabulary()
    for finding in NIH_CXR14_BBOX_CLASSES:
        for metric in ("IoU", "CNR", "mIoU_2class", "PointingGame"):
            assert np.isfinite(results[f"{metric}-{finding}"]), (metric, finding)
    assert 0 <= results["IoU"] <= 1 and 0 <= results["PointingGame"] <= 1
    assert results["num_samples"] >= 8
    overlays = list((tmp_path / "heatmap_overlays").glob("*.png"))
    assert overlays and all(cv2_shape(p) == (512, 512, 3) for p in overlays)  # drawn on the 512 px image


def cv2_shape(path):
    import cv2

    return cv2.imread(str(path)).shape
