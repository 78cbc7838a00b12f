"""engine/checkpoint.py: checkpoints are written atomically."""
import os

import pytest
import torch

from cxr_codet.engine import checkpoint as checkpoint_module
from cxr_codet.engine.checkpoint import AtomicDetectionCheckpointer


def _net():
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GroupNorm(1, 4))


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    net = _net()
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
    loaded = AtomicDetectionCheckpointer(_net(), save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert loaded["iteration"] == 9
