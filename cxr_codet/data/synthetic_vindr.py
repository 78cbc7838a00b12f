"""Synthetic VinDr-CXR releases at full size, for measuring the data path (tools/benchmark.py --task
vindr_data_path) and testing interrupted conversions, without the 200 GB release.

Images vary as VinDr's DICOMs do: 2,000-3,400 px sides, 12-16 stored bits, MONOCHROME1 and MONOCHROME2,
uncompressed or JPEG 2000 lossless (encoded with pydicom + pylibjpeg-openjpeg). Pixels are a smooth
chest-like field plus noise, so codecs do the work they do on radiographs. The layout is Kaggle's:
`<root>/train.csv` (3 readers per image, "No finding" or one box) and `<root>/train/<image_id>.dicom`.
"""
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from .classes import VINDR_CXR_CLASSES

SIDE_RANGE = (2000, 3400)
BITS_STORED = (12, 14, 16)
PHOTOMETRIC = ("MONOCHROME2", "MONOCHROME1")
KAGGLE_COLUMNS = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]


@dataclass(frozen=True)
class SyntheticImage:
    """What one generated DICOM is."""

    image_id: str
    width: int
    height: int
    bits_stored: int
    photometric: str
    jpeg2000: bool


def synthetic_pixels(width: int, height: int, bits_stored: int, rng: np.random.Generator) -> np.ndarray:
    """A [height, width] uint16 field: two bright lung-shaped lobes on a gradient, plus 2% noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / height, x / width
    lobes = sum(np.exp(-(((x - cx) / 0.16) ** 2 + ((y - 0.5) / 0.3) ** 2)) for cx in (0.3, 0.7))
    field = 0.25 + 0.2 * y + 0.5 * lobes
    field += rng.normal(0.0, 0.02, size=field.shape).astype(np.float32)
    top = 2**bits_stored - 1
    return (np.clip(field, 0.0, 1.0) * top).astype(np.uint16)


def dx_dataset(pixels: np.ndarray, bits_stored: int, photometric: str = "MONOCHROME2", compress=None) -> Dataset:
    """A minimal single-frame DX (Digital X-Ray for presentation) DICOM dataset holding uint16 `pixels`,
    JPEG 2000 or another pydicom codec when `compress` names its transfer syntax."""
    pixels = pixels.astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray for presentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.PixelData = pixels.tobytes()
    if compress is not None:
        ds.compress(compress, pixels)
    return ds


def write_synthetic_dicom(path: Path, image: SyntheticImage, rng: np.random.Generator) -> Path:
    """Write `image` as a single-frame DX DICOM (JPEG 2000 lossless when image.jpeg2000)."""
    pixels = synthetic_pixels(image.width, image.height, image.bits_stored, rng)
    if image.photometric == "MONOCHROME1":
        pixels = (2**image.bits_stored - 1 - pixels).astype(np.uint16)
    ds = dx_dataset(pixels, image.bits_stored, image.photometric, JPEG2000Lossless if image.jpeg2000 else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def plan_images(num_images: int, seed: int = 0, side_range: Sequence[int] = SIDE_RANGE) -> List[SyntheticImage]:
    """`num_images` image specs cycling through bit depths, photometrics and codecs, with random sizes."""
    rng = np.random.default_rng(seed)
    low, high = side_range
    return [
        SyntheticImage(
            image_id=f"synthetic{index:05d}",
            width=int(rng.integers(low, high + 1)),
            height=int(rng.integers(low, high + 1)),
            bits_stored=BITS_STORED[index % len(BITS_STORED)],
            photometric=PHOTOMETRIC[index % len(PHOTOMETRIC)],
            jpeg2000=(index // 2) % 2 == 1,
        )
        for index in range(num_images)
    ]


def write_synthetic_vindr_release(
    root: Path, num_images: int, seed: int = 0, side_range: Optional[Sequence[int]] = None
) -> List[SyntheticImage]:
    """A Kaggle-layout release of `num_images` synthetic DICOMs under `root`; returns their specs.

    Every other image has one "Aortic enlargement" box read by all 3 readers; the others are "No finding".
    """
    root = Path(root)
    images = plan_images(num_images, seed, side_range or SIDE_RANGE)
    rng = np.random.default_rng(seed + 1)
    rows = []
    for index, image in enumerate(images):
        write_synthetic_dicom(root / "train" / f"{image.image_id}.dicom", image, rng)
        for reader in ("R8", "R9", "R10"):
            if index % 2:
                box = [image.width * 0.4, image.height * 0.3, image.width * 0.6, image.height * 0.5]
                rows.append([image.image_id, VINDR_CXR_CLASSES[0], 0, reader] + [f"{v:.1f}" for v in box])
            else:
                rows.append([image.image_id, "No finding", 14, reader, "", "", "", ""])
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(KAGGLE_COLUMNS)
        writer.writerows(rows)
    return images
