"""Loading a checkpoint never runs code from it: detectron2's R-50.pkl, Detectron1/Caffe2 pickles and detectron2 /
Detic / CoDet / our own .pth files load; a file whose unpickling would call anything else is refused with one line
naming the file and the opt-in (MODEL.TRUST_CHECKPOINT_CODE or CXR_CODET_TRUST_CHECKPOINT_CODE), on every path that
loads weights (train_net, --eval-only, --resume, MODEL.INIT.WEIGHTS, the demo, the benchmark)."""
import os
import stat

import numpy as np
import pytest
import torch
from checkpoint_files import (
    C2_RESNET_BLOBS, arrays, caffe2_pkl, code_running_pkl, code_running_pth, codet_state, detector_pth, detic_state,
    r50_pkl,
)
from detectron2.config import get_cfg
from detectron2.modeling import build_resnet_backbone
from detectron2.layers import ShapeSpec
from tiny_cxr_codet import tiny_model

from cxr_codet.config import add_cxr_codet_config
from cxr_codet.engine.checkpoint import AtomicDetectionCheckpointer
from cxr_codet.modeling.checkpoint_init import load_detector_checkpoint, read_checkpoint
from cxr_codet.safe_checkpoint import (
    TRUST_ENV, UnreadableCheckpointError, UnsafeCheckpointError, detectron2_layout, load_checkpoint_file,
)

OPT_IN = "set MODEL.TRUST_CHECKPOINT_CODE True (or the environment variable CXR_CODET_TRUST_CHECKPOINT_CODE=1)"


