"""Frozen text encoders behind one interface (`TextEncoder`), a registry of backends, and class embeddings.

Backends: "open_clip" (CLIP, BiomedCLIP), "transformers" (BERT family), "sentence_transformers" (the
offline default, all-MiniLM-L6-v2) and "precomputed" (.npy/.pt class embeddings). Importing this package
registers all of them in TEXT_ENCODER_REGISTRY.
"""
from . import open_clip_backend, precomputed, sentence_transformers_backend, transformers_backend  # noqa: F401
from .base import TEXT_ENCODER_REGISTRY, TextEncoder, register_text_encoder
from .build import build_text_encoder, build_text_encoder_from_spec, text_encoder_backend, text_encoder_spec
from .class_embeddings import (
    DEFAULT_TEMPLATE,
    GRANULARITIES,
    apply_template,
    build_class_embeddings,
    class_texts,
    embed_text_groups,
    encode_class_names,
    split_sentences,
)
from .embedding_cache import EmbeddingCache
from .frozen_features import FrozenTextFeatures, TextLevels
from .open_clip_backend import OpenCLIPTextEncoder
from .precomputed import PrecomputedTextEncoder, load_class_embeddings
from .sentence_transformers_backend import SentenceTransformersTextEncoder, bundled_minilm_path
from .transformers_backend import TransformersTextEncoder
from .vocabularies import resolve_vocabulary
from .word_features import ReportEmbeddings, TokenEmbeddings, pool_sentences_and_report

__all__ = [
    "DEFAULT_TEMPLATE",
    "EmbeddingCache",
    "FrozenTextFeatures",
    "GRANULARITIES",
    "OpenCLIPTextEncoder",
    "PrecomputedTextEncoder",
    "ReportEmbeddings",
    "SentenceTransformersTextEncoder",
    "TEXT_ENCODER_REGISTRY",
    "TextEncoder",
    "TextLevels",
    "TokenEmbeddings",
    "TransformersTextEncoder",
    "apply_template",
    "build_class_embeddings",
    "build_text_encoder",
    "build_text_encoder_from_spec",
    "bundled_minilm_path",
    "class_texts",
    "embed_text_groups",
    "encode_class_names",
    "load_class_embeddings",
    "pool_sentences_and_report",
    "register_text_encoder",
    "resolve_vocabulary",
    "split_sentences",
    "text_encoder_backend",
    "text_encoder_spec",
]
