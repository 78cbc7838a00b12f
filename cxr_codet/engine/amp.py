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
from ..data.streams import is_placeholder

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


class _PushBackIterator:
    """An iterator that can take its last item back (the placeholder check peeks at a batch)."""

    def __init__(self, iterator):
        self._iterator, self._pending = iterator, []

    def __iter__(self):
        return self

    def __next__(self):
        return self._pending.pop() if self._pending else next(self._iterator)

    def push_back(self, item) -> None:
        self._pending.append(item)


class PlaceholderStepsMixin:
    """A training loop (before SimpleTrainer or the AMP trainer in the bases) that takes a caption-stream placeholder
    (data/streams.py: the caption iteration of a model with no image-level loss) as an optimizer step on zero
    gradients, i.e. what a zero-weighted loss would backpropagate: momentum and weight decay move the weights as in
    the model that trains on that batch, and the LR schedule keeps its iterations, with no forward pass."""

    def __init__(self, *args, **kwargs):
        self._peekable_iter = None
        super().__init__(*args, **kwargs)

    # detectron2 v0.6 sets `_data_loader_iter` in __init__, later versions create it on first use: this property
    # serves both, wrapping whatever iterator the loop reads.
    @property
    def _data_loader_iter(self):
        if self._peekable_iter is None:
            self._peekable_iter = _PushBackIterator(iter(self.data_loader))
        return self._peekable_iter

    @_data_loader_iter.setter
    def _data_loader_iter(self, iterator):
        self._peekable_iter = None if iterator is None else _PushBackIterator(iterator)

    def reset_data_iterator(self) -> None:
        """Start reading the loader again, now (after its sampler was moved to a resumed run's iteration)."""
        self._peekable_iter = _PushBackIterator(iter(self.data_loader))

    def run_step(self):
        batch = next(self._data_loader_iter)
        if not is_placeholder(batch):
            self._data_loader_iter.push_back(batch)
            return super().run_step()
        self.optimizer.zero_grad()
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                if param.requires_grad:
                    param.grad = torch.zeros_like(param)
        self.optimizer.step()


_LOOPS = {}


def _with_placeholder_steps(loop_class):
    """`loop_class` with PlaceholderStepsMixin in front (one class per loop class)."""
    if loop_class not in _LOOPS:
        _LOOPS[loop_class] = type(loop_class.__name__, (PlaceholderStepsMixin, loop_class), {})
    return _LOOPS[loop_class]


def build_train_loop(cfg, model, data_loader, optimizer):
    """SimpleTrainer, or the AMP trainer autocasting to SOLVER.AMP.DTYPE when SOLVER.AMP.ENABLED; either takes the
    two-stream loader's caption placeholders as zero-gradient steps (PlaceholderStepsMixin)."""
    if not cfg.SOLVER.AMP.ENABLED:
        return _with_placeholder_steps(SimpleTrainer)(model, data_loader, optimizer)
    dtype, device_type = amp_dtype(cfg), _device_type(cfg)
    if device_type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError("SOLVER.AMP.DTYPE bfloat16 needs a GPU with bfloat16 support (Ampere or newer); use float16")
    if device_type == "cpu" and dtype == torch.float16:
        logger.warning("float16 autocast on CPU is slower than float32; bfloat16 is the CPU mixed precision")
    logger.info("Mixed precision: autocast to %s on %s%s", cfg.SOLVER.AMP.DTYPE, device_type,
                " with loss scaling" if dtype == torch.float16 else "")
    return _with_placeholder_steps(autocast_amp_trainer_class())(model, data_loader, optimizer, device_type=device_type,
                                                                 dtype=dtype)


def inference_autocast(cfg):
    """A context for inference: autocast to SOLVER.AMP.DTYPE when SOLVER.AMP.ENABLED, else nothing."""
    if not cfg.SOLVER.AMP.ENABLED:
        return contextlib.nullcontext()
    return torch.autocast(device_type=_device_type(cfg), dtype=amp_dtype(cfg))
