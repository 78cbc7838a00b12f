"""engine/optimizer.py: per-parameter LR multipliers (a module's own, SOLVER.LR_MULTIPLIERS) and the optimizer
choice."""
import pytest
import torch
from conftest import make_cfg

from cxr_codet.engine.optimizer import build_optimizer


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(4, 4)
        self.norm = torch.nn.GroupNorm(1, 4)
        self.sim_mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))


def _cfg(**solver):
    cfg = make_cfg(tiny=False)
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
