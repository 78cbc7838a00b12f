"""modeling/meta_arch/cxr_codet.py: CXR-CoDet's training losses (co-occurrence in concept groups, masking,
padding, one region-feature pass), its switchable test vocabulary, and its refusals."""
import logging

import pytest
import torch
from conftest import make_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from tiny_cxr_codet import (
    LOSS_KEYS,
    NIH_NAMES,
    hand_made_batch,
    inference_inputs,
    tiny_cfg,
    tiny_model,
)

from cxr_codet.data.classes import VINDR_CXR_CLASSES
from cxr_codet.data.concept_groups import concept_groups_from_batch
from cxr_codet.engine.optimizer import build_optimizer, module_lr_multipliers
from cxr_codet.modeling.roi_heads.classifier import OpenVocabularyClassifier
from cxr_codet.modeling.roi_heads.co_occurrence_head import CoOccurrenceHead, group_similarity, text_guidance_weights
from cxr_codet.modeling.roi_heads.open_vocab_fast_rcnn import sigmoid_classification_loss
from cxr_codet.modeling.text import build_class_embeddings


def _train_losses(model, batch):
    with EventStorage():
        return model(batch)


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
    return make_cfg(tiny=False)


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
