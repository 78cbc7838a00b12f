"""A timm Vision Transformer as a detectron2 backbone ("build_vit_backbone"), for ViT image encoders.

The output "vit" is the final (normalised) patch tokens reshaped to the patch grid, [B, D, H/p, W/p], so
heads that pool a feature map work unchanged; any input size divisible by the patch size works (timm's
dynamic image size resamples the position embeddings). Weights come from a local timm-format state dict
(cfg.MODEL.VIT.WEIGHTS); nothing is downloaded. Grad-CAM targets one of its blocks, "backbone.vit.blocks.<i>",
whose tokens `GradCAM` puts back on the grid with `token_grid` and `num_prefix_tokens`.
"""
import logging
import os
from typing import Dict, Tuple

import timm
import torch
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
from timm.layers import resample_abs_pos_embed

logger = logging.getLogger(__name__)

OUTPUT_NAME = "vit"
# State-dict keys of timm's classification head, which the backbone (num_classes=0) does not have.
_HEAD_PREFIXES = ("head.", "fc_norm.")
_WRAPPER_KEYS = ("model", "state_dict", "module")


def _unwrapped_state_dict(checkpoint, path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint saved bare or under "model"/"state_dict"/"module", without a "module." prefix."""
    for key in _WRAPPER_KEYS:
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path}: not a ViT state dict (expected a dict of tensors, optionally under "
                         f"one of {list(_WRAPPER_KEYS)})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in checkpoint.items()}


def load_vit_weights(vit: torch.nn.Module, path: str) -> None:
    """Load a timm-format ViT state dict from `path` into `vit`: classifier-head keys are dropped, the position
    embedding is resampled to the model's grid; any other missing or unexpected key is an error naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ViT weights file {path} (cfg.MODEL.VIT.WEIGHTS) does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for unreadable files
        raise ValueError(f"{path}: cannot read ViT weights ({type(e).__name__}: {e})") from None
    state = {k: v for k, v in _unwrapped_state_dict(checkpoint, path).items() if not k.startswith(_HEAD_PREFIXES)}
    if "pos_embed" in state and state["pos_embed"].shape != vit.pos_embed.shape:
        prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], list(vit.patch_embed.grid_size),
                                                    num_prefix_tokens=prefix)
        logger.info("Resampled the position embedding of %s to a %s patch grid", path, tuple(vit.patch_embed.grid_size))
    expected = {k for k in vit.state_dict() if not k.startswith(_HEAD_PREFIXES)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{path} does not match the ViT of cfg.MODEL.VIT: missing keys {missing[:10]}, "
                         f"unexpected keys {unexpected[:10]} (check ARCH, EMBED_DIM, DEPTH, NUM_HEADS, PATCH_SIZE)")
    try:
        vit.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"{path}: tensor shapes do not match the ViT of cfg.MODEL.VIT ({e})") from None
    logger.info("Loaded ViT weights from %s (%d tensors)", path, len(state))


class ViTBackbone(Backbone):
    """timm VisionTransformer -> {"vit": patch tokens on the grid [B, D, H/p, W/p]}."""

    def __init__(self, arch: str, weights: str = "", embed_dim: int = 0, depth: int = 0, num_heads: int = 0,
                 patch_size: int = 0, img_size: int = 224):
        """`arch`: a timm ViT name; `embed_dim`, `depth`, `num_heads`, `patch_size`: overrides (0 = the
        architecture's); `img_size`: the position-embedding grid size; `weights`: a local state dict or ""."""
        super().__init__()
        overrides = {k: v for k, v in dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                           patch_size=patch_size).items() if v}
        try:
            self.vit = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True,
                                         img_size=img_size, **overrides)
        except Exception as e:  # timm raises RuntimeError/TypeError/ValueError for unknown names and arguments
            raise ValueError(f"cannot build ViT {arch!r} with {overrides} (cfg.MODEL.VIT): {e}") from None
        if not hasattr(self.vit, "blocks") or not hasattr(self.vit, "patch_embed"):
            raise ValueError(f"cfg.MODEL.VIT.ARCH {arch!r} is not a timm VisionTransformer")
        if weights:
            load_vit_weights(self.vit, weights)
        self.patch_size = int(self.vit.patch_embed.patch_size[0])
        self.num_prefix_tokens = int(self.vit.num_prefix_tokens)
        self._out_features = [OUTPUT_NAME]
        self._out_feature_channels = {OUTPUT_NAME: int(self.vit.embed_dim)}
        self._out_feature_strides = {OUTPUT_NAME: self.patch_size}

    @property
    def size_divisibility(self) -> int:
        return self.patch_size

    def token_grid(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """The (rows, columns) patch grid of a padded input of `image_size` (H, W)."""
        return image_size[0] // self.patch_size, image_size[1] // self.patch_size

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        tokens = self.vit.forward_features(x)
        rows, cols = self.token_grid(tuple(x.shape[-2:]))
        patches = tokens[:, self.num_prefix_tokens:]
        return {OUTPUT_NAME: patches.transpose(1, 2).reshape(x.shape[0], -1, rows, cols)}


@BACKBONE_REGISTRY.register()
def build_vit_backbone(cfg, input_shape: ShapeSpec) -> ViTBackbone:
    """The ViT of cfg.MODEL.VIT (MODEL.BACKBONE.NAME "build_vit_backbone")."""
    section = cfg.MODEL.VIT
    return ViTBackbone(section.ARCH, weights=section.WEIGHTS, embed_dim=section.EMBED_DIM, depth=section.DEPTH,
                       num_heads=section.NUM_HEADS, patch_size=section.PATCH_SIZE, img_size=section.IMG_SIZE)
