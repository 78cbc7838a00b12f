"""Training on the two-stream loader: the rows of a weak-label comparison see the same box batches with the same
box-loss denominators, a model with no image-level loss takes its caption iterations as zero-gradient steps that
read no image, and a resumed run continues the streams exactly."""
import pytest
import torch
from conftest import BASELINE, CXR_CODET, make_cfg
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng
from detectron2.modeling.proposal_generator.rpn import RPN
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers

from cxr_codet.data.streams import TwoStreamDataset
from cxr_codet.engine.trainer import CXRTrainer

pytestmark = pytest.mark.slow

TWO_STREAM = ["DATALOADER.SAMPLER_TRAIN", "TwoStreamSampler", "DATALOADER.DATASET_BS", [4, 4],
              "DATALOADER.DATASET_RATIO", [1, 1], "DATASETS.TRAIN_BOX_FRACTION", 0.5, "DATASETS.TEST", (),
              "SOLVER.CHECKPOINT_PERIOD", 1000]
ROWS = {
    "faster_rcnn": (BASELINE, []),
    "control": (CXR_CODET, ["MODEL.CO_OCCURRENCE.ENABLED", False]),
    "full": (CXR_CODET, ["MODEL.CAPTION_LOSS.ENABLED", True]),
}


def _cfg(row, tmp_path, *extra):
    config, overrides = ROWS[row]
    cfg = make_cfg(config, *TWO_STREAM, *overrides, "OUTPUT_DIR", str(tmp_path / row), *extra)
    cfg.freeze()
    return cfg


def _trainer(cfg):
    seed_all_rng(cfg.SEED)  # as tools/train_net.py seeds every run before building it
    return CXRTrainer(cfg)


def _train(cfg, resume=False):
    trainer = _trainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def test_rows_see_the_same_box_batches_with_the_same_box_loss_denominators(tmp_path, monkeypatch):
    seen = []  # (row, what, value) in call order
    real_box_reg, real_rpn = FastRCNNOutputLayers.box_reg_loss, RPN.losses
    real_getitem = TwoStreamDataset.__getitem__

    def box_reg_loss(self, proposal_boxes, gt_boxes, pred_deltas, gt_classes):
        if gt_classes.numel():  # caption batches sample no region
            seen.append((row, "roi_denominator", int(gt_classes.numel())))
        return real_box_reg(self, proposal_boxes, gt_boxes, pred_deltas, gt_classes)

    def rpn_losses(self, anchors, logits, gt_labels, deltas, gt_boxes):
        seen.append((row, "rpn_denominator", self.batch_size_per_image * len(gt_labels)))
        return real_rpn(self, anchors, logits, gt_labels, deltas, gt_boxes)

    def getitem(self, key):
        out = real_getitem(self, key)
        if key.stream == 0:
            seen.append((row, "box_image", out["file_name"]))
        return out

    monkeypatch.setattr(FastRCNNOutputLayers, "box_reg_loss", box_reg_loss)
    monkeypatch.setattr(RPN, "losses", rpn_losses)
    monkeypatch.setattr(TwoStreamDataset, "__getitem__", getitem)
    for row in ROWS:
        _train(_cfg(row, tmp_path, "SOLVER.MAX_ITER", 8))
    by_row = {row: [(what, value) for r, what, value in seen if r == row] for row in ROWS}
    assert by_row["faster_rcnn"] == by_row["control"] == by_row["full"]
    assert sum(what == "roi_denominator" for what, _ in by_row["full"]) >= 2  # box iterations happened
    assert {value for what, value in by_row["full"] if what == "rpn_denominator"} == {4 * 256}


def test_a_model_without_image_level_losses_takes_caption_iterations_as_zero_gradient_steps(tmp_path, monkeypatch):
    read = []
    real_getitem = TwoStreamDataset.__getitem__
    monkeypatch.setattr(TwoStreamDataset, "__getitem__", lambda self, key: read.append(key) or real_getitem(self, key))
    trainer = CXRTrainer(_cfg("faster_rcnn", tmp_path, "SOLVER.MAX_ITER", 3, "DATALOADER.DATASET_RATIO", [0, 1],
                              "SOLVER.BASE_LR", 0.1, "SOLVER.WARMUP_ITERS", 0, "SOLVER.WEIGHT_DECAY", 0.1))
    trainer.resume_or_load(resume=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert all(key.stream == 1 and key.index == -1 for key in read) and len(read) >= 3  # no image was read
    assert not any(name.startswith("loss") for name in trainer.storage.histories())  # nothing was computed
    weight = "roi_heads.box_head.fc1.weight"
    delta = trainer.model.state_dict()[weight] - before[weight]
    # zero gradients: weight decay and momentum shrink every weight by one common factor
    factor = float(-(delta * before[weight]).sum() / (before[weight] ** 2).sum())
    assert 0.01 < factor < 0.2 and torch.allclose(delta, -factor * before[weight], atol=1e-6)


def test_a_resumed_two_stream_run_continues_exactly(tmp_path):
    whole = _train(_cfg("full", tmp_path / "whole", "SOLVER.MAX_ITER", 6))

    class Stop(Exception):
        pass

    class StopAfterIteration3(HookBase):
        def after_step(self):
            if self.trainer.iter == 3:
                raise Stop()

    interrupted = _trainer(_cfg("full", tmp_path / "cut", "SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 3))
    interrupted.resume_or_load(resume=False)
    interrupted.register_hooks([StopAfterIteration3()])
    with pytest.raises(Stop):
        interrupted.train()
    resumed = _train(_cfg("full", tmp_path / "cut", "SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 3), resume=True)
    assert resumed.start_iter == 3
    final, resumed_final = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(final[k], resumed_final[k]) for k in final)
