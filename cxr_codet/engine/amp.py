"""Mixed precision: which training loop and autocast context cfg.SOLVER.AMP asks for.

SOLVER.AMP.ENABLED selects detectron2's AMP training step (`compat.autocast_amp_trainer_class`) on the
device of MODEL.DEVICE; SOLVER.AMP.DTYPE picks float16 (with loss scaling) or bfloat16 (without). On CPU
only bfloat16 autocast speeds anything up; float16 runs there too, which is how its scaler is tested.
"""
import contextlib
import logging

import torch
from detectron2.engine import SimpleTrainer

from ..compat import autocast_amp_trainer_class

logger = logging.getLogger(__name__)

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_dtype(cfg) -> torch.dtype:
    """The torch dtype named by cfg.SOLVER.AMP.DTYPE (a clear error naming the key otherwise)."""
    name = cfg.SOLVER.AMP.DTYPE
    if name not in AMP_DTYPES:
        raise ValueError(f"SOLVER.AMP.DTYPE must be one of {sorted(AMP_DTYPES)}, got {name!r}")
    return AMP_DTYPES[name]


def _device_type(cfg) -> str:
    return torch.device(cfg.MODEL.DEVICE).type


def build_train_loop(cfg, model, data_loader, optimizer):
    """SimpleTrainer, or the AMP trainer autocasting to SOLVER.AMP.DTYPE when SOLVER.AMP.ENABLED."""
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer)
    dtype, device_type = amp_dtype(cfg), _device_type(cfg)
    if device_type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError("SOLVER.AMP.DTYPE bfloat16 needs a GPU with bfloat16 support (Ampere or newer); use float16")
    if device_type == "cpu" and dtype == torch.float16:
        logger.warning("float16 autocast on CPU is slower than float32; bfloat16 is the CPU mixed precision")
    logger.info("Mixed precision: autocast to %s on %s%s", cfg.SOLVER.AMP.DTYPE, device_type,
                " with loss scaling" if dtype == torch.float16 else "")
    return autocast_amp_trainer_class()(model, data_loader, optimizer, device_type=device_type, dtype=dtype)


def inference_autocast(cfg):
    """A context for inference: autocast to SOLVER.AMP.DTYPE when SOLVER.AMP.ENABLED, else nothing."""
    if not cfg.SOLVER.AMP.ENABLED:
        return contextlib.nullcontext()
    return torch.autocast(device_type=_device_type(cfg), dtype=amp_dtype(cfg))
