"""CXRCoDet end to end on tiny models: training losses, concept groups, classifier, test-time vocabulary, configs."""
import logging
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from tiny_cxr_codet import (
    CONFIGS,
    NIH_NAMES,
    hand_made_batch,
    inference_inputs,
    tiny_cfg,
    tiny_model,
)

from cxr_codet import add_cxr_codet_config
from cxr_codet.data.classes import VINDR_CXR_CLASSES
from cxr_codet.engine.optimizer import build_optimizer, module_lr_multipliers
from cxr_codet.modeling.input_normalization import check_input_normalization, expected_input_normalization
from cxr_codet.modeling.roi_heads.classifier import OpenVocabularyClassifier
from cxr_codet.data.concept_groups import concept_groups_from_batch
from cxr_codet.modeling.roi_heads.open_vocab_fast_rcnn import sigmoid_classification_loss
from cxr_codet.modeling.roi_heads.co_occurrence_head import CoOccurrenceHead, group_similarity, text_guidance_weights
from cxr_codet.modeling.text import build_class_embeddings

LOSS_KEYS = {"loss_cls", "loss_box_reg", "loss_cooccurrence", "loss_rpn_cls", "loss_rpn_loc"}
PAPER_CONFIG = CONFIGS / "vindr" / "cxr_codet_R50_C4_paper.yaml"
ABLATIONS = sorted((CONFIGS / "vindr" / "ablations").glob("*.yaml"))
CXR_CODET_CONFIGS = [
    CONFIGS / "Base-CXR-CoDet-C4.yaml",
    CONFIGS / "Base-CXR-CoDet-FPN.yaml",
    CONFIGS / "phantom" / "cxr_codet_R18_FPN_phantom.yaml",
    PAPER_CONFIG,
    *ABLATIONS,
]


def _train_losses(model, batch):
    with EventStorage():
        return model(batch)


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("c4", [False, True], ids=["FPN", "C4"])
def test_training_forward_gives_finite_losses_and_gradients(tmp_path, c4):
    model = tiny_model(tmp_path, c4=c4)
    losses = _train_losses(model, hand_made_batch(group_size=2, num_groups=2))
    assert set(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_cooccurrence"].item() > 0
    sum(losses.values()).backward()
    mlp = model.roi_heads.co_occurrence.sim_mlp
    projection = model.roi_heads.box_predictor.cls_score.proj
    assert mlp.fc1.weight.grad.abs().sum() > 0 and mlp.fc2.weight.grad.abs().sum() > 0
    assert projection.weight.grad.abs().sum() > 0
    names = {name for name, _ in model.named_parameters()}
    assert not any("class_embeddings" in name for name in names)  # fixed text embeddings are a buffer


def test_co_occurrence_loss_trains_backbone_box_head_and_supports_but_not_proposal_boxes(tmp_path):
    model = tiny_model(tmp_path)
    losses = _train_losses(model, hand_made_batch(group_size=2, num_groups=2))
    losses["loss_cooccurrence"].backward()  # this loss alone

    def grad_norm(module):
        return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)

    assert grad_norm(model.backbone.bottom_up.res3) > 0 and grad_norm(model.backbone.fpn_output2) > 0
    assert grad_norm(model.roi_heads.box_head) > 0
    assert grad_norm(model.roi_heads.box_predictor.cls_score.proj) > 0
    rpn = model.proposal_generator.rpn_head
    assert grad_norm(rpn.anchor_deltas) == 0 and grad_norm(rpn.objectness_logits) == 0  # boxes detached
    assert grad_norm(model.roi_heads.box_predictor.bbox_pred) == 0  # no box regression in this loss


def test_co_occurrence_query_loss_reaches_its_support_images_features():
    torch.manual_seed(0)
    classifier = OpenVocabularyClassifier(6, torch.randn(4, 6))
    head = CoOccurrenceHead(num_proposals=3, group_size=3)
    features = torch.randn(1, 3, 3, 6, requires_grad=True)
    valid = torch.ones(1, 3, 3, dtype=torch.bool)
    per_query = head.per_query_losses(features, valid, torch.tensor([2]), classifier)
    per_query[0, 0].backward()  # image 0 as the query; images 1 and 2 are only its supports
    assert all(features.grad[0, g].abs().sum() > 0 for g in range(3))


