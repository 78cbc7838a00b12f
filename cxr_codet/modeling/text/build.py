"""Build a frozen text encoder from cfg.MODEL.TEXT_ENCODER or from an explicit (backend, name, options) spec."""
import logging
from typing import Any, Dict

from .base import TEXT_ENCODER_REGISTRY, TextEncoder

logger = logging.getLogger(__name__)


def text_encoder_backend(backend: str):
    """The registered `TextEncoder` class for `backend`, or a KeyError listing the registered names."""
    if backend not in TEXT_ENCODER_REGISTRY:
        names = sorted(name for name, _ in TEXT_ENCODER_REGISTRY)
        raise KeyError(f"MODEL.TEXT_ENCODER.BACKEND: unknown text encoder backend {backend!r}; registered: {names}")
    return TEXT_ENCODER_REGISTRY.get(backend)


def text_encoder_spec(cfg) -> Dict[str, Any]:
    """{"backend", "name_or_path", **options} read from cfg.MODEL.TEXT_ENCODER; options are the keys the
    backend declares in its CONFIG_KEYS (e.g. POOLING only for "transformers")."""
    section = cfg.MODEL.TEXT_ENCODER
    encoder_class = text_encoder_backend(section.BACKEND)
    options = {argument: section[key] for argument, key in encoder_class.CONFIG_KEYS.items()}
    return {"backend": section.BACKEND, "name_or_path": section.NAME, **options}


def build_text_encoder_from_spec(backend: str, name_or_path: str = "", **kwargs) -> TextEncoder:
    """Instantiate backend `backend` with `name_or_path` ("" = the backend's default) and its options."""
    encoder = text_encoder_backend(backend)(name_or_path, **kwargs)
    encoder.spec = {"backend": backend, "name_or_path": encoder.name_or_path, **kwargs}
    logger.info("Built frozen text encoder: %s", encoder.extra_repr())
    return encoder


def build_text_encoder(cfg) -> TextEncoder:
    """The frozen text encoder described by cfg.MODEL.TEXT_ENCODER."""
    return build_text_encoder_from_spec(**text_encoder_spec(cfg))
