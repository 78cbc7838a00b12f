"""Every shim that lets detectron2 v0.6's Python sources run on today's stack, in one place.

`pb1-detectron2==0.6` (see scripts/install_detectron2.sh) is detectron2 v0.6 without its C++ extension,
and v0.6 predates Pillow 10, NumPy 1.24 and setuptools without `pkg_resources`. `apply()` runs once, when `cxr_codet` is imported, before any detectron2 submodule that
needs a shim; each shim checks first and changes nothing where the stack already provides the thing
(a detectron2 built from source, an older Pillow, ...).
"""
import functools
import importlib
import importlib.resources
import logging
import sys
import time
import types
import warnings

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

class MissingExtensionError(AttributeError):
    """Raised when code reaches for an op of detectron2's C++ extension in an install without it."""


def _has_real_c_extension() -> bool:
    try:
        module = importlib.import_module("detectron2._C")
    except ImportError:
        return False
    return not getattr(module, "_cxr_codet_stub", False)


def _install_c_extension_stub() -> None:
    """Make `from detectron2 import _C` importable; using any of its ops raises a clear error.

    Only rotated boxes, deformable convolution and the fast COCO evaluator use `_C`; none of them are
    on the Faster R-CNN path, and evaluation falls back to pycocotools (see `HAS_C_EXTENSION`).
    """
    import detectron2

    stub = types.ModuleType("detectron2._C")
    stub._cxr_codet_stub = True
    # What detectron2.utils.collect_env (called by default_setup) asks of a built extension.
    stub.get_compiler_version = lambda: "none (installed without the C++ extension)"
    stub.get_cuda_version = lambda: "none (installed without the C++ extension)"
    stub.has_cuda = lambda: False

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise MissingExtensionError(
            f"detectron2._C.{name} is unavailable: this detectron2 was installed without its C++ "
            "extension (scripts/install_detectron2.sh). Build detectron2 from source to use rotated "
            "boxes, deformable convolution or the fast COCO evaluator."
        )

    stub.__getattr__ = __getattr__
    sys.modules["detectron2._C"] = stub
    detectron2._C = stub


def _silence_torchscript_deprecation() -> None:
    """Hide two torch deprecation warnings that v0.6 triggers on every run and that say nothing
    actionable to our users: `torch.jit.script` (called at import time) and `torch.meshgrid`."""
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    # v0.6's anchor generator calls torch.meshgrid without `indexing` (its "ij" default is what it wants).
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)


def _patch_pillow() -> None:
    """Pillow 10 removed `Image.LINEAR`, which detectron2.data.transforms uses as a default argument."""
    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR


def _patch_numpy() -> None:
    """NumPy 1.24 removed the `np.int`/`np.float`/`np.str` aliases that detectron2 v0.6 still uses
    (e.g. the class histogram in `detectron2.data.build`)."""
    for name, value in (("int", int), ("float", float), ("str", str), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, value)


def _install_pkg_resources() -> None:
    """setuptools >= 81 no longer ships `pkg_resources`; detectron2.model_zoo imports it for
    `resource_filename`, which `importlib.resources` provides."""
    try:
        importlib.import_module("pkg_resources")
        return
    except ImportError:
        pass
    module = types.ModuleType("pkg_resources")
    module._cxr_codet_stub = True

    def resource_filename(package: str, resource: str) -> str:
        return str(importlib.resources.files(package).joinpath(resource))

    module.resource_filename = resource_filename
    sys.modules["pkg_resources"] = module


def _clip_value_fails_without_gradients() -> bool:
    """True where `torch.nn.utils.clip_grad_value_` raises on a parameter that has no gradient (newer torch)."""
    try:
        torch.nn.utils.clip_grad_value_(torch.nn.Parameter(torch.zeros(1)), 1.0)
    except RuntimeError:
        return True
    return False


