"""Demo inputs: PNG/JPEG files and DICOMs (decoded exactly as the VinDr-CXR converter decodes them), or folders.

A DICOM is recognised by its suffix (.dcm, .dicom) or by the "DICM" marker at byte 128. Every image becomes a
2-D uint8 array (16-bit PNGs windowed by the shared reader, data/image_io.py) plus the size of the file's own pixel grid, on which detections are reported.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..data.dicom import read_dicom_image
from ..data.image_io import decode_gray

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")
_DICOM_MARKER_OFFSET = 128


@dataclass(frozen=True)
class InputImage:
    """One decoded input: `pixels` (H x W uint8, before the model's resize) and the file's own pixel grid."""

    path: Path
    kind: str  # "dicom" or "image"
    pixels: np.ndarray
    original_width: int
    original_height: int


def is_dicom(path: Path) -> bool:
    """True for a DICOM suffix or a file with the DICOM marker at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:
        f.seek(_DICOM_MARKER_OFFSET)
        return f.read(4) == b"DICM"


def _supported(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES


def collect_inputs(paths: Sequence[str], problems: Optional[List[Tuple[str, str]]] = None) -> List[Path]:
    """The files to run on: files as given, plus the PNG/JPEG/DICOM files directly inside given folders (sorted).

    A path that does not exist, or a folder without such files, raises FileNotFoundError; with `problems` it is
    appended there as (path, reason) instead, so that one bad path does not stop the others.
    """
    found = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and _supported(p))
            problem = None if files else f"{path}: the folder holds no {'/'.join(IMAGE_SUFFIXES + DICOM_SUFFIXES)} file"
            found.extend(files)
        elif path.is_file():
            problem = None
            found.append(path)
        else:
            problem = f"{path}: no such file or folder"
        if problem and problems is None:
            raise FileNotFoundError(problem)
        if problem:
            problems.append((str(given), problem))
    return list(dict.fromkeys(found))


def read_input_image(path: Path, dicom_long_side: int) -> InputImage:
    """Decode one input; a ValueError names the file and says why it cannot be used."""
    path = Path(path)
    if is_dicom(path):
        image = read_dicom_image(path, long_side=dicom_long_side or None, bit_depth=8)
        return InputImage(path, "dicom", image.pixels, image.original_width, image.original_height)
    try:
        pixels = decode_gray(path.read_bytes())
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return InputImage(path, "image", pixels, int(pixels.shape[1]), int(pixels.shape[0]))
