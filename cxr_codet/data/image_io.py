"""The one reader of image files (PNG/JPEG) for the dataset mapper, the demo and the evaluators' overlays.

8-bit files are read as before (one gray channel). 16-bit files are read at full depth and windowed to 8 bits
over their significant bits: 0 .. 2^b - 1 -> 0 .. 255, where b is the bit length of the image's largest value
(at least 8). A 12-bit image stored in 16 bits (values up to 4095, as exported from many DICOMs) thus keeps its
contrast instead of keeping only the high byte (0..15, a black image), and tools/prepare_vindr.py's
`--bit-depth 16` output (full 0..65535 range) reads back as its 8-bit output within rounding.
"""
import logging
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from .image_limits import encoded_oversize_problem

logger = logging.getLogger(__name__)

WINDOWING = (
    "16-bit images are windowed to 8 bits over their significant bits: 0..2^b-1 -> 0..255, b = bit length of the "
    "image's largest value (a 12-bit image stored in 16 bits: 0..4095)"
)
_window_logged = False


def decode_gray(data: bytes) -> np.ndarray:
    """An encoded PNG/JPEG as a 2-D uint8 array (16-bit files windowed, see the module docstring).

    A ValueError says why the bytes cannot be used: empty, too large (from the header alone), or undecodable.
    """
    if not data:
        raise ValueError("the file is empty")
    problem = encoded_oversize_problem(data)
    if problem:
        raise ValueError(problem)
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if pixels is None:
        raise ValueError("not a decodable PNG/JPEG image (truncated or another format?)")
    return window_to_uint8(pixels)


def read_gray(path: Union[str, Path]) -> np.ndarray:
    """`decode_gray` of a file; FileNotFoundError or ValueError messages start with the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the file does not exist")
    try:
        return decode_gray(path.read_bytes())
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def window_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels unchanged; uint16 pixels windowed over their significant bits (logged once per process)."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype != np.uint16:
        raise ValueError(f"unsupported pixel type {pixels.dtype}; expected 8- or 16-bit grayscale")
    global _window_logged
    if not _window_logged:
        logger.info(WINDOWING)
        _window_logged = True
    top = 2 ** max(8, int(pixels.max()).bit_length()) - 1
    return np.rint(pixels.astype(np.float32) * (255.0 / top)).astype(np.uint8)
