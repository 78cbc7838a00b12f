"""Phrase grounding: cell coverage of boxes and the balanced loss by hand, and the registered meta-architecture
on tiny phantom inputs (training phrases and negatives, gradients, phrase maps and boxes at inference,
bimodal bias merging), plus a check that a few steps on one image teach it where a phrase's box is."""
import math

import numpy as np
import pytest
import torch
from conftest import TINY_SIZE, make_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from cxr_codet.data.build import build_cxr_train_loader
from cxr_codet.data.classes import VINDR_CXR_CLASSES
from cxr_codet.engine.optimizer import build_optimizer
from cxr_codet.modeling.meta_arch import PhraseGrounding
from cxr_codet.modeling.meta_arch.grounding import balanced_bce, box_coverage

CONFIG = "configs/phantom/grounding_R18_phantom.yaml"


def grounding_cfg(*overrides):
    """The phantom grounding config shrunk for tests, with a narrow joint space."""
    return make_cfg(CONFIG, "MODEL.PHRASE_GROUNDING.EMBED_DIM", 32, *overrides)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(grounding_cfg())


def test_box_coverage_by_hand():
    # A 16 x 8 box on a 32 x 32 input seen on a 4 x 4 grid of 8-pixel cells: cells fully or half covered.
    coverage = box_coverage(torch.tensor([[8.0, 4.0, 24.0, 12.0]]), (32, 32), (4, 4))
    expected = torch.zeros(4, 4)
    expected[0, 1:3], expected[1, 1:3] = 0.5, 0.5
    torch.testing.assert_close(coverage, expected)
    overlapping = torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]])  # a union, not a sum
    assert box_coverage(overlapping, (32, 32), (4, 4)).max() == 1.0
    assert box_coverage(torch.zeros(0, 4), (32, 32), (4, 4)).sum() == 0


def test_balanced_bce_by_hand():
    zeros = torch.zeros(2, 2, 2)
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert balanced_bce(zeros, targets).item() == pytest.approx(math.log(2))  # logit 0: ln 2 on every cell
    # One covered cell with logit +2, three uncovered with logit -2: half weight each side.
    logits = torch.tensor([[[2.0, -2.0], [-2.0, -2.0]]])
    expected = 0.5 * math.log1p(math.exp(-2)) + 0.5 * math.log1p(math.exp(-2))
    assert balanced_bce(logits, targets[:1]).item() == pytest.approx(expected)
    # An empty target (a negative phrase) weighs its cells evenly.
    negative = torch.tensor([[[0.0, 0.0], [0.0, 4.0]]])
    expected = (3 * math.log(2) + math.log1p(math.exp(4))) / 4
    assert balanced_bce(negative, targets[1:]).item() == pytest.approx(expected)


def test_model_is_registered_and_fuses_res3_and_res4(model):
    assert isinstance(model, PhraseGrounding)
    assert set(model.feature_projections) == {"res3", "res4"}
    patches = model.patch_features(model.backbone(torch.zeros(1, 3, TINY_SIZE, TINY_SIZE)))
    assert patches.shape == (1, 32, TINY_SIZE // 8, TINY_SIZE // 8)  # the res3 grid
    assert all("encoder" not in key for key in model.state_dict())


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match=r"IN_FEATURES \['res5'\]: the backbone gives \['res3', 'res4'\]"):
        build_model(grounding_cfg("MODEL.PHRASE_GROUNDING.IN_FEATURES", ["res5"]))
    with pytest.raises(ValueError, match="MODEL.PROMPTS.TRAIN_GRANULARITIES must be a non-empty list"):
        build_model(grounding_cfg("MODEL.PROMPTS.TRAIN_GRANULARITIES", ["verbose"]))


