"""Read checkpoint files without running code from them: the one reader of every weights-loading path.

A pickle (.pkl, and the pickle inside a torch .pth) can name any importable function and have it called while
loading (`__reduce__`), so a downloaded checkpoint could run code. Checkpoints of weights need none of that:
detectron2's model-zoo pickles (R-50.pkl: {"model": {name: array}, "__author__": str, "matching_heuristics":
bool}), Detectron1/Caffe2 pickles ({"blobs": {name: array}, ...}), and the torch files of detectron2, Detic,
CoDet and cxr-codet itself ({"model": state dict, "optimizer": ..., "scheduler": ..., "iteration": int}) hold
only dicts, lists, tuples, strings, numbers, tensors, numpy arrays and dtypes. So:

- pickles are read by `SafeUnpickler`, which admits the numpy functions that rebuild arrays, dtypes and
  scalars, OrderedDict, sets and latin-1 byte strings (Python 2 pickles, read with encoding="latin1"), and
  refuses every other global before it is called;
- torch files go through `torch.load(weights_only=True)` with the same numpy globals allowed (a non-zip file
  that torch cannot read that way is tried as a plain pickle with `SafeUnpickler`).

A file that needs anything else is refused with `UnsafeCheckpointError` naming the file, what it needs and
the opt-in: `MODEL.TRUST_CHECKPOINT_CODE True` (config) or `CXR_CODET_TRUST_CHECKPOINT_CODE=1` (environment),
which load it fully, as detectron2 does. An empty, truncated or non-checkpoint file raises
`UnreadableCheckpointError` naming the file and what is wrong with it.
"""
import logging
import os
import pickle
import re
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray

logger = logging.getLogger(__name__)

TRUST_KEY = "MODEL.TRUST_CHECKPOINT_CODE"
TRUST_ENV = "CXR_CODET_TRUST_CHECKPOINT_CODE"
TRUST_OPT_IN = f"set {TRUST_KEY} True (or the environment variable {TRUST_ENV}=1)"
_TRUE_WORDS = ("1", "true", "yes", "on")


class UnsafeCheckpointError(ValueError):
    """A checkpoint needs more than weights to be unpickled (it could run code); the message names the opt-in."""


class UnreadableCheckpointError(ValueError):
    """A checkpoint file that is empty, truncated or not a checkpoint at all; the message names the file."""


class _ForbiddenGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _latin1_encode(text, encoding="latin1"):
    """`_codecs.encode` as Python 3 writes byte strings into protocol-2 pickles, for latin-1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise _ForbiddenGlobal(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# (module, name) a pickle may name -> the object it gets. numpy.core is numpy 1's name of numpy._core;
# "__builtin__" / "copy_reg" (Python 2) arrive here already renamed by pickle's fix_imports.
_ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _multiarray._reconstruct for module in ("numpy.core.multiarray",
                                                                         "numpy._core.multiarray")},
    **{(module, "scalar"): _multiarray.scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _latin1_encode,
}

# What torch's weights-only unpickler must admit besides tensors, for checkpoints holding numpy data.
_TORCH_SAFE_GLOBALS = [
    (_multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    (_multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
    (_multiarray.scalar, "numpy.core.multiarray.scalar"),
    (_multiarray.scalar, "numpy._core.multiarray.scalar"),
    np.ndarray,
    np.dtype,
    *sorted({type(np.dtype(code)) for code in "?bBhHiIlLqQefdFDSUV"}, key=str),  # numpy 2's numpy.dtypes.*DType
]


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only `_ALLOWED_GLOBALS`; any other global raises before it can be called."""

    def find_class(self, module: str, name: str):
        # Python 2 names ("__builtin__", "copy_reg"), mapped as pickle's own find_class maps them.
        module, name = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module), name))
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it refers to external storage (persistent ids): not a plain pickle")


def trust_checkpoint_code(cfg=None) -> bool:
    """True when cfg.MODEL.TRUST_CHECKPOINT_CODE is set or the environment variable CXR_CODET_TRUST_CHECKPOINT_CODE
    is 1/true/yes/on: checkpoints are then unpickled fully (they can run code)."""
    if os.environ.get(TRUST_ENV, "").strip().lower() in _TRUE_WORDS:
        return True
    return bool(cfg is not None and cfg.MODEL.get("TRUST_CHECKPOINT_CODE", False))


