"""torchvision ImageNet ResNets as MODEL.WEIGHTS: the key mapping onto detectron2's ResNet, checked by outputs."""

import pytest
from conftest import CONFIGS
import torch
import torchvision
from detectron2.modeling import build_backbone
from detectron2.layers import ShapeSpec

from cxr_codet.engine.checkpoint import AtomicDetectionCheckpointer
from cxr_codet.config import build_cfg
from cxr_codet.modeling.backbone.torchvision_resnet import is_torchvision_resnet, torchvision_to_detectron2_resnet
from cxr_codet.modeling.input_normalization import TORCHVISION_NORMALIZATION, check_input_normalization

BASE_FPN = str(CONFIGS / "Base-RCNN-FPN.yaml")


def _saved_torchvision(tmp_path, depth):
    torch.manual_seed(depth)
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    for m in net.modules():  # non-trivial BN statistics, so a wrong mapping shows in the outputs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    path = tmp_path / f"resnet{depth}-0123abcd.pth"
    torch.save(net.state_dict(), path)
    return net.eval(), str(path)


def _torchvision_features(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    out = {}
    for index, name in enumerate(("res2", "res3", "res4", "res5")):
        x = getattr(net, f"layer{index + 1}")(x)
        out[name] = x
    return out


@pytest.mark.parametrize("depth,stride_in_1x1", [(18, True), (50, False)])
def test_torchvision_weights_load_into_detectron2_resnet_with_the_same_outputs(tmp_path, depth, stride_in_1x1):
    net, path = _saved_torchvision(tmp_path, depth)
    mean, std = TORCHVISION_NORMALIZATION
    opts = ["MODEL.WEIGHTS", path, "MODEL.RESNETS.DEPTH", depth, "MODEL.RESNETS.NORM", "FrozenBN",
            "MODEL.RESNETS.STRIDE_IN_1X1", stride_in_1x1, "MODEL.PIXEL_MEAN", mean, "MODEL.PIXEL_STD", std,
            "MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"]]
    if depth < 50:
        opts += ["MODEL.RESNETS.RES2_OUT_CHANNELS", 64]
    cfg = build_cfg(BASE_FPN, opts, cpu=True)
    check_input_normalization(cfg)
    backbone = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    holder = torch.nn.Module()
    holder.backbone = backbone
    incompatible = AtomicDetectionCheckpointer(holder)._load_model(AtomicDetectionCheckpointer(holder)._load_file(path))
    assert not incompatible.missing_keys
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = backbone(x), _torchvision_features(net, x)
    for name in ("res2", "res3", "res4", "res5"):
        assert torch.allclose(ours[name], theirs[name], atol=1e-4), name


def test_mapping_names_and_refusals():
    state = {"conv1.weight": 1, "bn1.running_var": 2, "layer1.0.conv2.weight": 3, "layer2.0.downsample.0.weight": 4,
             "layer2.0.downsample.1.bias": 5, "layer4.1.bn3.weight": 6, "fc.weight": 7, "bn1.num_batches_tracked": 8}
    assert is_torchvision_resnet(state)
    assert torchvision_to_detectron2_resnet(state) == {
        "stem.conv1.weight": 1, "stem.conv1.norm.running_var": 2, "res2.0.conv2.weight": 3,
        "res3.0.shortcut.weight": 4, "res3.0.shortcut.norm.bias": 5, "res5.1.conv3.norm.weight": 6}
    assert not is_torchvision_resnet({"backbone.bottom_up.stem.conv1.weight": 1})
    with pytest.raises(ValueError, match="unexpected key 'avgpool.x'"):
        torchvision_to_detectron2_resnet({**state, "avgpool.x": 0})


def test_config_check_names_normalisation_and_stride_for_torchvision_r50():
    path = "/models/resnet50-0676ba61.pth"
    with pytest.raises(ValueError, match=r"MODEL.WEIGHTS = /models/resnet50-0676ba61.pth expects MODEL.PIXEL_MEAN \[123.675"):
        check_input_normalization(build_cfg(BASE_FPN, ["MODEL.WEIGHTS", path], cpu=True))
    mean, std = TORCHVISION_NORMALIZATION
    with pytest.raises(ValueError, match="STRIDE_IN_1X1 False"):
        check_input_normalization(build_cfg(BASE_FPN, ["MODEL.WEIGHTS", path, "MODEL.PIXEL_MEAN", mean,
                                                       "MODEL.PIXEL_STD", std], cpu=True))
    check_input_normalization(build_cfg(BASE_FPN, ["MODEL.WEIGHTS", path, "MODEL.PIXEL_MEAN", mean, "MODEL.PIXEL_STD",
                                                   std, "MODEL.RESNETS.STRIDE_IN_1X1", False], cpu=True))