def test_training_phrases_cover_present_findings_and_sampled_negatives(model):
    instances = Instances((TINY_SIZE, TINY_SIZE))
    instances.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 8.0, 16.0, 16.0]]))
    instances.gt_classes = torch.tensor([10, 3])
    phrases = model.training_phrases({"image_labels": [3, 5, 10], "instances": instances})
    assert [(c, present) for _, c, present in phrases][:2] == [(3, True), (10, True)]
    negatives = [c for _, c, present in phrases if not present]
    assert len(negatives) == 2 and not set(negatives) & {3, 5, 10}  # 5: shown without a box, never negative
    assert phrases[0][0] in {model.prompt("Cardiomegaly", "unelaborate"), model.prompt("Cardiomegaly", "elaborate")}
    assert model.prompt("Cardiomegaly", "unelaborate") == "Findings suggesting cardiomegaly."
    assert model.prompt("Cardiomegaly", "elaborate").count(".") == 3  # the three description sentences


def test_training_gives_a_finite_loss_with_gradients(model):
    model.train()
    batch = next(iter(build_cxr_train_loader(grounding_cfg())))
    losses = model(batch)
    assert set(losses) == {"loss_grounding"} and torch.isfinite(losses["loss_grounding"])
    model.zero_grad()
    losses["loss_grounding"].backward()
    for module in (model.phrase_projection, model.refine, model.feature_projections["res4"], model.backbone.stem):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert model.logit_bias.grad is not None
    with pytest.raises(ValueError, match="has no 'instances'"):
        model([{"image": batch[0]["image"], "image_labels": [1], "file_name": "x.png"}])


def test_inference_gives_maps_and_boxes_per_prompt_and_phrase(model):
    model.eval()
    image = torch.randint(0, 255, (3, TINY_SIZE, TINY_SIZE), dtype=torch.uint8)
    [output] = model([{"image": image, "height": 96, "width": 96}])
    assert output["localization"]["findings"] == list(VINDR_CXR_CLASSES)
    heatmaps = output["localization"]["heatmaps"]
    assert heatmaps.shape == (14, 96, 96) and heatmaps.min() == -1 and heatmaps.max() == 1
    assert output["instances"].image_size == (96, 96) and len(output["instances"]) <= 14 * 3
    scores = output["instances"].scores
    assert ((scores >= 0) & (scores <= 1)).all()  # boxes scored by the map's probabilities
    [phrase_output] = model([{"image": image, "phrase": "Blunted left costophrenic angle.",
                              "category_name": "Pleural effusion"}])
    assert phrase_output["localization"]["heatmaps"].shape == (1, TINY_SIZE, TINY_SIZE)
    assert set(phrase_output["instances"].pred_classes.tolist()) <= {VINDR_CXR_CLASSES.index("Pleural effusion")}


def test_bimodal_bias_merging_runs_on_the_grid(model):
    model.eval()
    settings = model.map_settings
    model.map_settings = type(settings)(bbm_enabled=True)
    try:
        [output] = model([{"image": torch.randint(0, 255, (3, TINY_SIZE, 48), dtype=torch.uint8)}])
    finally:
        model.map_settings = settings
    heatmaps = output["localization"]["heatmaps"]
    assert heatmaps.shape == (14, TINY_SIZE, 48) and torch.isfinite(heatmaps).all()


@pytest.mark.slow
def test_a_few_steps_on_one_image_learn_where_the_phrase_is():
    torch.manual_seed(0)
    cfg = grounding_cfg("SOLVER.BASE_LR", 0.05, "MODEL.PHRASE_GROUNDING.NEGATIVES_PER_IMAGE", 1)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    image = torch.full((3, TINY_SIZE, TINY_SIZE), 60, dtype=torch.uint8)
    image[:, 8:24, 40:56] = 220  # a bright square: "Nodule/Mass" (8) at x 40..56, y 8..24
    instances = Instances((TINY_SIZE, TINY_SIZE))
    instances.gt_boxes, instances.gt_classes = Boxes(torch.tensor([[40.0, 8.0, 56.0, 24.0]])), torch.tensor([8])
    record = {"image": image, "instances": instances, "image_labels": [8]}
    model.train()
    for _ in range(30):
        loss = model([record, record])["loss_grounding"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    heatmap = model([{"image": image}])[0]["localization"]["heatmaps"][8].numpy()
    row, col = np.unravel_index(np.nanargmax(heatmap), heatmap.shape)
    assert 8 <= row < 24 and 40 <= col < 56
    assert heatmap[8:24, 40:56].mean() > heatmap[40:, :24].mean() + 0.5
