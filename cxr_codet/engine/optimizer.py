"""The optimizer (cfg.SOLVER.OPTIMIZER: SGD or AdamW) with per-parameter learning-rate multipliers.

A module may carry its own LR factor as an `lr_multiplier` attribute (CoDet trains the similarity MLP at 0.1x
the base LR: `CoOccurrenceHead.lr_multiplier`, from MODEL.CO_OCCURRENCE.LR_MULTIPLIER), which scales every
parameter under it; SOLVER.LR_MULTIPLIERS entries [name_substring, factor] multiply the LR of every other
parameter whose full name contains the substring.
"""
import logging
from collections import defaultdict

import torch
from detectron2.solver.build import maybe_add_gradient_clipping

logger = logging.getLogger(__name__)

_NORM_TYPES = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm,
    torch.nn.LayerNorm,
    torch.nn.InstanceNorm2d,
)


def parse_lr_multipliers(entries):
    """Validate cfg.SOLVER.LR_MULTIPLIERS: a list of [name_substring, positive factor] pairs."""
    parsed = []
    for entry in entries:
        if len(entry) != 2 or not isinstance(entry[0], str):
            raise ValueError(
                f"SOLVER.LR_MULTIPLIERS entries must be [name_substring, factor]; got {entry!r}"
            )
        factor = float(entry[1])
        if factor <= 0:
            raise ValueError(f"SOLVER.LR_MULTIPLIERS factor for {entry[0]!r} must be > 0; got {factor}")
        parsed.append((entry[0], factor))
    return parsed


def module_lr_multipliers(model):
    """{parameter name: (module name, factor)} for the parameters under a module with an `lr_multiplier` attribute
    (the outermost such module decides)."""
    factors = {}
    for module_name, module in model.named_modules():
        factor = getattr(module, "lr_multiplier", None)
        if factor is None:
            continue
        for name, _ in module.named_parameters(prefix=module_name):
            factors.setdefault(name, (module_name, float(factor)))
    return factors


def optimizer_param_groups(cfg, model):
    """Parameter groups with the base LR times the module's own multiplier or every matching SOLVER.LR_MULTIPLIERS
    entry, and norm-aware weight decay.

    Raises when a SOLVER.LR_MULTIPLIERS entry matches no trainable parameter, so a misspelt name cannot go
    unnoticed, or matches one whose module sets its own multiplier, which would apply two factors.
    """
    multipliers = parse_lr_multipliers(cfg.SOLVER.LR_MULTIPLIERS)
    own = module_lr_multipliers(model)
    own_hits = defaultdict(int)
    hits = defaultdict(int)
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters(recurse=False)
    }
    groups = defaultdict(list)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = cfg.SOLVER.BASE_LR
        if name in own:
            module_name, factor = own[name]
            lr *= factor
            own_hits[(module_name, factor)] += 1
        for substring, factor in multipliers:
            if substring in name:
                if name in own:
                    raise ValueError(
                        f"SOLVER.LR_MULTIPLIERS entry {substring!r} matches {name}, whose module {own[name][0]} "
                        f"sets its own LR multiplier ({own[name][1]:g}, e.g. MODEL.CO_OCCURRENCE.LR_MULTIPLIER): "
                        "remove the entry"
                    )
                lr *= factor
                hits[substring] += 1
        if id(param) in norm_params:
            weight_decay = cfg.SOLVER.WEIGHT_DECAY_NORM
        elif name.endswith(".bias"):
            lr *= cfg.SOLVER.BIAS_LR_FACTOR
            weight_decay = cfg.SOLVER.WEIGHT_DECAY_BIAS
            if weight_decay is None:  # detectron2: None means "same as WEIGHT_DECAY"
                weight_decay = cfg.SOLVER.WEIGHT_DECAY
        else:
            weight_decay = cfg.SOLVER.WEIGHT_DECAY
        groups[(lr, weight_decay)].append(param)
    unmatched = [s for s, _ in multipliers if hits[s] == 0]
    if unmatched:
        raise ValueError(
            f"SOLVER.LR_MULTIPLIERS names {unmatched} match no trainable parameter of "
            f"{type(model).__name__}"
        )
    for (module_name, factor), count in own_hits.items():
        logger.info("LR x%g for %d parameter tensors of %s (its lr_multiplier)", factor, count, module_name)
    for substring, factor in multipliers:
        logger.info("LR x%g for %d parameter tensors matching %r", factor, hits[substring], substring)
    return [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]


# cfg.SOLVER.OPTIMIZER -> (optimizer class, its keyword arguments from cfg besides the parameter groups).
OPTIMIZERS = {
    "SGD": (torch.optim.SGD, lambda cfg: {"lr": cfg.SOLVER.BASE_LR, "momentum": cfg.SOLVER.MOMENTUM,
                                          "nesterov": cfg.SOLVER.NESTEROV}),
    "ADAMW": (torch.optim.AdamW, lambda cfg: {"lr": cfg.SOLVER.BASE_LR}),
}


def build_optimizer(cfg, model):
    """cfg.SOLVER.OPTIMIZER over `optimizer_param_groups`, with detectron2's optional gradient clipping."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name not in OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {sorted(OPTIMIZERS)}, got {cfg.SOLVER.OPTIMIZER!r}")
    optimizer_class, keyword_arguments = OPTIMIZERS[name]
    optimizer_class = maybe_add_gradient_clipping(cfg, optimizer_class)
    return optimizer_class(optimizer_param_groups(cfg, model), **keyword_arguments(cfg))