def _patch_gradient_clipping() -> None:
    """v0.6's gradient clipping calls the clipper once per parameter; newer torch raises in
    `clip_grad_value_` for a parameter without a gradient (one the loss did not reach), so every
    SOLVER.CLIP_GRADIENTS run with an unused parameter would crash. Skip such parameters."""
    from detectron2.solver import build as solver_build

    if getattr(solver_build._create_gradient_clipper, "_cxr_codet_patched", False):
        return
    if not _clip_value_fails_without_gradients():
        return
    create_clipper = solver_build._create_gradient_clipper

    def _create_gradient_clipper(cfg):
        clip = create_clipper(cfg)

        def clip_parameters_with_gradients(parameters):
            if isinstance(parameters, torch.Tensor):
                parameters = [parameters]
            with_gradients = [p for p in parameters if p.grad is not None]
            if with_gradients:
                clip(with_gradients)

        return clip_parameters_with_gradients

    _create_gradient_clipper._cxr_codet_patched = True
    solver_build._create_gradient_clipper = _create_gradient_clipper


@functools.lru_cache(maxsize=None)
def autocast_amp_trainer_class():
    """`AutocastAMPTrainer`: detectron2's AMPTrainer on any device, in float16 or bfloat16.

    v0.6's `AMPTrainer.run_step` asserts CUDA and autocasts with `torch.cuda.amp` in float16 only; this
    subclass runs the same step under `torch.autocast(device_type, dtype)` with a `torch.amp.GradScaler`
    enabled for float16 only (bfloat16 has float32's range and needs no loss scaling). The scaler state is
    saved under "grad_scaler" as in v0.6, so checkpoints stay interchangeable. Built on first call, since
    detectron2.engine may only be imported after `apply()`.
    """
    from detectron2.engine import AMPTrainer, SimpleTrainer

    class AutocastAMPTrainer(AMPTrainer):
        def __init__(self, model, data_loader, optimizer, *, device_type="cuda", dtype=torch.float16):
            grad_scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)
            super().__init__(model, data_loader, optimizer, grad_scaler=grad_scaler)
            self.device_type = device_type
            self.dtype = dtype

        def run_step(self):
            assert self.model.training, "[AutocastAMPTrainer] model was changed to eval mode!"
            start = time.perf_counter()
            data = next(self._data_loader_iter)
            data_time = time.perf_counter() - start
            with torch.autocast(device_type=self.device_type, dtype=self.dtype):
                loss_dict = self.model(data)
                if isinstance(loss_dict, torch.Tensor):
                    losses, loss_dict = loss_dict, {"total_loss": loss_dict}
                else:
                    losses = sum(loss_dict.values())
            self.optimizer.zero_grad()
            self.grad_scaler.scale(losses).backward()
            self._write_metrics(loss_dict, data_time)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()

        def load_state_dict(self, state_dict):
            """Also resumes a checkpoint without float16 scaler state (fp32 or bfloat16 run): the scaler
            then starts at its initial scale."""
            SimpleTrainer.load_state_dict(self, state_dict)
            scaler_state = state_dict.get("grad_scaler") or {}
            if not self.grad_scaler.is_enabled():
                return
            if scaler_state:
                self.grad_scaler.load_state_dict(scaler_state)
            else:
                logger.warning("Checkpoint has no float16 loss-scaler state; the scaler starts at its initial scale")

    return AutocastAMPTrainer


HAS_C_EXTENSION = False
_APPLIED = False


def apply() -> None:
    """Install every shim that this stack needs; idempotent."""
    global HAS_C_EXTENSION, _APPLIED
    if _APPLIED:
        return
    _silence_torchscript_deprecation()
    _patch_pillow()
    _patch_numpy()
    _install_pkg_resources()
    HAS_C_EXTENSION = _has_real_c_extension()
    if not HAS_C_EXTENSION:
        _install_c_extension_stub()
    _patch_gradient_clipping()
    _APPLIED = True