def load_checkpoint_file(path: str, *, trust_code: bool = False, opt_in: Optional[str] = TRUST_OPT_IN) -> Any:
    """The object stored in the checkpoint at `path` (.pkl: a pickle; anything else: a torch file), read safely.

    `trust_code` (or the environment variable) unpickles fully instead, as detectron2 does. `opt_in` is how a
    refusal tells the user to trust the file (None: the file cannot be trusted on this path, only re-saved).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if os.path.getsize(path) == 0:
        raise UnreadableCheckpointError(f"{path}: not a readable checkpoint: the file is empty")
    trusted = trust_code or trust_checkpoint_code()
    try:
        if path.endswith(".pkl"):
            return _load_pickle(path, trusted)
        return _load_torch(path, trusted)
    except _ForbiddenGlobal as e:
        what = "re-save its weights as plain tensors or arrays" if opt_in is None else f"if you trust it, {opt_in}"
        raise UnsafeCheckpointError(
            f"{path}: refused to load: unpickling it would call {e.name}, which can run arbitrary code (a checkpoint "
            f"of weights holds only tensors, arrays, numbers, strings, lists and dicts); {what}"
        ) from None


def _load_pickle(path: str, trusted: bool) -> Any:
    with open(path, "rb") as f:
        if trusted:
            logger.warning("%s: unpickling it fully (trusted by %s or %s): it can run code", path, TRUST_KEY, TRUST_ENV)
            return _unpickle(path, lambda: pickle.load(f, encoding="latin1"))
        return _unpickle(path, lambda: SafeUnpickler(f, encoding="latin1").load())


def _unpickle(path: str, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except _ForbiddenGlobal:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        if isinstance(e, EOFError) or "truncated" in str(e):
            raise UnreadableCheckpointError(
                f"{path}: not a readable checkpoint: the pickle ends early (truncated?)"
            ) from None
        raise UnreadableCheckpointError(f"{path}: not a readable checkpoint: not a pickle of weights ({e})") from None
    except (ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError, UnicodeDecodeError,
            OverflowError, MemoryError) as e:
        raise UnreadableCheckpointError(
            f"{path}: not a readable checkpoint: not a pickle of weights ({type(e).__name__}: {e})"
        ) from None


def _load_torch(path: str, trusted: bool) -> Any:
    if trusted:
        logger.warning("%s: loading it with torch.load(weights_only=False) (trusted by %s or %s): it can run code",
                       path, TRUST_KEY, TRUST_ENV)
        return _torch_load(path, weights_only=False)
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):  # torch's zip format (since 1.6); a truncated one has no zip directory
        unsafe = _unsafe_torch_globals(path)
        if unsafe:
            raise _ForbiddenGlobal(", ".join(unsafe))
        return _torch_load(path, weights_only=True)
    try:  # torch's legacy (pre-zip) format
        return _torch_load(path, weights_only=True)
    except (_ForbiddenGlobal, UnreadableCheckpointError) as e:
        legacy_error = e
    # A plain pickle under a torch suffix; a legacy torch file starts with torch's magic number instead.
    with open(path, "rb") as f:
        try:
            data = _unpickle(path, lambda: SafeUnpickler(f, encoding="latin1").load())
        except UnreadableCheckpointError:
            raise UnreadableCheckpointError(
                f"{path}: not a readable checkpoint: neither a file written by torch.save nor a pickle (it starts "
                f"with {head!r})"
            ) from None
    if isinstance(data, int) and data == torch.serialization.MAGIC_NUMBER:
        raise legacy_error
    return data


def _unsafe_torch_globals(path: str):
    """Globals of a torch zip file that the weights-only loader (with our numpy globals) would refuse."""
    allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in _TORCH_SAFE_GLOBALS}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # a corrupt archive: torch.load reports it
        logger.debug("%s: cannot list its globals (%s)", path, e)
        return []
    return [name for name in found if name not in allowed]


def _torch_load(path: str, weights_only: bool) -> Any:
    """torch.load on CPU (weights-only with our numpy globals); errors become one line naming the file."""
    try:
        with torch.serialization.safe_globals(_TORCH_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            match = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            raise _ForbiddenGlobal(match.group(1) if match else "objects torch's weights-only loader refuses") from None
        raise UnreadableCheckpointError(f"{path}: not a readable checkpoint ({_first_line(e)})") from None
    except EOFError:
        raise UnreadableCheckpointError(
            f"{path}: not a readable checkpoint: the file ends early (truncated?)"
        ) from None
    except (RuntimeError, OSError) as e:  # torch's zip reader on truncated or corrupt archives
        if isinstance(e, (PermissionError, FileNotFoundError)):
            raise
        raise UnreadableCheckpointError(
            f"{path}: not a readable checkpoint: truncated or corrupt ({_first_line(e)})"
        ) from None
    except (KeyError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise UnreadableCheckpointError(
            f"{path}: not a readable checkpoint: not a file written by torch.save ({type(e).__name__}: {e})"
        ) from None


def _first_line(error: Exception) -> str:
    """The first sentence of an exception's message (torch's run over several lines)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0].rstrip(".")


def detectron2_layout(path: str, data: Any) -> Dict[str, Any]:
    """What detectron2's DetectionCheckpointer makes of a loaded file: {"model": state, ...}, with
    "__author__" "Caffe2" and "matching_heuristics" True for Detectron1/Caffe2 blobs and "pycls" for .pyth files."""
    if not isinstance(data, dict):
        raise UnreadableCheckpointError(f"{path}: expected a dict in the checkpoint, got a {type(data).__name__}")
    if path.endswith(".pkl"):
        if "model" in data and "__author__" in data:  # detectron2 model-zoo format
            return data
        blobs = data.get("blobs", data)  # Detectron1 detection models have "blobs", ImageNet models do not
        if not isinstance(blobs, dict):
            raise UnreadableCheckpointError(f"{path}: 'blobs' is a {type(blobs).__name__}, not a dict of arrays")
        state = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": state, "__author__": "Caffe2", "matching_heuristics": True}
    if path.endswith(".pyth"):  # pycls
        if not isinstance(data.get("model_state"), dict):
            raise UnreadableCheckpointError(f"{path}: a pycls .pyth checkpoint must contain 'model_state'")
        state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
        return {"model": state, "__author__": "pycls", "matching_heuristics": True}
    return data if "model" in data else {"model": data}
