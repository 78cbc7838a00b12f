"""The demo's vocabulary: a named one (a registered dataset, "vindr_cxr", "nih_cxr14") or custom finding names.

Custom names are embedded as the model's training vocabulary was: a finding that has a description in
datasets/metadata/finding_descriptions.json through that description (at MODEL.PROMPTS.GRANULARITY
granularity), any other name through MODEL.PROMPTS.TEMPLATE around the name itself.
"""
import logging
from typing import List, Optional, Sequence

import torch

from ..data.descriptions import finding_descriptions
from ..modeling.text import apply_template, build_class_embeddings, build_text_encoder, embed_text_groups
from ..modeling.text import text_encoder_backend
from ..modeling.text.vocabularies import parse_class_names, resolve_vocabulary

logger = logging.getLogger(__name__)


def demo_vocabulary(vocabulary: Optional[str], custom_vocabulary: Optional[str]) -> Optional[List[str]]:
    """Class names from --vocabulary or --custom-vocabulary (at most one); None keeps the training vocabulary."""
    if vocabulary and custom_vocabulary:
        raise ValueError("give --vocabulary or --custom-vocabulary, not both")
    if vocabulary:
        return resolve_vocabulary(vocabulary)
    if custom_vocabulary is None:
        return None
    names = parse_class_names(custom_vocabulary)
    spellings = {}
    for name in names:
        spellings.setdefault(name.lower(), []).append(name)
    repeated = [" / ".join(group) for group in spellings.values() if len(group) > 1]
    if repeated:
        raise ValueError(
            f"--custom-vocabulary names the same finding more than once (names are compared ignoring case, as "
            f"finding descriptions are): {'; '.join(repeated)}; give each finding once"
        )
    return names


def has_description(name: str) -> bool:
    """True when the finding descriptions file describes `name` (case-insensitive)."""
    return name.lower() in {known.lower() for known in finding_descriptions("unelaborate")}


def custom_vocabulary_embeddings(cfg, names: Sequence[str]) -> torch.Tensor:
    """[C, D] L2-normalised text embeddings of `names` with the text encoder of cfg.MODEL.TEXT_ENCODER."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH = ""  # that file holds the training classes only
    backend = cfg.MODEL.TEXT_ENCODER.BACKEND
    if not text_encoder_backend(backend).ENCODES_TEXT:
        raise ValueError(
            f"MODEL.TEXT_ENCODER.BACKEND {backend!r} stores fixed class vectors and cannot encode the names "
            f"{list(names)}; configure a text encoder (e.g. sentence_transformers or open_clip)"
        )
    encoder = build_text_encoder(cfg)
    described = [name for name in names if has_description(name)]
    others = [name for name in names if not has_description(name)]
    rows = {}
    if described:
        rows.update(zip(described, build_class_embeddings(cfg, described, encoder=encoder)))
    if others:
        template = cfg.MODEL.PROMPTS.TEMPLATE
        logger.warning("No finding description for %s: encoding %r around each name instead", others, template)
        rows.update(zip(others, embed_text_groups(encoder, [[apply_template(template, name)] for name in others])))
    return torch.stack([rows[name] for name in names]).float()
