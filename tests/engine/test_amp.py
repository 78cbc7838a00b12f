"""engine/amp.py: mixed precision (bfloat16 autocast, the float16 loss scaler and its checkpointed state)."""
import math

import pytest
import torch
from conftest import CONFIGS, make_cfg

from cxr_codet.engine.amp import amp_dtype, build_train_loop, inference_autocast
from cxr_codet.engine.trainer import CXRTrainer

# The tiny training split at 96 px, 2 images per iteration, mixed precision on.
AMP = [
    "DATASETS.TEST", (), "INPUT.MIN_SIZE_TRAIN", (96,), "INPUT.MAX_SIZE_TRAIN", 96,
    "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", (1000,), "SOLVER.BASE_LR", 0.005,
    "SOLVER.LOG_PERIOD", 1, "SOLVER.AMP.ENABLED", True,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
]


def _cfg(name, output_dir, dtype="bfloat16", **extra):
    opts = AMP + ["SOLVER.AMP.DTYPE", dtype, "OUTPUT_DIR", str(output_dir)]
    for key, value in extra.items():
        opts += [key.replace("__", "."), value]
    cfg = make_cfg(CONFIGS / "phantom" / name, *opts)
    cfg.freeze()
    return cfg


def _train(cfg, resume=False):
    trainer = CXRTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def _losses(trainer):
    history = trainer.storage.histories()
    return {name: [value for value, _ in history[name].values()] for name in history if name.startswith("loss")}


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, branch_loss",
    [("faster_rcnn_R18_FPN_phantom.yaml", "loss_cls"), ("cxr_codet_R18_FPN_phantom.yaml", "loss_cooccurrence")],
)
def test_bfloat16_autocast_trains_both_models_with_finite_losses(config, branch_loss, tmp_path):
    trainer = _train(_cfg(config, tmp_path, SOLVER__MAX_ITER=3))
    assert type(trainer._trainer).__name__ == "AutocastAMPTrainer"
    assert trainer._trainer.dtype == torch.bfloat16 and not trainer._trainer.grad_scaler.is_enabled()
    losses = _losses(trainer)
    assert len(losses[branch_loss]) == 3
    assert all(math.isfinite(v) for values in losses.values() for v in values)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast keeps float32 weights


@pytest.mark.slow
def test_float16_loss_scaler_state_is_checkpointed_and_resumed(tmp_path):
    cfg = _cfg("faster_rcnn_R18_FPN_phantom.yaml", tmp_path, "float16", SOLVER__MAX_ITER=2,
               SOLVER__CHECKPOINT_PERIOD=100)
    first = _train(cfg)
    scaler = first._trainer.grad_scaler
    assert scaler.is_enabled()
    scaler.update(1024.0)  # a scale the fresh scaler (65536) does not have
    first.checkpointer.save("model_final")
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert saved["trainer"]["_trainer"]["grad_scaler"]["scale"] == 1024.0

    resumed = CXRTrainer(_cfg("faster_rcnn_R18_FPN_phantom.yaml", tmp_path, "float16", SOLVER__MAX_ITER=4))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == first.iter + 1 == 3
    assert resumed._trainer.grad_scaler.get_scale() == 1024.0
    resumed.train()
    assert all(math.isfinite(v) for values in _losses(resumed).values() for v in values)


@pytest.mark.slow
def test_bfloat16_checkpoint_resumes_into_a_float16_run_with_a_fresh_scaler(tmp_path):
    _train(_cfg("faster_rcnn_R18_FPN_phantom.yaml", tmp_path, "bfloat16", SOLVER__MAX_ITER=1))
    resumed = CXRTrainer(_cfg("faster_rcnn_R18_FPN_phantom.yaml", tmp_path, "float16", SOLVER__MAX_ITER=3))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 1  # model_final.pth of a 1-iteration run
    assert resumed._trainer.grad_scaler.get_scale() == 65536.0


def test_amp_off_keeps_the_float32_trainer_and_no_autocast(tmp_path):
    cfg = _cfg("faster_rcnn_R18_FPN_phantom.yaml", tmp_path, SOLVER__AMP__ENABLED=False)
    loop = build_train_loop(cfg, torch.nn.Linear(2, 2), iter([]), torch.optim.SGD([torch.zeros(1, requires_grad=True)], 0.1))
    assert type(loop).__name__ == "SimpleTrainer"
    with inference_autocast(cfg):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    amp_cfg = _cfg("faster_rcnn_R18_FPN_phantom.yaml", tmp_path)
    with inference_autocast(amp_cfg):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_unknown_amp_dtype_is_a_clear_error(tmp_path):
    cfg = _cfg("faster_rcnn_R18_FPN_phantom.yaml", tmp_path, "half")
    with pytest.raises(ValueError, match=r"SOLVER.AMP.DTYPE must be one of \['bfloat16', 'float16'\], got 'half'"):
        amp_dtype(cfg)


@pytest.mark.slow
def test_a_training_run_resumes_from_its_checkpoint_with_the_weights_only_loader(tmp_path, monkeypatch):
    cfg = _cfg("faster_rcnn_R18_FPN_phantom.yaml", tmp_path, "float16", SOLVER__MAX_ITER=2)
    first = _train(cfg)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real_load(*a, **k))
    resumed = CXRTrainer(_cfg("faster_rcnn_R18_FPN_phantom.yaml", tmp_path, "float16", SOLVER__MAX_ITER=3))
    resumed.resume_or_load(resume=True)
    assert calls == [True]
    assert resumed.start_iter == first.iter == 2  # model_final.pth of iteration 1
    final = dict(first.model.state_dict())
    assert all(torch.equal(final[k], v) for k, v in resumed.model.state_dict().items())
    resumed.train()
    assert resumed.iter == 3
