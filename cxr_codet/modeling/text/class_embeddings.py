"""One L2-normalised text embedding per class: the fixed vocabulary of the open-vocabulary classifier.

Class texts come from `cxr_codet.data.descriptions.class_prompts`:
- "unelaborate": the short class phrase put into the prompt template ("a chest x-ray showing {}.");
- "elaborate": the several-sentence description, embedded one sentence at a time (long descriptions would
  be truncated and blur in one pass); the class embedding is the mean of the normalised sentence
  embeddings, normalised again. The template is not applied to descriptions.
"""
import logging
import re
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from .base import TextEncoder
from .build import build_text_encoder_from_spec, text_encoder_backend, text_encoder_spec
from .embedding_cache import EmbeddingCache, cache_identity
from .precomputed import load_class_embeddings

logger = logging.getLogger(__name__)

GRANULARITIES = ("elaborate", "unelaborate")
DEFAULT_TEMPLATE = "a chest x-ray showing {}."
_SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> List[str]:
    """The sentences of `text` (split after ".", "!" or "?" followed by white space), stripped, none empty."""
    return [sentence.strip() for sentence in _SENTENCE_BOUNDARY.split(text) if sentence.strip()]


def apply_template(template: str, phrase: str) -> str:
    """`template` with its single "{}" replaced by `phrase`; an empty template gives the phrase itself."""
    if not template:
        return phrase
    if template.count("{}") != 1:
        raise ValueError(f"prompt template {template!r} must contain exactly one '{{}}' where the class name goes")
    return template.replace("{}", phrase)


def class_texts(class_names: Sequence[str], granularity: str = "elaborate",
                template: str = DEFAULT_TEMPLATE) -> List[List[str]]:
    """Per class, the texts to embed (see module docstring for the two granularities)."""
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"MODEL.PROMPTS.GRANULARITY / granularity must be one of {GRANULARITIES}, got {granularity!r}"
        )
    from cxr_codet.data.descriptions import class_prompts

    prompts = class_prompts(list(class_names), granularity)
    if granularity == "unelaborate":
        return [[apply_template(template, prompt)] for prompt in prompts]
    groups = [split_sentences(prompt) for prompt in prompts]
    for name, group in zip(class_names, groups):
        if not group:
            raise ValueError(f"class {name!r} has an empty {granularity} description")
    return groups


def embed_text_groups(encoder: TextEncoder, text_groups: Sequence[Sequence[str]]) -> torch.Tensor:
    """[G, D]: per group, the normalised mean of its texts' normalised embeddings (one encoder pass for all)."""
    sizes = [len(group) for group in text_groups]
    if any(size == 0 for size in sizes):
        raise ValueError(f"text group {sizes.index(0)} is empty; every class needs at least one text")
    flat = [text for group in text_groups for text in group]
    embeddings = F.normalize(encoder.encode(flat), dim=-1)
    owners = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes, dtype=torch.long))
    sums = torch.zeros(len(sizes), embeddings.shape[1]).index_add_(0, owners, embeddings)
    return F.normalize(sums, dim=-1)


def encode_class_names(encoder: TextEncoder, class_names: Sequence[str], granularity: str = "elaborate",
                       template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
    """[C, D] L2-normalised class embeddings; a precomputed encoder returns its stored matrix instead."""
    fixed = encoder.fixed_class_embeddings(len(class_names))
    if fixed is not None:
        return F.normalize(fixed, dim=-1)
    return embed_text_groups(encoder, class_texts(class_names, granularity, template))


def build_class_embeddings(cfg, class_names: Sequence[str], encoder: Optional[TextEncoder] = None) -> torch.Tensor:
    """[C, D] L2-normalised class embeddings as cfg.MODEL.TEXT_ENCODER asks: from CLASS_EMBEDDINGS_PATH if set,
    else from CACHE_DIR if it holds them, else encoded with `encoder` (built from cfg when None) and cached.
    A given `encoder` must be the one cfg describes: the cache is keyed by cfg's spec."""
    section, prompts = cfg.MODEL.TEXT_ENCODER, cfg.MODEL.PROMPTS
    if section.CLASS_EMBEDDINGS_PATH:
        logger.info("Class text embeddings from %s", section.CLASS_EMBEDDINGS_PATH)
        return F.normalize(load_class_embeddings(section.CLASS_EMBEDDINGS_PATH, len(class_names)), dim=-1)
    spec = text_encoder_spec(cfg)
    if not text_encoder_backend(spec["backend"]).ENCODES_TEXT:
        encoder = encoder or build_text_encoder_from_spec(**spec)
        return encode_class_names(encoder, class_names, prompts.GRANULARITY, prompts.TEMPLATE)
    groups = class_texts(class_names, prompts.GRANULARITY, prompts.TEMPLATE)
    cache = EmbeddingCache(section.CACHE_DIR) if section.CACHE_DIR else None
    identity = cache_identity(spec, groups)
    cached = cache.load(identity) if cache else None
    if cached is not None:
        return cached
    encoder = encoder or build_text_encoder_from_spec(**spec)
    embeddings = embed_text_groups(encoder, groups)
    if cache:
        cache.save(identity, embeddings)
    return embeddings
