"""CLIP-style text towers through open_clip: OpenAI/LAION CLIP and BiomedCLIP; only the text tower is kept.

NAME may be
- a built-in architecture ("ViT-B-32") with PRETRAINED = a tag ("openai") or a checkpoint file;
- "hf-hub:<org>/<repo>" (BiomedCLIP: hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224),
  which needs network access or a filled Hugging Face cache;
- a local directory (optionally written "local-dir:<dir>") in the hub layout: open_clip_config.json,
  open_clip_pytorch_model.bin (or .safetensors) and, for Hugging Face text towers, the tokenizer files.

A Hugging Face text tower (BiomedCLIP's PubMedBERT) is built from its `hf_model_name` config. When that
name is not a local directory but the model directory holds a BERT `config.json`, the directory is used
instead, so a downloaded BiomedCLIP folder plus the BERT config.json loads without network access.
"""
import json
import os
from pathlib import Path
from typing import List, Tuple

import torch

from .base import TextEncoder, register_text_encoder

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


@register_text_encoder("open_clip")
class OpenCLIPTextEncoder(TextEncoder):
    """The text tower of an open_clip model (CLIP, BiomedCLIP); embeddings live in the joint image-text space."""

    DEFAULT_NAME = BIOMEDCLIP
    CONFIG_KEYS = {**TextEncoder.CONFIG_KEYS, "pretrained": "PRETRAINED"}

    def __init__(self, name_or_path: str = "", *, pretrained: str = "", batch_size: int = 64, device: str = "cpu"):
        super().__init__(name_or_path, batch_size=batch_size, device=device)
        import open_clip

        model_name, create_kwargs = resolve_open_clip_model(self.name_or_path, pretrained)
        try:
            model = open_clip.create_model(model_name, require_pretrained=True, **create_kwargs)
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except (OSError, RuntimeError, ValueError) as error:
            raise RuntimeError(
                f"open_clip text encoder: could not load '{self.name_or_path}' (pretrained={pretrained!r}): {error}. "
                "Without network access use a local directory holding open_clip_config.json, "
                "open_clip_pytorch_model.bin and the tokenizer files as MODEL.TEXT_ENCODER.NAME"
            ) from error
        model.visual = None  # only the text tower is used; frees the image tower's memory
        self.model = model
        with torch.no_grad():
            self.dim = int(self._encode_batch(["x"]).shape[-1])
        self._freeze()

    def _encode_batch(self, texts: List[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


def resolve_open_clip_model(name_or_path: str, pretrained: str = "") -> Tuple[str, dict]:
    """open_clip's `create_model` name and extra keyword arguments for NAME and PRETRAINED (module docstring)."""
    if name_or_path.startswith(HF_HUB_PREFIX):
        _refuse_pretrained(name_or_path, pretrained)
        return name_or_path, {}
    directory = name_or_path[len(LOCAL_DIR_PREFIX):] if name_or_path.startswith(LOCAL_DIR_PREFIX) else name_or_path
    if name_or_path.startswith(LOCAL_DIR_PREFIX) or os.path.isdir(directory):
        _refuse_pretrained(name_or_path, pretrained)
        return _resolve_local_dir(Path(directory).resolve())
    if not pretrained:
        raise ValueError(
            f"open_clip text encoder: built-in architecture '{name_or_path}' needs MODEL.TEXT_ENCODER.PRETRAINED "
            "(a tag such as 'openai' or a checkpoint file); without it the text tower would be random. "
            f"NAME may also be a local directory or an '{HF_HUB_PREFIX}' id"
        )
    return name_or_path, {"pretrained": pretrained}


def _refuse_pretrained(name_or_path: str, pretrained: str):
    """PRETRAINED applies only to built-in names; elsewhere the model brings its weights and it would be ignored."""
    if pretrained:
        raise ValueError(
            f"open_clip text encoder: PRETRAINED={pretrained!r} applies only to built-in architecture names, "
            f"but NAME '{name_or_path}' brings its own weights; leave PRETRAINED empty"
        )


def _resolve_local_dir(directory: Path) -> Tuple[str, dict]:
    """'local-dir:' name for `directory`, pointing a Hugging Face text tower at the directory when needed."""
    config_file = directory / "open_clip_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"open_clip text encoder: {config_file} is missing (expected the hub layout)")
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    if "model_cfg" not in config or "text_cfg" not in config["model_cfg"]:
        raise ValueError(f"open_clip text encoder: {config_file} has no 'model_cfg' with a 'text_cfg'")
    text_cfg = config["model_cfg"]["text_cfg"]
    hf_name = text_cfg.get("hf_model_name")
    local_name = f"{LOCAL_DIR_PREFIX}{directory}"
    if hf_name and not os.path.isdir(hf_name) and (directory / "config.json").is_file():
        # Weights come from the open_clip checkpoint; only the BERT architecture is read from config.json.
        return local_name, {"text_cfg": {**text_cfg, "hf_model_name": str(directory), "hf_model_pretrained": False}}
    return local_name, {}
