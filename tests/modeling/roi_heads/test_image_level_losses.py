"""Detic's caption loss and max-size loss, as the caption stream trains them."""
import math

import pytest
import torch
from detectron2.structures import Boxes, Instances

from cxr_codet.modeling.roi_heads.image_level_losses import caption_loss, largest_proposals, max_size_loss


def _bce(logit, target):
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_caption_loss_positive_plus_weighted_negatives_averaged_over_images():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    expected_rows = [_bce(2.0, 1) + 0.125 * _bce(-1.0, 0), _bce(3.0, 1) + 0.125 * _bce(0.5, 0)]
    assert float(caption_loss(logits, negative_weight=0.125)) == pytest.approx(sum(expected_rows) / 2, rel=1e-6)
    matched = caption_loss(torch.tensor([[9.0, -9.0], [-9.0, 9.0]]))
    swapped = caption_loss(torch.tensor([[-9.0, 9.0], [9.0, -9.0]]))
    assert float(matched) < 1e-3 < 10 < float(swapped)
    with pytest.raises(ValueError, match=r"\[B, B\]"):
        caption_loss(torch.zeros(2, 3))


def test_caption_loss_gradient_pulls_each_image_to_its_own_caption_and_shared_captions_are_positives():
    logits = torch.zeros(3, 3, requires_grad=True)
    caption_loss(logits).backward()
    assert (torch.diagonal(logits.grad) < 0).all()  # raise own-caption logits
    assert (logits.grad[~torch.eye(3, dtype=torch.bool)] > 0).all()  # lower the others
    shared = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    logits = torch.zeros(3, 3, requires_grad=True)
    caption_loss(logits, positives=shared).backward()
    assert logits.grad[0, 1] < 0 and logits.grad[1, 0] < 0 and logits.grad[0, 2] > 0  # same text: pulled together


def _proposals(boxes, scores):
    p = Instances((100, 100))
    p.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    p.objectness_logits = torch.tensor(scores)
    return p


def test_largest_proposal_is_taken_among_the_top_by_objectness():
    p = _proposals([[0, 0, 10, 10], [0, 0, 50, 50], [0, 0, 90, 90], [0, 0, 20, 20]], [3.0, 2.0, -5.0, 1.0])
    assert largest_proposals([p], 3)[0].tensor.tolist() == [[0, 0, 50, 50]]  # the 90x90 one is not in the top 3
    assert largest_proposals([p], 4)[0].tensor.tolist() == [[0, 0, 90, 90]]
    assert len(largest_proposals([_proposals(torch.zeros(0, 4).tolist(), [])], 3)[0]) == 0


def test_max_size_loss_trains_the_label_on_the_logits_of_the_largest_proposal():
    logits = [torch.zeros(1, 4, requires_grad=True), torch.zeros(1, 4, requires_grad=True)]
    loss = max_size_loss(logits, [[2], []])
    loss.backward()
    grad = logits[0].grad[0]
    assert grad[3] == 0  # the background column is not trained
    assert grad[2] < 0 and grad[0] > 0 and grad[1] > 0  # the label up, the other findings down
    assert logits[1].grad.abs().sum() == 0  # no labels: nothing
    assert float(loss) == pytest.approx(3 * math.log(2) / 2, rel=1e-6)  # BCE log 2 x 3 findings, mean of 2 images


def test_max_size_loss_gives_each_label_its_own_one_hot_target_as_detic():
    """Two labels on one image: each one-hot BCE pushes the other label down, so at equal logits they cancel."""
    logits = torch.zeros(1, 4, requires_grad=True)
    max_size_loss([logits], [[0, 2]]).backward()
    assert logits.grad[0, 0] == 0 and logits.grad[0, 2] == 0 and logits.grad[0, 1] > 0
