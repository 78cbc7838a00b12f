"""Initialising CXR-CoDet from detectron2, Detectron1/Caffe2, Detic and CoDet checkpoints the tests write."""
import logging
import pickle

import pytest
import torch
from tiny_cxr_codet import tiny_cfg, tiny_model

from cxr_codet.modeling.checkpoint_init import init_from_cfg, load_detector_checkpoint, reinitialize_modules

PROJ = "roi_heads.box_predictor.cls_score.proj"


MLP = "roi_heads.co_occurrence.sim_mlp"


VOCABULARY = "roi_heads.box_predictor.cls_score.class_embeddings"


def _source_state(tmp_path, c4=True, seed=1):
    """State dict of a tiny model with other random weights than the target's (seed 0)."""
    torch.manual_seed(seed)
    model = tiny_model(tmp_path, c4=c4)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)  # make every tensor differ from a fresh init
    return {k: v.clone() for k, v in model.state_dict().items()}


# Key names of Detic's and CoDet's released OV-COCO checkpoints, from their model definitions: the box
# predictor (Detic detic_fast_rcnn.py / CoDet codet_fast_rcnn.py) holds `cls_score` (zero_shot_classifier.py:
# `linear`, buffer `zs_weight` D x (C + 1), CoDet also `detection_weight`), `bbox_pred` (Linear, ReLU, Linear),
# Detic a `freq_weight` buffer (IGNORE_ZERO_CATS in Base_OVCOCO_C4_1x.yaml), CoDet `fc1`/`fc2` and their
# alias `weight_transform` (Sequential fc1, ReLU, fc2, Flatten, Softmax); CustomRCNN with WITH_CAPTION keeps
# the frozen CLIP text encoder (text/text_encoder.py, CLIPTEXT) under `text_encoder.`.
COCO_CLASSES = 80


CLIP_TEXT_KEYS = [
    "text_encoder.positional_embedding", "text_encoder.text_projection", "text_encoder.token_embedding.weight",
    "text_encoder.ln_final.weight", "text_encoder.ln_final.bias",
    "text_encoder.transformer.resblocks.0.attn.in_proj_weight", "text_encoder.transformer.resblocks.0.attn.in_proj_bias",
    "text_encoder.transformer.resblocks.0.attn.out_proj.weight", "text_encoder.transformer.resblocks.0.mlp.c_fc.weight",
    "text_encoder.transformer.resblocks.0.mlp.c_proj.weight", "text_encoder.transformer.resblocks.0.ln_1.weight",
]


def _detic_layout(state, num_classes=COCO_CLASSES):
    """Our keys renamed to Detic's OV-COCO checkpoint: cls_score.linear, zs_weight, freq_weight, CLIP text encoder."""
    out = {}
    for key, value in state.items():
        if key.startswith(MLP) or key == VOCABULARY:
            continue
        out[key.replace(".cls_score.proj.", ".cls_score.linear.")] = value
    dim = state[f"{PROJ}.weight"].shape[0]
    out["roi_heads.box_predictor.cls_score.zs_weight"] = torch.randn(dim, num_classes + 1)
    out["roi_heads.box_predictor.freq_weight"] = torch.rand(num_classes)
    out.update({key: torch.randn(4, 4) for key in CLIP_TEXT_KEYS})
    return out


def _codet_layout(state, num_classes=COCO_CLASSES):
    """CoDet's OV-COCO checkpoint: Detic's keys without freq_weight, plus cls_score.detection_weight and the
    similarity MLP as box_predictor.fc1/fc2, aliased by box_predictor.weight_transform.0/.2."""
    out = _detic_layout(state, num_classes)
    del out["roi_heads.box_predictor.freq_weight"]
    out["roi_heads.box_predictor.cls_score.detection_weight"] = torch.randn_like(
        out["roi_heads.box_predictor.cls_score.zs_weight"])
    for index, layer in ((0, "fc1"), (2, "fc2")):
        for kind in ("weight", "bias"):
            value = state[f"{MLP}.{layer}.{kind}"]
            out[f"roi_heads.box_predictor.{layer}.{kind}"] = value
            out[f"roi_heads.box_predictor.weight_transform.{index}.{kind}"] = value
    return out


