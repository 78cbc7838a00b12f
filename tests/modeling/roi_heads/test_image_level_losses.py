"""Detic's caption loss and max-size loss, as the caption stream trains them."""
import math

import pytest
import torch

from cxr_codet.modeling.roi_heads.image_level_losses import caption_loss, max_size_loss


def _bce(logit, target):
    return -(target * math.log(1 / (1 + math.exp(-logit))) + (1 - target) * math.log(1 - 1 / (1 + math.exp(-logit))))


def test_caption_loss_positive_plus_weighted_negatives_averaged_over_images():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    expected_rows = [_bce(2.0, 1) + 0.125 * _bce(-1.0, 0), _bce(3.0, 1) + 0.125 * _bce(0.5, 0)]
    assert float(caption_loss(logits, negative_weight=0.125)) == pytest.approx(sum(expected_rows) / 2, rel=1e-6)
    matched = caption_loss(torch.tensor([[9.0, -9.0], [-9.0, 9.0]]))
    swapped = caption_loss(torch.tensor([[-9.0, 9.0], [9.0, -9.0]]))
    assert float(matched) < 1e-3 < 10 < float(swapped)
    with pytest.raises(ValueError, match=r"\[B, B\]"):
        caption_loss(torch.zeros(2, 3))


def test_caption_loss_gradient_pulls_each_image_to_its_own_caption():
    logits = torch.zeros(3, 3, requires_grad=True)
    caption_loss(logits).backward()
    assert (torch.diagonal(logits.grad) < 0).all()  # raise own-caption logits
    off_diagonal = logits.grad[~torch.eye(3, dtype=torch.bool)]
    assert (off_diagonal > 0).all()  # lower the others


def test_max_size_loss_trains_only_the_largest_proposal_on_each_label():
    logits = [torch.zeros(3, 4, requires_grad=True), torch.zeros(2, 4, requires_grad=True)]
    areas = [torch.tensor([10.0, 50.0, 20.0]), torch.tensor([5.0, 1.0])]
    loss = max_size_loss(logits, areas, [[2], []])
    loss.backward()
    grad = logits[0].grad
    assert grad[[0, 2]].abs().sum() == 0 and grad[1, :3].abs().sum() > 0  # only the largest, proposal 1
    assert grad[1, 3] == 0  # the background column is not trained
    assert grad[1, 2] < 0 and grad[1, 0] > 0 and grad[1, 1] > 0  # the label up, the other findings down
    assert logits[1].grad.abs().sum() == 0  # no labels: nothing
    # zero logits: BCE log 2 per finding (3), then the mean over 2 images
    assert float(loss) == pytest.approx(3 * math.log(2) / 2, rel=1e-6)


def test_max_size_loss_gives_each_label_its_own_one_hot_target_as_detic():
    """Two labels on one image: each one-hot BCE pushes the other label down, so at equal logits they cancel."""
    logits = torch.zeros(1, 4, requires_grad=True)
    max_size_loss([logits], [torch.tensor([1.0])], [[0, 2]]).backward()
    assert logits.grad[0, 0] == 0 and logits.grad[0, 2] == 0 and logits.grad[0, 1] > 0
