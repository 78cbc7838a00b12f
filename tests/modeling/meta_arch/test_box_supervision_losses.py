"""modeling/meta_arch/box_supervision.py: image-level-only images add nothing to the RPN and box losses and train
only through the co-occurrence loss."""
import pytest
import torch
from detectron2.utils.events import EventStorage
from tiny_cxr_codet import _instances, hand_made_batch, tiny_model

BOX_LOSSES = ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg")


def _image_level_only(item):
    """The loader's view of `item` after the split: findings kept, no box."""
    return dict(item, instances=_instances([], []), box_supervised=False)


def _losses(model, batch, seed=0):
    torch.manual_seed(seed)  # the RPN and ROI samplers draw from torch's generator
    with EventStorage():
        return model(batch)


@pytest.mark.parametrize("c4", [False, True])
def test_image_level_only_image_adds_nothing_to_rpn_and_box_losses(tmp_path, c4):
    """The box losses of a batch with one image-level-only image equal those of the batch without it."""
    model = tiny_model(tmp_path, c4=c4, group_size=1, extra=["MODEL.CO_OCCURRENCE.ENABLED", False])
    batch = hand_made_batch(num_groups=2, with_concepts=False)
    masked = _losses(model, [batch[0], _image_level_only(batch[1]), *batch[2:]])
    without = _losses(model, [batch[0], *batch[2:]])
    as_background = _losses(model, [batch[0], dict(batch[1], instances=_instances([], [])), *batch[2:]])
    for key in BOX_LOSSES:
        torch.testing.assert_close(masked[key], without[key])
    assert any(not torch.allclose(as_background[key], without[key]) for key in BOX_LOSSES)


def test_image_level_only_image_trains_only_through_the_co_occurrence_loss(tmp_path):
    """Gradients reaching the backbone features of the image-level-only image: none from the RPN and box
    losses, some from the co-occurrence loss; the boxed image in its group gets box-loss gradients."""
    model = tiny_model(tmp_path)
    batch = hand_made_batch(num_groups=2)
    batch[1] = _image_level_only(batch[1])
    captured = []
    model.backbone.register_forward_hook(lambda module, inputs, output: captured.extend(output.values()))
    losses = _losses(model, batch)
    box_loss = sum(losses[k] for k in BOX_LOSSES)
    box_grads = torch.autograd.grad(box_loss, captured, retain_graph=True, allow_unused=True)
    co_grads = torch.autograd.grad(losses["loss_cooccurrence"], captured, allow_unused=True)
    box_grads = [g for g in box_grads if g is not None]
    assert box_grads and all(torch.count_nonzero(g[1]) == 0 for g in box_grads)
    assert sum(g[0].abs().sum() for g in box_grads) > 0
    assert sum(g[1].abs().sum() for g in co_grads if g is not None) > 0


def test_batch_without_any_box_gives_zero_box_losses_and_trains_co_occurrence(tmp_path):
    model = tiny_model(tmp_path)
    batch = [_image_level_only(item) for item in hand_made_batch(num_groups=2)]
    losses = _losses(model, batch)
    for key in BOX_LOSSES:
        assert losses[key].item() == 0.0
    assert losses["loss_cooccurrence"].item() > 0
    sum(losses.values()).backward()
    assert model.roi_heads.co_occurrence.sim_mlp.fc1.weight.grad.abs().sum() > 0
