"""Mixed precision (SOLVER.AMP) on CPU: bfloat16 and float16 training steps of both phantom models through
CXRTrainer, finite losses, the float16 loss scaler's state through a checkpoint, and the co-occurrence
loss kept in float32 under autocast."""
import json
import math

import pytest
import torch
from torch.nn import functional as F

from cxr_codet.engine.amp import amp_dtype, build_train_loop, inference_autocast
from cxr_codet.config import build_cfg
from cxr_codet.engine.trainer import CXRTrainer
from cxr_codet.modeling.roi_heads.classifier import OpenVocabularyClassifier
from cxr_codet.modeling.roi_heads.co_occurrence_head import CoOccurrenceHead

from tiny_cxr_codet import CONFIGS

TINY = [
    "DATASETS.TRAIN", ("cxr_phantom_tiny_train",), "DATASETS.TEST", (),
    "INPUT.MIN_SIZE_TRAIN", (96,), "INPUT.MAX_SIZE_TRAIN", 96,
    "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", (1000,), "SOLVER.BASE_LR", 0.005,
    "SOLVER.LOG_PERIOD", 1, "DATALOADER.NUM_WORKERS", 0, "SOLVER.AMP.ENABLED", True,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
]


def _cfg(name, output_dir, dtype="bfloat16", **extra):
    opts = TINY + ["SOLVER.AMP.DTYPE", dtype, "OUTPUT_DIR", str(output_dir)]
    for key, value in extra.items():
        opts += [key.replace("__", "."), value]
    return build_cfg(str(CONFIGS / "phantom" / name), opts, cpu=True)


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


def test_cooccurrence_loss_stays_float32_under_autocast():
    """Under bfloat16 autocast the loss equals the float32 loss: similarity, softmax and BCE run in float32."""
    torch.manual_seed(0)
    head = CoOccurrenceHead(num_proposals=8, group_size=2, use_text_guidance=True, loss_weight=1.0)
    with torch.no_grad():
        head.sim_mlp.fc2.weight.normal_(std=1.0)  # scores that spread the softmax, unlike the 0.001 init
    classifier = OpenVocabularyClassifier(16, F.normalize(torch.randn(5, 16), dim=1), norm_temperature=50.0)
    # bfloat16-representable inputs, so that only the arithmetic's precision can differ.
    features = torch.randn(3, 2, 8, 16).to(torch.bfloat16)
    valid = torch.ones(3, 2, 8, dtype=torch.bool)
    concepts = torch.tensor([0, 2, 4])
    reference = head(features.float(), valid, concepts, classifier)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(features, valid, concepts, classifier)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(reference.item(), rel=1e-6)


def _report(train_a, train_b, eval_a, eval_b, device="cuda"):
    def entry(figures_a, figures_b, ratios):
        return {"A": {"median": figures_a}, "B": {"median": figures_b}, "B/A": ratios}

    return {
        "machine": {"device": device, "cpu": "x86", "gpu": "NVIDIA H200", "torch": "2.11"},
        "results": {
            "train": entry({"images_per_second": 2 / train_a}, {"images_per_second": 2 / train_b},
                           {"seconds_per_iteration": train_b / train_a}),
            "eval": entry({"seconds_per_image": eval_a}, {"seconds_per_image": eval_b},
                          {"seconds_per_image": eval_b / eval_a}),
        },
    }


def test_gpu_summary_puts_fp32_and_amp_figures_side_by_side(tmp_path, capsys):
    from cxr_codet.benchmark.cli import main
    from cxr_codet.benchmark.report import summary_rows

    fp32 = _report(0.2, 0.21, 0.03, 0.031)
    amp = _report(0.05, 0.06, 0.02, 0.022)  # 40 images/s, CoDet 1.2x per iteration, 1.1x inference
    rows = {row[0]: row[1:] for row in summary_rows(fp32, amp)}
    assert rows == {
        "baseline training images/s per process": ["10.00", "40.00"],
        "baseline inference s/image": ["0.0300", "0.0200"],
        "CXR-CoDet / baseline s/iteration": ["1.050", "1.200"],
        "CXR-CoDet / baseline inference s/image": ["1.033", "1.100"],
    }
    paths = []
    for name, report in (("fp32", fp32), ("amp", _report(0.05, 0.06, 0.02, 0.022, device="cpu"))):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(report))
    main(["--summarize", *map(str, paths)])
    printed = capsys.readouterr().out
    assert "Measured on NVIDIA H200 (device cpu, torch 2.11)" in printed
    assert "targets these figures are read against: docs/benchmarks.md" in printed
