"""A DetectionCheckpointer whose files are never left half-written, and that reads torchvision ResNets.

fvcore writes `model_XXXX.pth` in place and then the `last_checkpoint` tag; a process killed during
the write leaves a truncated file that `--resume` would then try to load. We write to a temporary
file in the same folder and `os.replace` it (atomic on POSIX), the checkpoint first and the tag after.

Every file is read by `cxr_codet.safe_checkpoint` (no code in a pickle runs unless MODEL.TRUST_CHECKPOINT_CODE),
then interpreted as detectron2 does (model-zoo pickles, Detectron1/Caffe2 blobs, pycls, .pth). Files are written
with the mode the umask gives new files (0644 under umask 022), so teammates can read, evaluate and resume a run.

A torchvision ImageNet ResNet (`resnet50-*.pth`, keys `layer1.0.conv1.weight`) given as MODEL.WEIGHTS is renamed
onto detectron2's ResNet (modeling/backbone/torchvision_resnet.py) and matched by detectron2's name heuristics,
as its own R-50.pkl is.
"""
import os
import tempfile

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm

from ..modeling.backbone.torchvision_resnet import is_torchvision_resnet, torchvision_to_detectron2_resnet
from ..safe_checkpoint import detectron2_layout, load_checkpoint_file


def _umask_mode() -> int:
    """The mode open() gives a new file under the process's umask (0o666 & ~umask)."""
    try:  # Linux names the umask without changing it (os.umask would, for a moment, in every thread)
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o077)
        os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: str, write) -> None:
    """Call `write(fileobj)` on a temporary file beside `path`, then move it onto `path`."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.basename(path), dir=folder)
    try:
        os.fchmod(fd, _umask_mode())  # mkstemp makes files 0600, whatever the umask
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic `save` and `tag_last_checkpoint`, safe reading (`trust_code`: unpickle
    fully, for files that need it; see cxr_codet/safe_checkpoint.py), and torchvision ResNets too."""

    def __init__(self, model, save_dir: str = "", *, trust_code: bool = False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.trust_code = trust_code

    def _load_file(self, filename: str):
        loaded = detectron2_layout(filename, load_checkpoint_file(filename, trust_code=self.trust_code))
        model = loaded.get("model")
        if isinstance(model, dict) and not loaded.get("matching_heuristics") and is_torchvision_resnet(model):
            self.logger.info("%s is a torchvision ResNet: renaming its keys onto detectron2's ResNet", filename)
            return {"model": torchvision_to_detectron2_resnet(model), "__author__": "torchvision",
                    "matching_heuristics": True}
        return loaded

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not comm.is_main_process() and not self.save_to_disk:
            return
        path = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))
