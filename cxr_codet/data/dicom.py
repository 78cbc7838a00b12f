"""Decode chest X-ray DICOMs into display-ready grayscale images and write them as PNG.

The pixels go through the same chain a DICOM viewer applies (modality LUT, then the first VOI LUT or
window, then MONOCHROME1 inversion), so the PNG looks like what the radiologist read; the long side can
be shrunk, and the returned sizes say how to scale boxes drawn on the original.
"""
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import cv2
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder

from .image_limits import oversize_problem

PathLike = Union[str, os.PathLike]

DEFAULT_LONG_SIDE = 1024
SUPPORTED_BIT_DEPTHS = (8, 16)
GRAYSCALE_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")


class DicomReadError(ValueError):
    """A DICOM file that cannot be turned into an image; the message names the file and the reason."""


@dataclass(frozen=True)
class DicomImage:
    """A decoded radiograph: `pixels` (H x W, uint8 or uint16, bright = dense) and the DICOM's own size."""

    pixels: np.ndarray
    original_width: int
    original_height: int

    @property
    def width(self) -> int:
        """Width of `pixels`."""
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        """Height of `pixels`."""
        return int(self.pixels.shape[0])

    @property
    def scale(self) -> Tuple[float, float]:
        """(x, y) factors that take coordinates on the original DICOM to coordinates on `pixels`."""
        return self.width / self.original_width, self.height / self.original_height


def resized_size(width: int, height: int, long_side) -> Tuple[int, int]:
    """(width, height) after shrinking the long side to `long_side`; images already that small (or
    `long_side` None/0) keep their size, so nothing is ever upsampled. A (width, height) pair instead resizes to
    exactly that size (e.g. the CXR-CoDet paper's square 1024 x 1024, whatever the aspect ratio)."""
    if isinstance(long_side, (tuple, list)):
        return int(long_side[0]), int(long_side[1])
    if not long_side or max(width, height) <= long_side:
        return int(width), int(height)
    factor = long_side / max(width, height)
    return max(1, int(width * factor + 0.5)), max(1, int(height * factor + 0.5))


def read_dicom_size(path: PathLike) -> Tuple[int, int]:
    """(width, height) of a DICOM's pixel matrix, read from its header without decoding pixels."""
    ds = _read_dataset(path, stop_before_pixels=True)
    return _matrix_size(ds, path)


def read_dicom_image(
    path: PathLike,
    long_side: Optional[int] = DEFAULT_LONG_SIDE,
    bit_depth: int = 8,
    apply_voi_transform: bool = True,
) -> DicomImage:
    """Decode `path` into an 8- or 16-bit grayscale image whose long side is at most `long_side`.

    `apply_voi_transform=False` skips the file's VOI LUT / window and stretches the full range instead.
    Raises `DicomReadError` naming the file for anything that is not a decodable grayscale radiograph.
    """
    if bit_depth not in SUPPORTED_BIT_DEPTHS:
        raise ValueError(f"bit_depth must be one of {SUPPORTED_BIT_DEPTHS}, got {bit_depth}")
    ds = _read_dataset(path)
    width, height = _matrix_size(ds, path)
    problem = oversize_problem(width, height)
    if problem:
        raise DicomReadError(f"{path}: {problem}")
    stored = _decode_pixels(ds, path)
    values = apply_modality_lut(stored, ds)
    unit = _voi_to_unit_range(values, ds, path) if apply_voi_transform else _min_max(values)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    new_width, new_height = resized_size(width, height, long_side)
    if (new_width, new_height) != (width, height):
        unit = cv2.resize(unit.astype(np.float32), (new_width, new_height), interpolation=cv2.INTER_AREA)
    return DicomImage(_quantize(unit, bit_depth), width, height)


