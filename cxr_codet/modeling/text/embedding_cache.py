"""On-disk cache of class embeddings keyed by the encoder spec and the exact texts, so repeated model builds
skip loading the text encoder. Files are written to a temporary name and renamed, so concurrent processes
never read a half-written entry.
"""
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ...safe_checkpoint import load_checkpoint_file

logger = logging.getLogger(__name__)

# Options that change how fast embeddings are computed, not what they are.
_NON_IDENTITY_OPTIONS = ("batch_size", "device")


def cache_identity(spec: Dict[str, Any], text_groups: List[List[str]]) -> Dict[str, Any]:
    """What determines the embeddings: backend, name, result-changing options and the texts per class."""
    options = {key: value for key, value in spec.items() if key not in _NON_IDENTITY_OPTIONS}
    return {"spec": options, "texts": [list(group) for group in text_groups]}


class EmbeddingCache:
    """A folder of `<backend>-<hash>.pt` files, each holding embeddings and the identity they were made from."""

    def __init__(self, directory: str):
        self.directory = Path(directory).expanduser()

    def path_for(self, identity: Dict[str, Any]) -> Path:
        """The file that holds (or will hold) the embeddings of `identity`."""
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:20]
        return self.directory / f"{identity['spec']['backend']}-{digest}.pt"

    def load(self, identity: Dict[str, Any]) -> Optional[torch.Tensor]:
        """Cached embeddings for `identity`, or None when absent (a file made from other texts is ignored)."""
        path = self.path_for(identity)
        if not path.is_file():
            return None
        try:
            entry = load_checkpoint_file(str(path), opt_in=None)
        except ValueError as e:  # truncated (a full disk) or not ours: a cache miss, rewritten below
            logger.warning("Text embedding cache %s cannot be read (%s); recomputing", path, e)
            return None
        if not isinstance(entry, dict) or entry.get("identity") != json.loads(json.dumps(identity)):
            logger.warning("Text embedding cache %s was made from other texts or options; recomputing", path)
            return None
        logger.info("Loaded class text embeddings from cache %s", path)
        return entry["embeddings"]

    def save(self, identity: Dict[str, Any], embeddings: torch.Tensor) -> Path:
        """Store `embeddings` for `identity` atomically; returns the file."""
        path = self.path_for(identity)
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=self.directory)
        os.close(handle)
        try:
            torch.save({"identity": json.loads(json.dumps(identity)), "embeddings": embeddings.cpu()}, temporary)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        logger.info("Cached class text embeddings in %s", path)
        return path
