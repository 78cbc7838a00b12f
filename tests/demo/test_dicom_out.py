"""The demo's DICOM Secondary Capture (--dicom-out) on synthetic DICOMs: identifiers and UID lineage of the source
kept, new series and SOP UIDs, RGB overlay pixels read back by pydicom (the real DICOM: tests/test_demo.py)."""
import numpy as np
import pydicom
import pytest
from dicom_files import write_dicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from cxr_codet.demo.dicom_out import SECONDARY_CAPTURE_SOP_CLASS, secondary_capture, write_secondary_capture

IDENTIFIERS = dict(PatientName="Doe^Jane", PatientID="P-0042", StudyInstanceUID="1.2.826.0.1.3680043.8.498.1",
                   SeriesInstanceUID="1.2.826.0.1.3680043.8.498.2", AccessionNumber="A123", StudyDate="20240102")


def overlay(height=6, width=8):
    """An RGB test image with a pure red, green and blue pixel, so that a channel swap shows."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1], rgb[0, 2] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    rgb[3:, 4:] = 128
    return rgb


def test_secondary_capture_of_a_synthetic_dicom_keeps_study_and_references_source(tmp_path):
    source_path = write_dicom(tmp_path / "source.dcm", np.zeros((4, 4)), **IDENTIFIERS)
    source = pydicom.dcmread(source_path)
    out = write_secondary_capture(source_path, overlay(), tmp_path / "sc" / "overlay.dcm",
                                  [{"finding": "Nodule", "score": 0.87}])

    sc = pydicom.dcmread(out)
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber", "StudyDate"):
        assert sc.data_element(keyword).value == source.data_element(keyword).value, keyword
    assert sc.SOPClassUID == SECONDARY_CAPTURE_SOP_CLASS == sc.file_meta.MediaStorageSOPClassUID
    assert sc.SOPInstanceUID not in (source.SOPInstanceUID, "") and sc.SOPInstanceUID == sc.file_meta.MediaStorageSOPInstanceUID
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID
    reference = sc.SourceImageSequence[0]
    assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == (source.SOPClassUID,
                                                                                   source.SOPInstanceUID)
    assert sc.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert list(sc.ImageType) == ["DERIVED", "SECONDARY"] and sc.BurnedInAnnotation == "YES"
    assert "Nodule 0.87" in sc.DerivationDescription
    assert sc.PhotometricInterpretation == "RGB"
    np.testing.assert_array_equal(sc.pixel_array, overlay())


def test_secondary_capture_rejects_a_source_without_uids_and_a_gray_overlay(tmp_path):
    source_path = write_dicom(tmp_path / "no_study.dcm", np.zeros((4, 4)))  # no StudyInstanceUID
    with pytest.raises(ValueError, match=r"no_study.dcm: the source DICOM has no StudyInstanceUID, SeriesInstanceUID"):
        write_secondary_capture(source_path, overlay(), tmp_path / "x.dcm")
    source = Dataset()
    source.update({k: v for k, v in IDENTIFIERS.items()})
    source.SOPInstanceUID, source.SOPClassUID = generate_uid(), "1.2.840.10008.5.1.4.1.1.1"
    with pytest.raises(ValueError, match=r"H x W x 3 uint8 RGB image, got \(6, 8\)"):
        secondary_capture(source, overlay()[..., 0])
