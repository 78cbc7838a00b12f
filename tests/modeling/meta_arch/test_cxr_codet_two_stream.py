"""CXR-CoDet on the two-stream loader's batches: a caption batch trains the image-level losses only (co-occurrence,
Detic's caption and max-size losses) and sends no gradient through the box losses; a box batch trains the RPN and
box losses, and the image-level losses are zeros."""
import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from tiny_cxr_codet import IMAGE_SIZE, hand_made_batch, tiny_model

from cxr_codet.data.streams import CAPTION_STREAM, STREAM_KEY

TWO_STREAM = ["DATALOADER.SAMPLER_TRAIN", "TwoStreamSampler", "DATALOADER.DATASET_BS", [4, 4],
              "MODEL.CAPTION_LOSS.ENABLED", True, "MODEL.MAX_SIZE_LOSS.ENABLED", True,
              "MODEL.MAX_SIZE_LOSS.NUM_PROPOSALS", 8]
IMAGE_LEVEL = ("loss_cooccurrence", "loss_caption", "loss_max_size")
BOX = ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc")


def caption_batch(captions=("Findings: nodule.", "Findings: nodule.", "Impression: effusion.", "Impression: effusion.")):
    batch = hand_made_batch(group_size=2, num_groups=2)
    for item, caption in zip(batch, captions):
        item["instances"] = Instances(IMAGE_SIZE)  # image-level images: no boxes
        item["instances"].gt_boxes, item["instances"].gt_classes = Boxes(torch.zeros(0, 4)), torch.zeros(0).long()
        item.update({STREAM_KEY: CAPTION_STREAM, "box_supervised": False, "caption": caption})
    return batch


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """One tiny two-stream CXR-CoDet (MiniLM class and caption embeddings): the tests only run forward passes."""
    return tiny_model(tmp_path_factory.mktemp("two_stream"), embeddings=None, extra=TWO_STREAM)


def _losses(model, batch, all_losses=True):
    """The model's losses; `all_losses` also those of the other stream (zeros), which a two-stream model leaves out
    of what it returns (it adds them, times 0, to a loss it keeps)."""
    model.two_stream = not all_losses
    try:
        with EventStorage():
            return model(batch)
    finally:
        model.two_stream = True


@pytest.mark.slow  # loads the MiniLM encoder for class names and captions
def test_a_caption_batch_trains_image_level_losses_and_no_box_loss(model):
    model.zero_grad()
    assert set(_losses(model, caption_batch(), all_losses=False)) == set(IMAGE_LEVEL)  # what it logs and returns
    losses = _losses(model, caption_batch())
    assert all(losses[k] > 0 for k in IMAGE_LEVEL) and all(losses[k] == 0 for k in BOX)
    sum(losses[k] for k in BOX).backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())  # nothing through box losses
    model.zero_grad()
    losses["loss_caption"].backward(retain_graph=True)
    grads = {name: p.grad.abs().sum().item() for name, p in model.named_parameters() if p.grad is not None}
    assert grads["roi_heads.box_predictor.cls_score.proj.weight"] > 0 and grads["roi_heads.box_head.fc1.weight"] > 0
    assert sum(v for k, v in grads.items() if k.startswith("backbone.")) > 0
    model.zero_grad()
    losses["loss_max_size"].backward()
    assert model.roi_heads.box_predictor.cls_score.proj.weight.grad.abs().sum() > 0
    model.zero_grad()


@pytest.mark.slow  # loads the MiniLM encoder for class names and captions
def test_a_box_batch_trains_box_losses_and_image_level_zeros(model):
    batch = hand_made_batch(group_size=2, num_groups=2, with_concepts=False)
    assert set(_losses(model, batch, all_losses=False)) == set(BOX)
    losses = _losses(model, batch)
    assert all(losses[k] > 0 for k in ("loss_cls", "loss_rpn_cls")) and all(losses[k] == 0 for k in IMAGE_LEVEL)


@pytest.mark.slow  # loads the MiniLM encoder for class names and captions
def test_the_caption_loss_reads_the_captions_and_pulls_shared_ones_together(model):
    same = _losses(model, caption_batch())["loss_caption"].detach()
    different = _losses(model, caption_batch(("a", "b", "c", "d")))["loss_caption"].detach()
    assert float(same) != pytest.approx(float(different))
    batch = caption_batch()
    del batch[2]["caption"]
    with pytest.raises(ValueError, match="has no caption: the caption loss needs"):
        _losses(model, batch)


def test_image_level_losses_need_the_two_stream_loader(tmp_path):
    with pytest.raises(ValueError, match="MODEL.CAPTION_LOSS.ENABLED train on caption batches: set "
                                         "DATALOADER.SAMPLER_TRAIN 'TwoStreamSampler'"):
        tiny_model(tmp_path, extra=["MODEL.CAPTION_LOSS.ENABLED", True])