@pytest.fixture(autouse=True)
def _untrusted(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


def _refused(path, call):
    with pytest.raises(UnsafeCheckpointError) as info:
        call()
    message = str(info.value)
    assert message.startswith(f"{path}: refused to load: unpickling it would call builtins.exec, which can run "
                              "arbitrary code") and message.endswith(f"if you trust it, {OPT_IN}"), message
    assert "\n" not in message
    return message


def test_real_layouts_load_with_their_values(tmp_path):
    r50 = load_checkpoint_file(r50_pkl(tmp_path / "R-50.pkl"))  # Python 2 pickle, numpy.core names, latin-1 strings
    assert sorted(r50) == ["__author__", "matching_heuristics", "model"] and r50["__author__"] == "Caffe2"
    expected = arrays(C2_RESNET_BLOBS)
    assert all(np.array_equal(r50["model"][k], v) and r50["model"][k].dtype == np.float32 for k, v in expected.items())
    c2 = detectron2_layout(str(tmp_path / "c2.pkl"), load_checkpoint_file(caffe2_pkl(tmp_path / "c2.pkl")))
    assert c2["__author__"] == "Caffe2" and c2["matching_heuristics"] and sorted(c2["model"]) == sorted(expected)
    for state in (detic_state(), codet_state()):
        loaded = load_checkpoint_file(detector_pth(tmp_path / "detector.pth", state))
        assert sorted(loaded) == ["iteration", "model", "optimizer", "scheduler"] and loaded["iteration"] == 90000
        assert all(torch.equal(loaded["model"][k], v) for k, v in state.items())
        assert loaded["optimizer"]["param_groups"][0]["momentum"] == 0.9
    torch.save({"model": {"w": np.ones(3, np.float32)}, "step": np.int64(4)}, tmp_path / "numpy.pth")
    with_numpy = load_checkpoint_file(tmp_path / "numpy.pth")
    assert np.array_equal(with_numpy["model"]["w"], np.ones(3)) and with_numpy["step"] == 4


@pytest.mark.parametrize("kind", ["detectron2.pkl", "caffe2.pkl", "detic.pth"])
def test_code_in_a_checkpoint_is_refused_unless_trusted(tmp_path, monkeypatch, kind):
    marker = tmp_path / "ran"
    path = tmp_path / kind
    if kind.endswith(".pkl"):
        code_running_pkl(path, marker, layout=kind.split(".")[0])
    else:
        code_running_pth(path, marker, detic_state())
    _refused(path, lambda: load_checkpoint_file(path))
    assert not marker.exists()
    load_checkpoint_file(path, trust_code=True)
    assert marker.read_text() == "ran"
    marker.unlink()
    monkeypatch.setenv(TRUST_ENV, "1")
    load_checkpoint_file(path)
    assert marker.exists()


def test_empty_truncated_and_foreign_files_give_one_clear_line(tmp_path):
    good = detector_pth(tmp_path / "good.pth", detic_state()).read_bytes()
    cases = {
        "empty.pth": (b"", "the file is empty"),
        "truncated.pth": (good[: len(good) // 2], "truncated or corrupt (PytorchStreamReader failed reading zip "
                                                   "archive: failed finding central directory)"),
        "notes.pth": (b"hello, not weights", "neither a file written by torch.save nor a pickle (it starts with "
                                             "b'hello, not weigh')"),
        "truncated.pkl": (r50_pkl(tmp_path / "r50.pkl").read_bytes()[:300], "the pickle ends early (truncated?)"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnreadableCheckpointError) as info:
            load_checkpoint_file(tmp_path / name)
        assert str(info.value) == f"{tmp_path / name}: not a readable checkpoint: {reason}"
    with pytest.raises(FileNotFoundError, match="checkpoint .*absent.pth does not exist"):
        load_checkpoint_file(tmp_path / "absent.pth")


def _r50_backbone():
    cfg = get_cfg()
    add_cxr_codet_config(cfg)
    cfg.MODEL.RESNETS.DEPTH = 50
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


def test_checkpointer_reads_r50_pkl_safely_and_refuses_code(tmp_path):
    model = _r50_backbone()
    AtomicDetectionCheckpointer(model).load(str(r50_pkl(tmp_path / "R-50.pkl")))
    blobs = arrays(C2_RESNET_BLOBS)
    assert torch.equal(model.stem.conv1.weight.detach(), torch.from_numpy(blobs["conv1_w"]))
    assert torch.equal(model.res2[0].shortcut.weight.detach(), torch.from_numpy(blobs["res2_0_branch1_w"]))
    marker = tmp_path / "ran"
    for layout in ("detectron2", "caffe2"):
        path = code_running_pkl(tmp_path / f"{layout}.pkl", marker, layout=layout)
        _refused(path, lambda: AtomicDetectionCheckpointer(_r50_backbone()).load(str(path)))
        assert not marker.exists()
    path = code_running_pth(tmp_path / "model.pth", marker, {})
    _refused(path, lambda: AtomicDetectionCheckpointer(_r50_backbone()).load(str(path)))
    assert not marker.exists()
    AtomicDetectionCheckpointer(_r50_backbone(), trust_code=True).load(str(path))
    assert marker.exists()


def test_init_weights_blocked_by_torch_are_not_loaded_fully(tmp_path):
    """checkpoint_init used to retry a file torch's weights-only loader refused with weights_only=False."""
    marker = tmp_path / "ran"
    model = tiny_model(tmp_path, c4=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = code_running_pth(tmp_path / "detic.pth", marker, state)
    _refused(path, lambda: load_detector_checkpoint(model, str(path)))
    pkl = code_running_pkl(tmp_path / "detic.pkl", marker)
    _refused(pkl, lambda: read_checkpoint(str(pkl)))
    assert not marker.exists()
    report = load_detector_checkpoint(model, str(path), trust_code=True)
    assert marker.exists() and len(report.matched) > 10


def test_our_own_checkpoints_are_written_with_the_umask_mode_and_resume_safely(tmp_path):
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    old_umask = os.umask(0o022)
    try:
        AtomicDetectionCheckpointer(net, str(tmp_path), optimizer=optimizer).save("model_0000004", iteration=4)
    finally:
        os.umask(old_umask)
    for name in ("model_0000004.pth", "last_checkpoint"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    extra = AtomicDetectionCheckpointer(fresh, str(tmp_path), optimizer=fresh_optimizer).resume_or_load("", resume=True)
    assert extra["iteration"] == 4 and torch.equal(fresh.weight, net.weight)
    assert fresh_optimizer.state_dict()["state"][0]["momentum_buffer"].shape == (2, 3)


def test_class_embedding_files_never_unpickle_and_name_the_file(tmp_path):
    from cxr_codet.modeling.text.precomputed import load_class_embeddings

    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError) as info:
        load_class_embeddings(str(tmp_path / "objects.npy"), 2)
    assert str(info.value) == (f"embedding file {tmp_path / 'objects.npy'} holds Python objects, which are read only "
                               "as pickles (never done here); save the C x D matrix as a float array")
    marker = tmp_path / "ran"
    code_running_pth(tmp_path / "classes.pt", marker, {})
    refusal = r"classes.pt: refused to load: .*builtins.exec.*re-save its weights as plain tensors or arrays$"
    with pytest.raises(UnsafeCheckpointError, match=refusal):
        load_class_embeddings(str(tmp_path / "classes.pt"), 2)
    assert not marker.exists()
    torch.save(np.eye(3, dtype=np.float32), tmp_path / "numpy_matrix.pt")
    assert torch.equal(load_class_embeddings(str(tmp_path / "numpy_matrix.pt"), 3), torch.eye(3))
    (tmp_path / "cut.pt").write_bytes(detector_pth(tmp_path / "whole.pt", detic_state()).read_bytes()[:2000])
    with pytest.raises(UnreadableCheckpointError, match=r"cut.pt: not a readable checkpoint: truncated or corrupt"):
        load_class_embeddings(str(tmp_path / "cut.pt"), 2)


def test_a_truncated_embedding_cache_entry_is_recomputed(tmp_path, caplog):
    from cxr_codet.modeling.text.embedding_cache import EmbeddingCache

    cache = EmbeddingCache(str(tmp_path))
    identity = {"spec": {"backend": "hash"}, "texts": [["Nodule"]]}
    path = cache.save(identity, torch.ones(1, 4))
    assert torch.equal(cache.load(identity), torch.ones(1, 4))
    path.write_bytes(path.read_bytes()[:100])
    assert cache.load(identity) is None
    assert f"Text embedding cache {path} cannot be read" in caplog.text and "recomputing" in caplog.text
