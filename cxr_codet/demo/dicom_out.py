"""The demo's overlay as a DICOM Secondary Capture that a PACS files under the source study.

The new object keeps the source's patient and study identifiers (same StudyInstanceUID), gets new SOP
Instance and Series UIDs, and points back at the source image (Source Image Sequence, with the source's
series in Referenced Series Sequence). Pixels are the overlay as 8-bit RGB with burned-in annotation.
"""
import datetime
import re
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

SECONDARY_CAPTURE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
SERIES_NUMBER = 9001  # high, so that viewers list the AI series after the acquired ones
SERIES_DESCRIPTION = "cxr-codet detections (research use, not for diagnosis)"

# Patient and General Study module attributes copied unchanged from the source, when present.
PATIENT_AND_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "SpecificCharacterSet",
)
REQUIRED_SOURCE_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def secondary_capture(source: Dataset, overlay_rgb: np.ndarray, detections: Sequence[Dict] = ()) -> Dataset:
    """A Secondary Capture dataset of `overlay_rgb` (H x W x 3 uint8, RGB) derived from `source`, which
    must carry the study, series and SOP UIDs (a ValueError names the missing ones)."""
    missing = [k for k in REQUIRED_SOURCE_KEYWORDS if not getattr(source, k, None)]
    if missing:
        raise ValueError(f"the source DICOM has no {', '.join(missing)}: a derived object cannot reference it")
    overlay_rgb = np.ascontiguousarray(overlay_rgb)
    if overlay_rgb.ndim != 3 or overlay_rgb.shape[2] != 3 or overlay_rgb.dtype != np.uint8:
        raise ValueError(f"the overlay must be an H x W x 3 uint8 RGB image, got {overlay_rgb.shape} "
                         f"{overlay_rgb.dtype}")
    now = datetime.datetime.now()
    ds = Dataset()
    for keyword in PATIENT_AND_STUDY_KEYWORDS:
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)
    if "PatientAge" in ds and not re.fullmatch(r"\d{3}[DWMY]", str(ds.PatientAge)):
        del ds.PatientAge  # e.g. "62" from NIH-derived files: not a valid Age String ("062Y"), left out
    ds.SOPClassUID = SECONDARY_CAPTURE_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"  # workstation: a derived image made by software
    ds.SecondaryCaptureDeviceManufacturer = "cxr-codet"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = _derivation(detections)
    ds.BurnedInAnnotation = "YES"
    ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.SourceImageSequence = DicomSequence([_reference(source)])
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedInstanceSequence = DicomSequence([_reference(source)])
    ds.ReferencedSeriesSequence = DicomSequence([series])
    _set_rgb_pixels(ds, overlay_rgb)
    ds.file_meta = _file_meta(ds)
    return ds


def write_secondary_capture(source_path: Path, overlay_rgb: np.ndarray, out_path: Path,
                            detections: Sequence[Dict] = ()) -> Path:
    """Write the Secondary Capture of `overlay_rgb` derived from the DICOM at `source_path` to `out_path`."""
    source = pydicom.dcmread(str(source_path), stop_before_pixels=True)
    try:
        ds = secondary_capture(source, overlay_rgb, detections)
    except ValueError as e:
        raise ValueError(f"{source_path}: {e}") from None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(out_path), enforce_file_format=True)
    return out_path


def _reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def _derivation(detections: Sequence[Dict]) -> str:
    """A short text of what was drawn (DerivationDescription is limited to 1024 characters)."""
    findings: List[str] = [f"{d['finding']} {d['score']:.2f}" for d in detections]
    text = f"cxr-codet detections burned in ({len(findings)}): " + "; ".join(findings)
    return text if len(text) <= 1024 else text[:1020] + " ..."


def _set_rgb_pixels(ds: Dataset, rgb: np.ndarray) -> None:
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0  # R G B interleaved per pixel
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = rgb.tobytes()


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta
