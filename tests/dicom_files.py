"""Synthetic DICOM files for tests: a ramp of stored values, a minimal DX DICOM holding given pixels, and one whose
header claims a huge image; REAL_DICOM is the real chest DICOM under ../shared/data."""
from pathlib import Path

import numpy as np
import pydicom
from image_files import HUGE

from cxr_codet.data.synthetic_vindr import dx_dataset

REAL_DICOM = "dicom/cr-chest-jpeg-baseline.dcm"


def write_dicom(path, pixels, bits_stored=12, photometric="MONOCHROME2", compress=None, **elements):
    """A minimal single-frame DX DICOM holding `pixels` (uint16) with the given extra elements."""
    ds = dx_dataset(pixels, bits_stored, photometric)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if compress is not None:
        ds.compress(compress, pixels.astype(np.uint16))
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(height=8, width=16, top=4095):
    """Stored values rising left to right from 0 to `top`."""
    return np.tile(np.linspace(0, top, width).round().astype(np.uint16), (height, 1))


def huge_dicom_header(path: Path) -> Path:
    """A DICOM whose header says 10000 x 10000 (its pixel data is tiny: only the header may be read)."""
    write_dicom(path, ramp(height=8, width=8))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = HUGE, HUGE
    ds.save_as(path)
    return path
