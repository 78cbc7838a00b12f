"""Small checkpoint files in the real key layouts of detectron2's R-50.pkl, Detectron1/Caffe2 pickles and the
.pth files of detectron2, Detic and CoDet, plus files whose unpickling runs code (a marker file shows it ran)."""
import pickle
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

# Caffe2 names of an MSRA ResNet stem and first block, as in detectron2's ImageNetPretrained/MSRA/R-50.pkl.
C2_RESNET_BLOBS = {
    "conv1_w": (64, 3, 7, 7), "res_conv1_bn_s": (64,), "res_conv1_bn_b": (64,),
    "res2_0_branch2a_w": (64, 64, 1, 1), "res2_0_branch2a_bn_s": (64,), "res2_0_branch2a_bn_b": (64,),
    "res2_0_branch1_w": (256, 64, 1, 1), "res2_0_branch1_bn_s": (256,), "res2_0_branch1_bn_b": (256,),
}


def arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


class _Python2Pickler(pickle._Pickler):
    """Writes byte strings as Python 2's str opcodes (SHORT_BINSTRING / BINSTRING), as in pickles made by
    Python 2 (R-50.pkl), which Python 3 reads with encoding="latin1"."""

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def python2_style_pickle(obj, path: Path) -> Path:
    """`obj` pickled as Python 2 with numpy 1 wrote it: protocol 2, str opcodes, numpy.core module names."""
    import io

    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.write_bytes(data)
    return path


def r50_pkl(path: Path) -> Path:
    """detectron2's R-50.pkl layout: {"model": {C2 name: float32 array}, "__author__", "matching_heuristics"}."""
    return python2_style_pickle({"model": arrays(C2_RESNET_BLOBS), "__author__": "Caffe2",
                                 "matching_heuristics": True}, path)


def caffe2_pkl(path: Path) -> Path:
    """A Detectron1/Caffe2 detection pickle: {"blobs": {name: array, name_momentum: array}, "cfg": yaml text}."""
    blobs = arrays(C2_RESNET_BLOBS)
    blobs["conv1_w_momentum"] = np.zeros((64, 3, 7, 7), np.float32)
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs, "cfg": "MODEL:\n  TYPE: generalized_rcnn\n"}, f, protocol=2)
    return path


def _optimizer_state(params):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    return optimizer.state_dict()


def detector_pth(path: Path, state: dict, iteration: int = 90000) -> Path:
    """A detectron2/Detic/CoDet training checkpoint: model, optimizer, scheduler (torch LR scheduler state as
    detectron2's LRMultiplier keeps it), iteration."""
    torch.save({
        "model": OrderedDict((k, v) for k, v in state.items()),
        "optimizer": _optimizer_state(state),
        "scheduler": {"base_lrs": [0.02], "last_epoch": iteration, "_step_count": iteration + 1,
                      "verbose": False, "_get_lr_called_within_step": False, "_last_lr": [0.0002]},
        "iteration": iteration,
    }, path)
    return path


def detic_state():
    """Keys of a Detic (CenterNet2 cascade, zero-shot classifier) checkpoint."""
    torch.manual_seed(0)
    return {
        "backbone.bottom_up.stem.conv1.weight": torch.randn(64, 3, 7, 7),
        "roi_heads.box_predictor.0.cls_score.linear.weight": torch.randn(512, 1024),
        "roi_heads.box_predictor.0.cls_score.zs_weight": torch.randn(512, 1204),
        "roi_heads.box_predictor.0.freq_weight": torch.rand(1203),
        "roi_heads.box_head.0.fc1.weight": torch.randn(1024, 12544),
    }


def codet_state():
    """Keys of a CoDet checkpoint (similarity MLP fc1/fc2 and its weight_transform alias)."""
    torch.manual_seed(1)
    return {
        "backbone.bottom_up.stem.conv1.weight": torch.randn(64, 3, 7, 7),
        "roi_heads.box_predictor.0.fc1.weight": torch.randn(256, 512),
        "roi_heads.box_predictor.0.fc2.weight": torch.randn(1, 256),
        "roi_heads.box_predictor.0.weight_transform.0.weight": torch.randn(256, 512),
        "roi_heads.box_predictor.0.cls_score.detection_weight": torch.randn(512, 66),
    }


class _RunsCode:
    """Unpickling this calls exec(), which writes `marker`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def code_running_pkl(path: Path, marker: Path, layout="detectron2") -> Path:
    """A .pkl in detectron2's model-zoo layout (or Caffe2 blobs) whose unpickling writes `marker`."""
    payload = {"model": arrays(C2_RESNET_BLOBS), "__author__": _RunsCode(marker), "matching_heuristics": True}
    if layout == "caffe2":
        payload = {"blobs": {**arrays(C2_RESNET_BLOBS), "x": _RunsCode(marker)}}
    with open(path, "wb") as f:
        pickle.dump(payload, f)
    return path


def code_running_pth(path: Path, marker: Path, state: dict) -> Path:
    """A torch checkpoint of `state` whose unpickling writes `marker` (torch's weights-only loader blocks it)."""
    torch.save({"model": state, "iteration": 5, "extra": _RunsCode(marker)}, path)
    return path