def test_co_occurrence_target_masks_the_query_images_other_findings(tmp_path):
    batch = hand_made_batch(group_size=2, num_groups=2)  # member 1 of group g also shows finding g + 5
    groups = concept_groups_from_batch(batch, 2)
    mask = groups.other_findings_mask(14)
    assert mask.nonzero().tolist() == [[0, 1, 5], [1, 1, 6]]

    torch.manual_seed(0)
    classifier = OpenVocabularyClassifier(6, torch.randn(14, 6))
    features, valid = torch.randn(2, 2, 3, 6), torch.ones(2, 2, 3, dtype=torch.bool)
    concepts = groups.concept_ids
    one_hot = CoOccurrenceHead(num_proposals=3, group_size=2, mask_other_findings=False)
    masked = CoOccurrenceHead(num_proposals=3, group_size=2)
    masked.load_state_dict(one_hot.state_dict())
    plain = one_hot.per_query_losses(features, valid, concepts, classifier, mask)
    kept = masked.per_query_losses(features, valid, concepts, classifier, mask)
    weights = masked.proposal_weights(group_similarity(features, text_guidance_weights(
        classifier.class_embeddings, concepts)), valid)
    logits = classifier.score(torch.einsum("bgn,bgnd->bgd", weights, features), classifier.class_embeddings)
    left_out = torch.nn.functional.softplus(logits[..., :-1])  # BCE of a 0 target
    assert torch.allclose(plain - kept, (left_out * mask).sum(-1), atol=1e-5)
    assert torch.equal(plain[:, 0], kept[:, 0])  # images with no other finding: unchanged
    model = tiny_model(tmp_path)
    assert model.roi_heads.co_occurrence.mask_other_findings  # the default


def test_sigmoid_cross_entropy_option(tmp_path):
    model = tiny_model(tmp_path, c4=True, extra=["MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", True,
                                                  "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    predictor = model.roi_heads.box_predictor
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 3.0, 0.0], [-2.0, -4.0, 0.0]])
    gt = torch.tensor([0, 1, 2])  # 2 = background: both findings' targets 0
    expected = sum(torch.nn.functional.binary_cross_entropy_with_logits(logits[i, :2], t, reduction="sum")
                   for i, t in enumerate(torch.eye(3)[gt, :2])) / 3
    assert sigmoid_classification_loss(logits, gt).item() == pytest.approx(expected.item(), rel=1e-6)
    probs = predictor.predict_probs((logits, None), [Instances((8, 8), x=torch.zeros(3))])[0]
    assert torch.allclose(probs, logits.sigmoid())
    losses = _train_losses(model, hand_made_batch())
    assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        instances = model(inference_inputs())[0]["instances"]
    assert len(instances) > 0
    softmax = tiny_model(tmp_path, c4=True).roi_heads.box_predictor
    assert not softmax.use_sigmoid_ce
    assert torch.allclose(softmax.predict_probs((logits, None), [Instances((8, 8), x=torch.zeros(3))])[0].sum(1),
                          torch.ones(3))


def test_objectness_multiplied_scores_rank_saturated_class_scores(tmp_path):
    predictor = tiny_model(tmp_path, extra=["MODEL.ROI_BOX_HEAD.MULT_PROPOSAL_SCORE", True]).roi_heads.box_predictor
    logits = torch.tensor([[45.0, -20.0, 0.0], [48.0, -20.0, 0.0]])  # softmax: both exactly 1.0 in float32
    proposals = Instances((8, 8), objectness_logits=torch.tensor([-1.0, 2.0]))
    plain = torch.softmax(logits, dim=-1)
    assert plain[0, 0] == plain[1, 0] == 1.0
    probs = predictor.predict_probs((logits, None), [proposals])[0]
    assert torch.allclose(probs, (plain * torch.tensor([[-1.0], [2.0]]).sigmoid()).sqrt())
    assert probs[1, 0] > probs[0, 0]


def test_group_of_four_uses_three_supports(tmp_path):
    model = tiny_model(tmp_path, group_size=4)
    assert model.roi_heads.co_occurrence.sim_mlp.fc1.in_features == 3 * 8
    losses = _train_losses(model, hand_made_batch(group_size=4, num_groups=2))
    assert torch.isfinite(losses["loss_cooccurrence"]) and losses["loss_cooccurrence"].item() > 0