def test_detic_checkpoint_maps_projection_and_drops_its_vocabulary(tmp_path):
    source = _source_state(tmp_path)
    path = tmp_path / "detic.pth"
    torch.save({"model": _detic_layout(source), "iteration": 90000}, path)
    model = tiny_model(tmp_path, c4=True)
    fresh_mlp = model.roi_heads.co_occurrence.sim_mlp.fc1.weight.detach().clone()
    report = load_detector_checkpoint(model, str(path)).as_dict()
    assert report["layout"] == "detic"
    assert report["renamed"]["roi_heads.box_predictor.cls_score.linear.weight"] == f"{PROJ}.weight"
    assert f"{PROJ}.weight" in report["matched"] and "roi_heads.res5.0.conv1.weight" in report["matched"]
    assert "source detector's vocabulary" in report["dropped"]["roi_heads.box_predictor.cls_score.zs_weight"]
    assert "class frequencies" in report["dropped"]["roi_heads.box_predictor.freq_weight"]
    assert all("CLIP text encoder" in report["dropped"][key] for key in CLIP_TEXT_KEYS)
    mlp_keys = {f"{MLP}.{layer}.{kind}" for layer in ("fc1", "fc2") for kind in ("weight", "bias")}
    assert set(report["missing"]) == mlp_keys | {VOCABULARY}
    assert report["unexpected"] == [] and report["shape_mismatched"] == {}
    state = model.state_dict()
    assert torch.equal(state[f"{PROJ}.weight"], source[f"{PROJ}.weight"])
    assert torch.equal(state["backbone.res4.0.conv1.weight"], source["backbone.res4.0.conv1.weight"])
    box_regression = "roi_heads.box_predictor.bbox_pred.2.weight"
    assert torch.equal(state[box_regression], source[box_regression])
    assert torch.equal(model.roi_heads.co_occurrence.sim_mlp.fc1.weight, fresh_mlp)  # Detic has no MLP


def test_codet_checkpoint_loads_the_mlp_unless_it_is_reinitialised(tmp_path):
    source = _source_state(tmp_path)
    path = tmp_path / "codet.pth"
    torch.save({"model": _codet_layout(source)}, path)

    model = tiny_model(tmp_path, c4=True)
    report = load_detector_checkpoint(model, str(path))
    assert report.layout == "codet"
    assert report.renamed["roi_heads.box_predictor.fc1.weight"] == f"{MLP}.fc1.weight"
    assert "alias" in report.dropped["roi_heads.box_predictor.weight_transform.0.weight"]
    assert "vocabulary" in report.dropped["roi_heads.box_predictor.cls_score.detection_weight"]
    assert torch.equal(model.roi_heads.co_occurrence.sim_mlp.fc2.bias, source[f"{MLP}.fc2.bias"])
    assert report.missing == [VOCABULARY]
    assert report.unexpected == [] and report.shape_mismatched == {}
    assert len(report.matched) == len(source) - 1  # every tensor of ours but the vocabulary

    reset = tiny_model(tmp_path, c4=True)
    report = load_detector_checkpoint(reset, str(path), reinit_modules=["roi_heads.co_occurrence"])
    mlp = reset.roi_heads.co_occurrence.sim_mlp
    assert report.reinitialized == ["roi_heads.co_occurrence"]
    assert not torch.equal(mlp.fc1.weight, source[f"{MLP}.fc1.weight"])
    assert torch.count_nonzero(mlp.fc2.bias) == 0 and mlp.fc2.weight.abs().max() < 0.01  # CoDet's init again
    assert torch.equal(reset.state_dict()[f"{PROJ}.weight"], source[f"{PROJ}.weight"])  # the rest stays loaded


def test_cascade_checkpoint_uses_the_configured_stage(tmp_path):
    source = _source_state(tmp_path, c4=False)
    cascade = {}
    for key, value in _detic_layout(source).items():
        for head in ("box_head", "box_predictor"):
            prefix = f"roi_heads.{head}."
            if key.startswith(prefix):
                for stage in range(3):
                    cascade[f"{prefix}{stage}.{key[len(prefix):]}"] = value + stage
                break
        else:
            cascade[key] = value
    path = tmp_path / "detic_lvis.pth"
    torch.save({"model": cascade}, path)
    model = tiny_model(tmp_path, c4=False)
    report = load_detector_checkpoint(model, str(path), cascade_stage=1)
    fc1 = "roi_heads.box_head.fc1.weight"
    assert torch.equal(model.state_dict()[fc1], source[fc1] + 1)
    assert torch.equal(model.state_dict()[f"{PROJ}.weight"], source[f"{PROJ}.weight"] + 1)
    assert report.dropped["roi_heads.box_head.2.fc1.weight"] == "cascade stage 2 (using stage 1)"
    assert report.renamed["roi_heads.box_predictor.1.cls_score.linear.weight"] == f"{PROJ}.weight"
    with pytest.raises(ValueError, match=r"CASCADE_STAGE = 7, but .* has cascade stages \[0, 1, 2\]"):
        load_detector_checkpoint(tiny_model(tmp_path, c4=False), str(path), cascade_stage=7)


