"""Per-parameter LR multipliers and the atomic checkpointer."""
import os

import pytest
import torch
from detectron2.config import get_cfg

from cxr_codet.config import add_cxr_codet_config
from cxr_codet.engine import checkpoint as checkpoint_module
from cxr_codet.engine.checkpoint import AtomicDetectionCheckpointer
from cxr_codet.engine.optimizer import build_optimizer


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(4, 4)
        self.norm = torch.nn.GroupNorm(1, 4)
        self.sim_mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))


def _cfg(**solver):
    cfg = get_cfg()
    add_cxr_codet_config(cfg)
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _lr_of(optimizer, param):
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group["lr"], group["weight_decay"]
    raise AssertionError("parameter not in optimizer")


def test_lr_multiplier_hits_only_matching_parameters():
    net = _Net()
    opt = build_optimizer(_cfg(LR_MULTIPLIERS=[["sim_mlp", 0.1]]), net)
    assert _lr_of(opt, net.sim_mlp[0].weight) == (pytest.approx(0.01), 1e-4)
    assert _lr_of(opt, net.sim_mlp[2].bias)[0] == pytest.approx(0.01)
    assert _lr_of(opt, net.backbone.weight) == (pytest.approx(0.1), 1e-4)
    assert _lr_of(opt, net.norm.weight) == (pytest.approx(0.1), 0.0)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


class _NetWithOwnFactor(_Net):
    def __init__(self):
        super().__init__()
        self.sim_mlp.lr_multiplier = 0.5  # as CoOccurrenceHead carries MODEL.CO_OCCURRENCE.LR_MULTIPLIER


def test_a_module_s_own_lr_multiplier_scales_its_parameters_and_excludes_solver_entries():
    net = _NetWithOwnFactor()
    opt = build_optimizer(_cfg(LR_MULTIPLIERS=[["backbone", 0.2]]), net)
    assert _lr_of(opt, net.sim_mlp[0].weight)[0] == pytest.approx(0.05)
    assert _lr_of(opt, net.sim_mlp[2].bias)[0] == pytest.approx(0.05)
    assert _lr_of(opt, net.backbone.weight)[0] == pytest.approx(0.02)
    with pytest.raises(ValueError, match=r"SOLVER.LR_MULTIPLIERS entry 'sim_mlp' matches sim_mlp.0.weight, whose "
                                         r"module sim_mlp sets its own LR multiplier \(0.5"):
        build_optimizer(_cfg(LR_MULTIPLIERS=[["sim_mlp", 0.1]]), _NetWithOwnFactor())


def test_lr_multiplier_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match=r"\['sim_mpl'\] match no trainable parameter"):
        build_optimizer(_cfg(LR_MULTIPLIERS=[["sim_mpl", 0.1]]), _Net())


def test_lr_multiplier_bad_entry():
    with pytest.raises(ValueError, match="must be > 0"):
        build_optimizer(_cfg(LR_MULTIPLIERS=[["sim_mlp", 0.0]]), _Net())


def test_optimizer_choice_keeps_the_multipliers_and_clipping():
    torch.manual_seed(0)  # an unseeded init can leave every ReLU of sim_mlp dead: no gradient to clip
    net = _Net()
    sgd = build_optimizer(_cfg(MOMENTUM=0.9), net)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    cfg = _cfg(OPTIMIZER="AdamW", LR_MULTIPLIERS=[["sim_mlp", 0.1]])
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True  # "value" clipping at 1.0
    adamw = build_optimizer(cfg, net)
    assert _lr_of(adamw, net.sim_mlp[0].weight) == (pytest.approx(0.01), 1e-4)
    assert _lr_of(adamw, net.backbone.weight) == (pytest.approx(0.1), 1e-4)
    loss = 100 * net.sim_mlp(net.backbone(torch.ones(2, 4))).sum()
    loss.backward()
    before = net.backbone.weight.detach().clone()
    adamw.step()
    gradient = net.backbone.weight.grad
    assert gradient.abs().max() == pytest.approx(1.0)  # clipped in place before the step
    assert set(adamw.state[net.backbone.weight]) >= {"exp_avg", "exp_avg_sq"}  # Adam moments, not SGD momentum
    # Adam's first step moves every weight with a gradient by the learning rate, whatever the gradient's size.
    step = (before - net.backbone.weight.detach()).abs()[gradient != 0]
    torch.testing.assert_close(step, torch.full_like(step, 0.1), rtol=0, atol=1e-3)


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match=r"SOLVER.OPTIMIZER must be one of \['ADAMW', 'SGD'\], got 'Adam'"):
        build_optimizer(_cfg(OPTIMIZER="Adam"), _Net())


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    net = _Net()
    ckpt = AtomicDetectionCheckpointer(net, save_dir=str(tmp_path))
    ckpt.save("model_0000009", iteration=9)
    good = (tmp_path / "model_0000009.pth").read_bytes()

    def crash_mid_write(data, f):
        f.write(b"partial")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000009", iteration=19)
    assert (tmp_path / "model_0000009.pth").read_bytes() == good
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    monkeypatch.undo()
    loaded = AtomicDetectionCheckpointer(_Net(), save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert loaded["iteration"] == 9