def write_png(pixels: np.ndarray, path: PathLike) -> None:
    """Write a uint8/uint16 grayscale image as PNG; the file appears complete or not at all."""
    path = Path(path)
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a {pixels.dtype} image of shape {pixels.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.part")
    partial.write_bytes(encoded.tobytes())
    os.replace(partial, path)


def _read_dataset(path: PathLike, stop_before_pixels: bool = False) -> pydicom.Dataset:
    path = Path(path)
    if not path.is_file():
        raise DicomReadError(f"{path}: no such DICOM file")
    if path.stat().st_size == 0:
        raise DicomReadError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise DicomReadError(f"{path}: not a DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on truncated or corrupt headers
        raise DicomReadError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
    # pydicom only warns when a file ends inside a sequence or encapsulated pixel data, and then returns
    # whatever it parsed (possibly nothing); say what happened instead of "missing Rows".
    truncated = [w for w in caught if "End of file reached" in str(w.message)]
    if truncated:
        raise DicomReadError(f"{path}: the file is truncated ({truncated[0].message})")
    return ds


def _matrix_size(ds: pydicom.Dataset, path: PathLike) -> Tuple[int, int]:
    missing = [key for key in ("Rows", "Columns", "PhotometricInterpretation") if key not in ds]
    if missing:
        raise DicomReadError(f"{path}: missing {', '.join(missing)}; is this an image DICOM?")
    if ds.PhotometricInterpretation not in GRAYSCALE_PHOTOMETRICS:
        raise DicomReadError(
            f"{path}: photometric interpretation {ds.PhotometricInterpretation!r} is not a grayscale "
            f"radiograph (expected one of {GRAYSCALE_PHOTOMETRICS})"
        )
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DicomReadError(f"{path}: {ds.NumberOfFrames} frames; a radiograph has one")
    return int(ds.Columns), int(ds.Rows)


def _decode_pixels(ds: pydicom.Dataset, path: PathLike) -> np.ndarray:
    if "PixelData" not in ds:
        raise DicomReadError(f"{path}: the file has no pixel data")
    syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
    syntax_name = getattr(syntax, "name", str(syntax))
    try:
        return ds.pixel_array
    except Exception as exc:  # missing decoder plugin, truncated or corrupt pixel data
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DicomReadError(
            f"{path}: cannot decode pixel data with transfer syntax {syntax_name} ({type(exc).__name__}: {message})"
            f"{_decoding_hint(ds, syntax)}"
        ) from exc


_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000), how encapsulated (compressed) pixel data starts


def _decoding_hint(ds: pydicom.Dataset, syntax) -> str:
    """What a failed decode of a compressed transfer syntax means, from pydicom's own decoder registry: data that
    is not encapsulated (an uncompressed file mislabelled), corrupt data (the decoder is installed), or the
    plugins to install. RLE Lossless needs none: pydicom decodes it with numpy."""
    if not getattr(syntax, "is_compressed", False):
        return ""
    data = ds.PixelData if isinstance(ds.PixelData, bytes) else b""
    if not data.startswith(_ITEM_TAG):
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        size = (f" (its {len(data)} bytes are exactly the uncompressed {ds.Columns}x{ds.Rows} "
                f"{ds.BitsAllocated}-bit image)" if len(data) in (expected, expected + 1) else "")
        decoder = _decoder(syntax)
        how = ("itself, with no plugin" if decoder is not None and decoder.available_plugins == ("pydicom",)
               else "with its plugins")
        return (f"; the pixel data is not encapsulated as {syntax.name} requires{size}: the file is probably "
                f"uncompressed but labelled {syntax.name}; pydicom decodes {syntax.name} {how}, once the transfer "
                "syntax matches the data (e.g. Explicit VR Little Endian)")
    decoder = _decoder(syntax)
    if decoder is None:
        return f"; pydicom cannot decode {syntax.name} at all (convert the file to a supported transfer syntax)"
    if decoder.is_available:
        plugins = tuple(decoder.available_plugins)
        how = ("itself (no plugin needed)" if plugins == ("pydicom",)
               else f"with its {' and '.join(plugins)} plugin{'s' if len(plugins) > 1 else ''} (installed)")
        return f"; pydicom decodes {syntax.name} {how}, so the pixel data is corrupt or truncated"
    return (f"; pydicom has no decoder for {syntax.name} installed; install one of: "
            f"{'; '.join(decoder.missing_dependencies)}")


def _decoder(syntax):
    """pydicom's decoder for `syntax`, or None when pydicom has none."""
    try:
        return get_decoder(syntax)
    except NotImplementedError:
        return None


def _voi_to_unit_range(values: np.ndarray, ds: pydicom.Dataset, path: PathLike) -> np.ndarray:
    """Apply the first VOI LUT (preferred, as pydicom does) or window and map its output to [0, 1]."""
    if ds.get("VOILUTSequence"):
        return _apply_voi_lut(values, ds)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first_value(ds.WindowCenter), _first_value(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        if function not in WINDOW_FUNCTIONS:
            raise DicomReadError(
                f"{path}: VOI LUT function {function!r} is not one of {sorted(WINDOW_FUNCTIONS)}"
            )
        return WINDOW_FUNCTIONS[function](values.astype(np.float64), center, max(width, 1.0))
    return _min_max(values)


def _apply_voi_lut(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    entries, first_mapped = descriptor[0] or 2**16, descriptor[1]
    indices = np.clip(np.rint(values), first_mapped, first_mapped + entries - 1).astype(np.int64)
    table = apply_voi(np.arange(first_mapped, first_mapped + entries, dtype=np.int64), ds).astype(np.float64)
    low, high = table.min(), table.max()
    if high <= low:
        return np.zeros(values.shape, np.float64)
    return (table[indices - first_mapped] - low) / (high - low)


def _window_linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR), output in [0, 1]."""
    return np.clip((values - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5, 0.0, 1.0)


def _window_linear_exact(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.3.2 (LINEAR_EXACT), output in [0, 1]."""
    return np.clip((values - center) / width + 0.5, 0.0, 1.0)


def _window_sigmoid(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.3.1 (SIGMOID), output in (0, 1)."""
    return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))


WINDOW_FUNCTIONS: Dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "LINEAR": _window_linear,
    "LINEAR_EXACT": _window_linear_exact,
    "SIGMOID": _window_sigmoid,
}


def _first_value(value) -> float:
    """Window Center/Width may hold several alternative windows; the first is the default one."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0]
    return float(value)


def _min_max(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros(values.shape, np.float64)
    return (values - low) / (high - low)


def _quantize(unit: np.ndarray, bit_depth: int) -> np.ndarray:
    top = 2**bit_depth - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.rint(np.clip(unit, 0.0, 1.0) * top).astype(dtype)