def test_raw_state_dict_of_our_own_model(tmp_path):
    source = _source_state(tmp_path, c4=False)
    path = tmp_path / "raw.pth"
    torch.save(source, path)
    model = tiny_model(tmp_path, c4=False)
    report = load_detector_checkpoint(model, str(path))
    assert report.layout == "cxr_codet"
    assert report.missing == [VOCABULARY]  # our vocabulary comes from the current config, never the file
    assert torch.equal(model.state_dict()[f"{MLP}.fc1.weight"], source[f"{MLP}.fc1.weight"])


def test_detectron2_model_zoo_pickle_with_a_closed_vocabulary_head(tmp_path, caplog):
    source = _source_state(tmp_path, c4=False)
    feature_dim = source[f"{PROJ}.weight"].shape[1]
    zoo = {k: v.numpy() for k, v in source.items() if not k.startswith(("roi_heads.box_predictor", MLP))}
    zoo["roi_heads.box_predictor.cls_score.weight"] = torch.randn(81, feature_dim).numpy()
    zoo["roi_heads.box_predictor.cls_score.bias"] = torch.randn(81).numpy()
    zoo["roi_heads.box_predictor.bbox_pred.weight"] = torch.randn(320, feature_dim).numpy()
    zoo["roi_heads.mask_head.predictor.weight"] = torch.randn(80, 256, 1, 1).numpy()
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": zoo, "__author__": "Detectron2 Model Zoo"}, f)
    model = tiny_model(tmp_path, c4=False)
    with caplog.at_level(logging.INFO, logger="cxr_codet.modeling.checkpoint_init"):
        report = load_detector_checkpoint(model, str(path))
    assert report.layout == "detectron2"
    assert "closed-vocabulary" in report.dropped["roi_heads.box_predictor.cls_score.weight"]
    assert report.shape_mismatched["roi_heads.box_predictor.bbox_pred.weight"] == ((320, feature_dim), (4, feature_dim))
    assert report.unexpected == ["roi_heads.mask_head.predictor.weight"]
    fc2 = "roi_heads.box_head.fc2.weight"
    assert fc2 in report.matched and torch.equal(model.state_dict()[fc2], source[fc2])
    assert "roi_heads.box_predictor.bbox_pred.weight" in report.table()
    assert any("matched (loaded)" in r.getMessage() for r in caplog.records)


def test_detectron1_caffe2_pickle_is_renamed_by_detectron2_heuristics(tmp_path):
    source = _source_state(tmp_path, c4=False)
    stem = source["backbone.bottom_up.stem.conv1.weight"]
    res2 = source["backbone.bottom_up.res2.0.conv1.weight"]
    blobs = {"conv1_w": stem.numpy(), "res2_0_branch2a_w": res2.numpy(),
             "conv1_w_momentum": stem.numpy(), "res5_9_branch2a_w": torch.zeros(3).numpy()}
    path = tmp_path / "R-18.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f)
    model = tiny_model(tmp_path, c4=False)
    report = load_detector_checkpoint(model, str(path))
    assert report.layout == "detectron1/caffe2"
    assert {"backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.res2.0.conv1.weight"} <= set(report.matched)
    assert torch.equal(model.state_dict()["backbone.bottom_up.stem.conv1.weight"], stem)
    assert report.unexpected == ["res5.9.conv1.weight"]  # renamed by detectron2, absent from an R-18


def test_reinitialise_refuses_unknown_module_names(tmp_path):
    model = tiny_model(tmp_path)
    with pytest.raises(ValueError, match="REINIT_MODULES entry 'similarity_head' matches no module"):
        reinitialize_modules(model, ["similarity_head"])
    assert reinitialize_modules(model, ["co_occurrence", "sim_mlp.fc1"]) == ["roi_heads.co_occurrence"]


def test_init_from_cfg(tmp_path):
    cfg = tiny_cfg(tmp_path, c4=True)
    model = tiny_model(tmp_path, c4=True)
    assert init_from_cfg(model, cfg) is None
    path = tmp_path / "codet.pth"
    torch.save({"model": _codet_layout(_source_state(tmp_path))}, path)
    cfg.merge_from_list(["MODEL.INIT.WEIGHTS", str(path), "MODEL.INIT.REINIT_MODULES", ["roi_heads.co_occurrence"]])
    report = init_from_cfg(model, cfg)
    assert report.reinitialized == ["roi_heads.co_occurrence"] and f"{PROJ}.weight" in report.matched
    cfg.merge_from_list(["MODEL.INIT.WEIGHTS", str(tmp_path / "absent.pth")])
    with pytest.raises(FileNotFoundError, match="MODEL.INIT.WEIGHTS: checkpoint .*absent.pth does not exist"):
        init_from_cfg(model, cfg)
