"""Write class or caption text embeddings to .npy/.pt files: the logic behind tools/dump_text_embeddings.py.

Embeddings are L2-normalised float32, one row per class (C x D: the layout the `precomputed` backend, Detic
and CoDet read) or one row per captioned image in the order of the COCO JSON's "images". Beside each
output, `<output>.json` records how it was made (encoder, texts, class names or image ids).
"""
import argparse
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .base import TextEncoder
from .build import build_text_encoder
from .class_embeddings import DEFAULT_TEMPLATE, class_texts, encode_class_names
from .vocabularies import parse_class_names, resolve_vocabulary

logger = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".npy", ".pt")


def metadata_path(output: str) -> Path:
    """The JSON file that describes embedding file `output`."""
    return Path(f"{output}.json")


def save_embeddings(embeddings: torch.Tensor, output: str, metadata: Dict) -> Path:
    """Write `embeddings` as .npy (numpy array) or .pt (torch tensor) by suffix, plus `<output>.json`."""
    path = Path(output)
    if path.suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"--output {output}: unsupported suffix '{path.suffix}', expected one of {OUTPUT_SUFFIXES}")
    path.parent.mkdir(parents=True, exist_ok=True)
    embeddings = embeddings.detach().float().cpu().contiguous()
    if path.suffix == ".npy":
        np.save(path, embeddings.numpy())
    else:
        torch.save(embeddings, path)
    record = {**metadata, "shape": list(embeddings.shape), "normalized": True, "dtype": "float32"}
    with open(metadata_path(output), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    logger.info("Wrote %s embeddings %s to %s", metadata.get("kind", "text"), tuple(embeddings.shape), path)
    return path


def dump_class_embeddings(encoder: TextEncoder, class_names: Sequence[str], output: str,
                          granularity: str = "elaborate", template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
    """Embed the class vocabulary (see class_embeddings.py for how texts are built) and save it; returns [C, D]."""
    embeddings = encode_class_names(encoder, class_names, granularity, template)
    texts = class_texts(class_names, granularity, template) if encoder.ENCODES_TEXT else None
    save_embeddings(embeddings, output, {
        "kind": "class", "encoder": encoder.spec, "class_names": list(class_names),
        "granularity": granularity, "template": template, "texts": texts,
    })
    return embeddings


def image_captions(coco_json: str, granularity: str = "elaborate") -> Tuple[List, List[str], Counter]:
    """(image ids, captions, counts by source) of a COCO JSON: each image's "captions"[granularity] if present,
    else its "caption"; images with neither are skipped and counted under "skipped: no caption"."""
    path = Path(coco_json)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {coco_json} does not exist")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"caption file {coco_json}: expected a COCO JSON object with an 'images' list")
    image_ids, captions, sources = [], [], Counter()
    for position, image in enumerate(data["images"]):
        if "id" not in image:
            raise ValueError(f"caption file {coco_json}: images[{position}] has no 'id'")
        by_granularity = image.get("captions") or {}
        if isinstance(by_granularity.get(granularity), str):
            source, caption = f"captions[{granularity}]", by_granularity[granularity]
        elif isinstance(image.get("caption"), str):
            source, caption = "caption", image["caption"]
        else:
            sources["skipped: no caption"] += 1
            continue
        sources[source] += 1
        image_ids.append(image["id"])
        captions.append(caption)
    if sources["skipped: no caption"]:
        logger.warning("%s: %d of %d images have no caption and were skipped", coco_json,
                       sources["skipped: no caption"], len(data["images"]))
    return image_ids, captions, sources


def dump_caption_embeddings(encoder: TextEncoder, coco_json: str, output: str,
                            granularity: str = "elaborate") -> torch.Tensor:
    """Embed every image caption of a COCO JSON (whole caption, one pass) and save them; returns [N, D]."""
    image_ids, captions, sources = image_captions(coco_json, granularity)
    if not captions:
        raise ValueError(f"caption file {coco_json}: no image has a caption ({dict(sources)})")
    embeddings = F.normalize(encoder.encode(captions), dim=-1)
    save_embeddings(embeddings, output, {
        "kind": "caption", "encoder": encoder.spec, "source_json": str(coco_json), "granularity": granularity,
        "caption_sources": dict(sources), "image_ids": image_ids, "texts": captions,
    })
    return embeddings


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of tools/dump_text_embeddings.py."""
    parser = argparse.ArgumentParser(
        description="Write L2-normalised class or caption text embeddings (.npy/.pt, C x D or N x D) plus a "
                    "<output>.json describing them. Encoder options default to cfg.MODEL.TEXT_ENCODER of "
                    "--config-file (or the package defaults: offline all-MiniLM-L6-v2).",
    )
    parser.add_argument("--config-file", default="", help="YAML config whose MODEL.TEXT_ENCODER gives the defaults")
    parser.add_argument("--backend", help="open_clip | transformers | sentence_transformers | precomputed "
                                          "(resets --name to the backend's default unless --name is given)")
    parser.add_argument("--name", help="model name, hub id ('hf-hub:...' for open_clip) or local directory")
    parser.add_argument("--pretrained", help="open_clip: pretrained tag or checkpoint for a built-in architecture")
    parser.add_argument("--pooling", choices=("cls", "mean"), help="transformers: sentence pooling")
    parser.add_argument("--max-length", type=int, help="token limit per text (0 = the model's own)")
    parser.add_argument("--batch-size", type=int, help="texts per encoder forward pass")
    parser.add_argument("--device", help="device for the encoder, e.g. cpu or cuda")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vocabulary", help="vindr_cxr | nih_cxr14 | a registered dataset name (its thing_classes)")
    source.add_argument("--class-names", help='comma-separated class names, e.g. "Atelectasis,Cardiomegaly"')
    source.add_argument("--captions", help="COCO JSON whose images carry 'caption' / 'captions'; embeds every caption")
    parser.add_argument("--granularity", choices=("elaborate", "unelaborate"),
                        help="class description / caption granularity (default: MODEL.PROMPTS.GRANULARITY)")
    parser.add_argument("--template",
                        help='prompt template for unelaborate class names, e.g. "a chest x-ray showing {}."')
    parser.add_argument("--output", required=True, help="output file, .npy or .pt")
    return parser


# Command-line flag -> (config section, key) it overrides.
_FLAG_TO_KEY = {"backend": ("TEXT_ENCODER", "BACKEND"), "name": ("TEXT_ENCODER", "NAME"),
                "pretrained": ("TEXT_ENCODER", "PRETRAINED"), "pooling": ("TEXT_ENCODER", "POOLING"),
                "max_length": ("TEXT_ENCODER", "MAX_LENGTH"), "batch_size": ("TEXT_ENCODER", "BATCH_SIZE"),
                "device": ("TEXT_ENCODER", "DEVICE"), "granularity": ("PROMPTS", "GRANULARITY"),
                "template": ("PROMPTS", "TEMPLATE")}


def text_encoder_config(args: argparse.Namespace):
    """cfg with MODEL.TEXT_ENCODER and MODEL.PROMPTS from --config-file (or defaults), overridden by the flags that
    were given."""
    from cxr_codet.config import default_cfg

    cfg = default_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    section = cfg.MODEL.TEXT_ENCODER
    if args.backend is not None and args.backend != section.BACKEND and args.name is None:
        section.NAME, section.PRETRAINED = "", ""
    for flag, (section_name, key) in _FLAG_TO_KEY.items():
        if getattr(args, flag) is not None:
            cfg.MODEL[section_name][key] = getattr(args, flag)
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Run the command line; returns the embeddings it wrote."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    cfg = text_encoder_config(args)
    prompts = cfg.MODEL.PROMPTS
    if args.captions:
        return dump_caption_embeddings(build_text_encoder(cfg), args.captions, args.output, prompts.GRANULARITY)
    class_names = resolve_vocabulary(args.vocabulary) if args.vocabulary else parse_class_names(args.class_names)
    return dump_class_embeddings(build_text_encoder(cfg), class_names, args.output, prompts.GRANULARITY,
                                 prompts.TEMPLATE)