def test_one_region_feature_pass_serves_box_and_co_occurrence_losses(tmp_path):
    model = tiny_model(tmp_path)
    heads = model.roi_heads
    calls, seen = [], {}
    original = heads._region_features

    def counting(features, boxes):
        calls.append([len(b) for b in boxes])
        return original(features, boxes)

    def recording(features, valid, concept_ids, classifier, other_findings=None):
        seen.update(features=features.shape, valid=valid.clone(), concepts=concept_ids.clone())
        return torch.zeros(())

    heads._region_features = counting
    heads.co_occurrence.forward = recording
    _train_losses(model, hand_made_batch(group_size=2, num_groups=2, no_finding=2))
    assert len(calls) == 1
    sampled = 16  # ROI_HEADS.BATCH_SIZE_PER_IMAGE of the tiny config
    assert all(n > sampled for n in calls[0][:4])  # grouped images: sampled + top proposals
    assert all(n <= sampled for n in calls[0][4:])  # no-finding images: sampled proposals only
    assert seen["features"][:3] == (2, 2, 8)
    assert seen["concepts"].tolist() == [0, 1]


def test_proposal_shortfall_is_zero_padded_and_masked(tmp_path):
    model = tiny_model(tmp_path, extra=["MODEL.RPN.POST_NMS_TOPK_TRAIN", 5])  # 5 proposals < N = 8
    seen = {}

    def recording(features, valid, concept_ids, classifier, other_findings=None):
        seen.update(features=features.detach().clone(), valid=valid.clone())
        return torch.zeros(())

    model.roi_heads.co_occurrence.forward = recording
    _train_losses(model, hand_made_batch(group_size=2, num_groups=2))
    assert seen["valid"].shape == (2, 2, 8)
    assert seen["valid"].sum(dim=-1).tolist() == [[5, 5], [5, 5]]
    assert torch.equal(seen["valid"][..., :5], torch.ones(2, 2, 5, dtype=torch.bool))
    assert torch.count_nonzero(seen["features"][..., 5:, :]) == 0
    assert torch.count_nonzero(seen["features"][..., :5, :]) > 0


def test_no_finding_images_only_add_box_losses(tmp_path):
    model = tiny_model(tmp_path)
    losses = _train_losses(model, hand_made_batch(group_size=2, num_groups=2, no_finding=2))
    assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())


def test_plain_loader_skips_co_occurrence_and_says_so_once(tmp_path, caplog):
    model = tiny_model(tmp_path)
    batch = hand_made_batch(with_concepts=False)
    with caplog.at_level(logging.WARNING, logger="cxr_codet.modeling.meta_arch.cxr_codet"):
        first = _train_losses(model, batch)
        _train_losses(model, batch)
    assert first["loss_cooccurrence"].item() == 0.0
    assert first["loss_cooccurrence"].requires_grad  # still touches the MLP (distributed training)
    warnings = [r for r in caplog.records if "co-occurrence loss is skipped" in r.getMessage()]
    assert len(warnings) == 1


def test_concept_outside_the_vocabulary_is_refused(tmp_path):
    model = tiny_model(tmp_path)
    batch = hand_made_batch()
    for item in batch[:2]:
        item["concept_id"], item["image_labels"] = 20, [0, 20]
    with pytest.raises(ValueError, match=r"concept_id 20 in the batch is not a training class \(ids 0..13\)"):
        _train_losses(model, batch)


def test_co_occurrence_off_trains_box_losses_only(tmp_path):
    model = tiny_model(tmp_path, group_size=1, extra=["MODEL.CO_OCCURRENCE.ENABLED", False])
    assert model.roi_heads.co_occurrence is None
    losses = _train_losses(model, hand_made_batch())
    assert set(losses) == LOSS_KEYS - {"loss_cooccurrence"}


def test_group_size_one_is_refused_when_the_model_is_built(tmp_path):
    with pytest.raises(ValueError, match="CONCEPT_GROUP_SIZE = 1 leaves no support image"):
        tiny_model(tmp_path, group_size=1)


