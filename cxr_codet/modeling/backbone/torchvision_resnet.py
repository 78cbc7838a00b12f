"""torchvision-format ImageNet ResNets (`resnet18-*.pth`, `resnet50-*.pth`) renamed onto detectron2's ResNet.

torchvision names (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.bn1`, `layer1.0.downsample.0/1`, `fc`) become
detectron2's (`stem.conv1`, `stem.conv1.norm`, `res2.0.conv1`, `res2.0.conv1.norm`, `res2.0.shortcut(.norm)`);
the classifier `fc` is dropped. The result carries `matching_heuristics`, so detectron2's checkpointer matches
the names to `backbone.bottom_up.*` (FPN) or `backbone.*` (plain) as it does for its own R-50.pkl.

What the weights expect of the config: torchvision's input (RGB, ImageNet mean and std, x255 here since
detectron2 feeds 0-255 pixels) and, for the bottleneck ResNets (R-50 and deeper), the stride on the 3x3
convolution (`MODEL.RESNETS.STRIDE_IN_1X1 False`; MSRA's R-50.pkl has it on the 1x1); `check_input_normalization`
refuses configs that differ.
"""
import re
from typing import Dict

import torch

# torchvision's file names: resnet<depth>-<8 hex digits of the hash>.pth
TORCHVISION_RESNET_FILE = re.compile(r"(^|[/\\])resnet(18|34|50|101|152)-[0-9a-f]{8}\.pth$")

_LAYER = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")
_BLOCK_RENAMES = (
    (re.compile(r"^conv(\d)\.weight$"), r"conv\1.weight"),
    (re.compile(r"^bn(\d)\.(.+)$"), r"conv\1.norm.\2"),
    (re.compile(r"^downsample\.0\.weight$"), r"shortcut.weight"),
    (re.compile(r"^downsample\.1\.(.+)$"), r"shortcut.norm.\1"),
)


def is_torchvision_resnet(state: Dict[str, object]) -> bool:
    """True for a state dict in torchvision's ResNet layout (a stem `conv1`, `layer1.0.*` blocks and an `fc`)."""
    return "conv1.weight" in state and "fc.weight" in state and any(k.startswith("layer1.0.") for k in state)


def torchvision_to_detectron2_resnet(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The tensors of a torchvision ResNet state dict under detectron2 ResNet names (`fc` and BN step counters
    dropped). Raises ValueError naming a key it does not know."""
    out = {}
    for key, value in state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        if key == "conv1.weight":
            out["stem.conv1.weight"] = value
            continue
        if key.startswith("bn1."):
            out["stem.conv1.norm." + key[len("bn1."):]] = value
            continue
        match = _LAYER.match(key)
        if match:
            stage, block, rest = match.groups()
            for pattern, replacement in _BLOCK_RENAMES:
                if pattern.match(rest):
                    out[f"res{int(stage) + 1}.{block}.{pattern.sub(replacement, rest)}"] = value
                    break
            else:
                raise ValueError(f"unexpected key {key!r} in a torchvision ResNet checkpoint")
            continue
        raise ValueError(f"unexpected key {key!r} in a torchvision ResNet checkpoint")
    return out
