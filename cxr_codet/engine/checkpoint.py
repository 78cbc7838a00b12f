"""A DetectionCheckpointer whose files are never left half-written.

fvcore writes `model_XXXX.pth` in place and then the `last_checkpoint` tag; a process killed during
the write leaves a truncated file that `--resume` would then try to load. We write to a temporary
file in the same folder and `os.replace` it (atomic on POSIX), the checkpoint first and the tag after.
"""
import os
import tempfile

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm


def _atomic_write(path: str, write) -> None:
    """Call `write(fileobj)` on a temporary file beside `path`, then move it onto `path`."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.basename(path), dir=folder)
    try:
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
    """DetectionCheckpointer with atomic `save` and `tag_last_checkpoint`."""

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