def test_co_occurrence_lr_multiplier_hits_exactly_the_two_mlp_layers(tmp_path):
    cfg = tiny_cfg(tmp_path)
    model = build_model(cfg)
    assert cfg.MODEL.CO_OCCURRENCE.LR_MULTIPLIER == 0.1 and model.roi_heads.co_occurrence.lr_multiplier == 0.1
    assert sorted(module_lr_multipliers(model)) == [f"roi_heads.co_occurrence.sim_mlp.{layer}.{kind}"
                                                    for layer in ("fc1", "fc2") for kind in ("bias", "weight")]
    optimizer = build_optimizer(cfg, model)
    mlp_params = {id(p) for p in model.roi_heads.co_occurrence.parameters()}
    for group in optimizer.param_groups:
        is_mlp = {id(p) in mlp_params for p in group["params"]}
        if True in is_mlp:
            assert is_mlp == {True}
            assert group["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * 0.1)


# ------------------------------------------------------------------------------------------ concept groups


def test_concept_groups_from_a_concept_group_batch():
    batch = hand_made_batch(group_size=2, num_groups=3, no_finding=1)
    groups = concept_groups_from_batch(batch, 2)
    assert groups.image_indices.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert groups.concept_ids.tolist() == [0, 1, 2]
    assert concept_groups_from_batch(hand_made_batch(with_concepts=False), 2) is None


def test_concept_groups_refuse_batches_that_break_the_contract():
    batch = hand_made_batch(group_size=2, num_groups=2)
    with pytest.raises(ValueError, match="not whole groups of DATALOADER.CONCEPT_GROUP_SIZE = 3"):
        concept_groups_from_batch(batch, 3)
    partial = hand_made_batch(group_size=2, num_groups=2)
    del partial[1]["concept_id"]
    with pytest.raises(ValueError, match="batch position 1 .* has no 'concept_id'"):
        concept_groups_from_batch(partial, 2)
    mixed = hand_made_batch(group_size=2, num_groups=2)
    mixed[1]["concept_id"], mixed[1]["image_labels"] = 1, [0, 1]
    with pytest.raises(ValueError, match=r"batch positions \[0, 1\] should form one concept group"):
        concept_groups_from_batch(mixed, 2)
    split = hand_made_batch(group_size=2, num_groups=2, no_finding=1)
    split.insert(1, split.pop())  # a no-finding image inside a group
    with pytest.raises(ValueError, match="should form one concept group"):
        concept_groups_from_batch(split, 2)
    unlabeled = hand_made_batch(group_size=2, num_groups=2)
    unlabeled[2]["image_labels"] = [7]
    with pytest.raises(ValueError, match="batch position 2 .* not in its image_labels"):
        concept_groups_from_batch(unlabeled, 2)


# -------------------------------------------------------------------------------------------- classifier


def test_classifier_scores_are_scaled_cosines_with_a_zero_background():
    torch.manual_seed(0)
    embeddings = torch.randn(3, 5)
    classifier = OpenVocabularyClassifier(4, embeddings, norm_temperature=50.0)
    x = torch.randn(6, 4)
    logits = classifier(x)
    projected = classifier.proj(x)
    expected = 50.0 * torch.nn.functional.cosine_similarity(projected[:, None], embeddings[None], dim=-1)
    assert logits.shape == (6, 4)
    assert torch.allclose(logits[:, :3], expected, atol=1e-4)
    assert torch.equal(logits[:, 3], torch.zeros(6))


def test_set_vocabulary_switches_inference_only_and_reset_restores():
    torch.manual_seed(0)
    classifier = OpenVocabularyClassifier(4, torch.randn(14, 5))
    x = torch.randn(2, 4)
    classifier.set_vocabulary(torch.randn(8, 5))
    classifier.train()
    assert classifier(x).shape == (2, 15)  # training keeps the training vocabulary
    classifier.eval()
    assert classifier(x).shape == (2, 9)
    classifier.reset_vocabulary()
    assert classifier(x).shape == (2, 15)
    assert "test_class_embeddings" not in classifier.state_dict()
    with pytest.raises(ValueError, match="dimension 7, but the classifier was built for 5-d"):
        classifier.set_vocabulary(torch.randn(8, 7))
    with pytest.raises(ValueError, match=r"rows \[1\] are all zero"):
        classifier.set_vocabulary(torch.tensor([[1.0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0]]))


@pytest.fixture(scope="module")
def minilm_model(tmp_path_factory):
    """A tiny model whose 14 VinDr classes are embedded by the offline MiniLM encoder (elaborate texts)."""
    model = tiny_model(tmp_path_factory.mktemp("minilm"), embeddings=None,
                       extra=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    model.eval()
    return model


def test_model_trained_on_14_findings_evaluates_with_8_names(minilm_model):
    model = minilm_model
    with torch.no_grad():
        before = model(inference_inputs())[0]["instances"]
        model.set_test_vocabulary(NIH_NAMES)
        after = model(inference_inputs())[0]["instances"]
    classifier = model.roi_heads.box_predictor.cls_score
    assert before.pred_classes.max().item() >= len(NIH_NAMES)  # the 14-class vocabulary reaches ids >= 8
    assert len(after) > 0 and after.pred_classes.max().item() < len(NIH_NAMES)
    assert set(after.pred_classes.tolist()) != {0}
    expected = build_class_embeddings(tiny_cfg_for_names(), NIH_NAMES)
    assert torch.allclose(classifier.test_class_embeddings.t(), expected, atol=1e-5)
    model.train()
    try:
        assert classifier(torch.randn(2, classifier.proj.in_features)).shape == (2, 15)
    finally:
        model.eval()
    model.set_test_vocabulary(list(VINDR_CXR_CLASSES))  # the training names: back to the training vocabulary
    assert classifier.test_class_embeddings is None


def tiny_cfg_for_names():
    """cfg.MODEL.TEXT_ENCODER as the MiniLM model uses it (to encode names independently of the model)."""
    cfg = get_cfg()
    add_cxr_codet_config(cfg)
    return cfg


def test_test_vocabulary_from_embeddings_and_class_specific_regression(tmp_path):
    model = tiny_model(tmp_path, extra=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    model.eval()
    model.set_test_vocabulary(torch.randn(3, 16))
    with torch.no_grad():
        instances = model(inference_inputs())[0]["instances"]
    assert len(instances) > 0 and instances.pred_classes.max().item() < 3
    assert set(instances.pred_classes.tolist()) == {0, 1, 2}  # every class of the new vocabulary is scored
    model.reset_test_vocabulary()
    specific = tiny_model(tmp_path, extra=["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False])
    with pytest.raises(ValueError, match="box regression is class-specific .*CLS_AGNOSTIC_BBOX_REG True"):
        specific.set_test_vocabulary(torch.randn(8, 16))
    with pytest.raises(ValueError, match="non-empty list of class names"):
        model.set_test_vocabulary([])


# ----------------------------------------------------------------------------------------------- configs


def _load(path: Path):
    cfg = get_cfg()
    add_cxr_codet_config(cfg)
    cfg.merge_from_file(str(path))
    return cfg


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_paper_config_is_the_paper_setting():
    cfg = _load(PAPER_CONFIG)
    assert cfg.MODEL.META_ARCHITECTURE == "CXRCoDet" and cfg.MODEL.ROI_HEADS.NAME == "CXRCoDetRes5ROIHeads"
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (32, 90000, (60000, 80000))
    assert cfg.SOLVER.BASE_LR == 0.001 and cfg.MODEL.CO_OCCURRENCE.LR_MULTIPLIER == 0.1 and not cfg.SOLVER.LR_MULTIPLIERS
    assert cfg.DATALOADER.CONCEPT_GROUP_SIZE == 2 and cfg.MODEL.CO_OCCURRENCE.NUM_PROPOSALS == 32
    assert cfg.MODEL.TEXT_ENCODER.NAME.endswith("BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    assert cfg.MODEL.PROMPTS.GRANULARITY == "elaborate"
    assert tuple(cfg.DATASETS.TRAIN) == ("vindr_cxr_train",) and tuple(cfg.DATASETS.TEST) == ("vindr_cxr_val",)
    # Where the paper is silent, CoDet_OVCOCO_R50_1x.yaml (the checkpoint's config): sigmoid CE, 800 px, clipping.
    assert cfg.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (800,) and cfg.INPUT.MAX_SIZE_TRAIN == 1333
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 1.0
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 4  # the paper's frozen ResNet-50: the whole C4 backbone
    assert (cfg.DATALOADER.CONCEPT_SAMPLING, cfg.DATALOADER.CONCEPT_FREQUENCY_POWER) == ("frequency", 1.0)


@pytest.mark.parametrize("config", [PAPER_CONFIG, CONFIGS / "vindr" / "faster_rcnn_R50_FPN_1x.yaml", *ABLATIONS],
                         ids=lambda p: p.stem)
def test_normalisation_follows_the_weights_the_config_loads(config):
    cfg = _load(config)
    checkpoints = [w for w in (cfg.MODEL.WEIGHTS, cfg.MODEL.INIT.WEIGHTS) if w]
    assert checkpoints, "a VinDr config starts from pretrained weights"
    for path in checkpoints:
        mean, std, _ = expected_input_normalization(path)
        assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx(mean) and list(cfg.MODEL.PIXEL_STD) == pytest.approx(std)
    check_input_normalization(cfg)


def test_normalisation_that_does_not_fit_the_weights_is_refused():
    assert expected_input_normalization("detectron2://ImageNetPretrained/MSRA/R-50.pkl")[:2] == (
        [103.530, 116.280, 123.675], [1.0, 1.0, 1.0])
    assert expected_input_normalization("output/phantom/model_final.pth") is None
    cfg = _load(PAPER_CONFIG)
    cfg.merge_from_list(["MODEL.PIXEL_MEAN", [127.5] * 3, "MODEL.PIXEL_STD", [64.0] * 3])
    with pytest.raises(ValueError, match=r"MODEL.WEIGHTS = detectron2://ImageNetPretrained/MSRA/R-50.pkl expects "
                                         r"MODEL.PIXEL_MEAN \[103.53, 116.28, 123.675\] and MODEL.PIXEL_STD"):
        check_input_normalization(cfg)
    cfg.MODEL.WEIGHTS = ""
    with pytest.raises(ValueError, match=r"MODEL.INIT.WEIGHTS = models/CoDet_OVCOCO_R50_1x.pth expects .* but the "
                                         r"config sets \[127.5, 127.5, 127.5\] and \[64.0, 64.0, 64.0\]"):
        check_input_normalization(cfg)
    phantom = _load(CONFIGS / "phantom" / "cxr_codet_R18_FPN_phantom.yaml")
    assert list(phantom.MODEL.PIXEL_STD) == [64.0] * 3  # from scratch: its own normalisation
    check_input_normalization(phantom)


EXPECTED_ROWS = {
    "lr_0.0005": {"SOLVER.BASE_LR": 0.0005},
    "lr_0.01": {"SOLVER.BASE_LR": 0.01},
    "batch_64": {"SOLVER.IMS_PER_BATCH": 64},
    "iter_130k": {"SOLVER.MAX_ITER": 130000},
    "support_3": {"DATALOADER.CONCEPT_GROUP_SIZE": 4},
    "captions_unelaborate": {"MODEL.PROMPTS.GRANULARITY": "unelaborate"},
    "text_clip": {"MODEL.TEXT_ENCODER.NAME": "ViT-B-32", "MODEL.TEXT_ENCODER.PRETRAINED": "openai"},
    "init_detic": {"MODEL.INIT.WEIGHTS": "models/Detic_OVCOCO_CLIP_R50_1x_max-size_caption.pth",
                   "MODEL.INIT.REINIT_MODULES": ["roi_heads.co_occurrence"]},
}


def test_every_ablation_changes_only_its_row():
    assert sorted(p.stem for p in ABLATIONS) == sorted(EXPECTED_ROWS)
    paper = _flatten(_load(PAPER_CONFIG))
    for path in ABLATIONS:
        ablation = _flatten(_load(path))
        changed = {k: v for k, v in ablation.items() if paper[k] != v and k != "OUTPUT_DIR"}
        assert changed == EXPECTED_ROWS[path.stem], path.name
        assert ablation["OUTPUT_DIR"] != paper["OUTPUT_DIR"]


@pytest.mark.parametrize("config", CXR_CODET_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_builds_and_trains_two_iterations_with_tiny_overrides(tmp_path, config):
    cfg = tiny_cfg(tmp_path, config_file=config, group_size=None, extra=["MODEL.BACKBONE.FREEZE_AT", 5])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    group_size = cfg.DATALOADER.CONCEPT_GROUP_SIZE
    before = model.roi_heads.box_predictor.cls_score.proj.weight.detach().clone()
    with EventStorage():
        for step in range(2):
            losses = model(hand_made_batch(group_size=group_size, num_groups=2, seed=step))
            assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    assert not torch.equal(before, model.roi_heads.box_predictor.cls_score.proj.weight)
