"""Data-parallel training is the same step: 2 CPU processes (gloo, DDP via cxr_codet.compat) with 1 image each
end one optimizer step with the parameters that 1 process reaches with both images.

Why this holds for Faster R-CNN, up to the order of floating-point sums:
- No batch statistics: GroupNorm in the backbone and FPN (the phantom config; no BatchNorm, no frozen BN
  buffers). Both images are 64 x 64, so the batched tensor has no padding that one process would not see.
- detectron2's losses are per-image means, and DDP averages the per-process gradients: the RPN divides by
  BATCH_SIZE_PER_IMAGE x images, and the ROI losses by the number of sampled regions, which is the same for
  both images here (POST_NMS_TOPK_TRAIN proposals + the one ground-truth box that detectron2 appends).
- No randomness that differs between the runs: RPN anchors and ROI proposals are subsampled through
  torch.randperm, but the budgets (4096 anchors, 512 regions per image) exceed the candidates (1023 anchors,
  11 proposals on a 64 x 64 image), so every labelled anchor and proposal is used whatever the permutation.
  The batches are fed directly (no sampler) and every process builds the model from the same seed (DDP
  broadcasts rank 0's parameters anyway).
A control checks that the step is sensitive to the data: one image alone gives clearly different parameters.
"""
from pathlib import Path

import pytest
import torch
from conftest import BASELINE
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from tiny_cxr_codet import tiny_cfg

from cxr_codet.engine.launcher import launch
from cxr_codet.engine.optimizer import build_optimizer
from cxr_codet.engine.trainer import create_ddp_model

SIZE = 64


def _cfg(directory):
    return tiny_cfg(
        Path(directory), config_file=BASELINE, group_size=None,
        extra=[
            "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 4096, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 512,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", 10, "SOLVER.BASE_LR", 0.05, "SOLVER.CLIP_GRADIENTS.ENABLED", False,
        ],
    )


def _batch():
    """Two 64 x 64 training inputs with one box each (different places and findings)."""
    generator = torch.Generator().manual_seed(7)
    items = []
    for box, finding in (([6.0, 8.0, 30.0, 40.0], 3), ([30.0, 20.0, 60.0, 50.0], 10)):
        instances = Instances((SIZE, SIZE))
        instances.gt_boxes = Boxes(torch.tensor([box]))
        instances.gt_classes = torch.tensor([finding])
        image = torch.rand(3, SIZE, SIZE, generator=generator) * 255
        items.append({"image": image, "height": SIZE, "width": SIZE, "instances": instances})
    return items


def _one_step(directory, images):
    """Build the seeded model, wrap it for DDP when distributed, take one SGD step on `images`; returns the
    bare model's parameters."""
    cfg = _cfg(directory)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    wrapped = create_ddp_model(model)
    with EventStorage():
        losses = wrapped(images)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _worker(directory):
    """One of the 2 gloo processes: its own image, one DDP step, parameters saved as rank<r>.pt."""
    torch.set_num_threads(1)
    rank = comm.get_rank()
    parameters = _one_step(directory, [_batch()[rank]])
    torch.save(parameters, Path(directory) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def initial_and_single(tmp_path_factory):
    directory = tmp_path_factory.mktemp("single")
    cfg = _cfg(directory)
    torch.manual_seed(0)
    initial = {name: p.detach().clone() for name, p in build_model(cfg).named_parameters()}
    return initial, _one_step(directory, _batch())


@pytest.mark.slow
def test_two_processes_with_one_image_each_take_the_single_process_step(initial_and_single, tmp_path):
    initial, single = initial_and_single
    launch(_worker, 2, dist_url="auto", args=(str(tmp_path),))
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys() == single.keys()

    largest_update = max((single[n] - initial[n]).abs().max().item() for n in single)
    assert largest_update > 1e-3, "the step must move the parameters for the comparison to mean anything"
    for name in single:
        torch.testing.assert_close(rank1[name], rank0[name], rtol=0, atol=0, msg=f"replicas differ: {name}")
        torch.testing.assert_close(rank0[name], single[name], rtol=1e-4, atol=1e-6, msg=f"DDP step differs: {name}")


@pytest.mark.slow
def test_control_one_image_alone_takes_a_different_step(initial_and_single, tmp_path):
    _, single = initial_and_single
    alone = _one_step(tmp_path, _batch()[:1])
    difference = max((alone[n] - single[n]).abs().max().item() for n in single)
    assert difference > 1e-4, "a step on one image must differ from the step on both, or the test proves nothing"
