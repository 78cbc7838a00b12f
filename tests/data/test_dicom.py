"""DICOM decoding: the real JPEG-baseline chest DICOM, and synthetic DICOMs covering MONOCHROME1, 12/16-bit,
modality rescale, windowing, VOI LUT, JPEG 2000, resizing, PNG output and unreadable files."""

import numpy as np
import pydicom
import pytest
from dicom_files import REAL_DICOM, huge_dicom_header, ramp, write_dicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless

from cxr_codet.benchmark.memory import PeakMemory
from cxr_codet.data.dicom import DicomReadError, read_dicom_image, read_dicom_size, resized_size, write_png


def test_real_jpeg_baseline_dicom_decodes_to_its_pixels(shared_data):
    path = shared_data / REAL_DICOM
    image = read_dicom_image(path)
    raw = pydicom.dcmread(path).pixel_array  # 8-bit MONOCHROME2 without window: stretching changes nothing
    assert (image.width, image.height) == (1024, 1024)
    assert image.scale == (1.0, 1.0)
    assert image.pixels.dtype == np.uint8
    assert raw.min() == 0 and raw.max() == 255
    np.testing.assert_array_equal(image.pixels, raw)
    # a chest radiograph: dark air outside the body, bright bone/mediastinum, broad contrast
    assert image.pixels.min() < 20 and image.pixels.max() > 235
    assert 60 < image.pixels.mean() < 200 and image.pixels.std() > 30
    assert read_dicom_size(path) == (1024, 1024)


def test_real_dicom_long_side_resize_reports_the_scale(shared_data):
    image = read_dicom_image(shared_data / REAL_DICOM, long_side=512)
    assert image.pixels.shape == (512, 512)
    assert (image.original_width, image.original_height) == (1024, 1024)
    assert image.scale == (0.5, 0.5)


def test_monochrome1_is_inverted(tmp_path):
    pixels = ramp()
    mono2 = read_dicom_image(write_dicom(tmp_path / "m2.dcm", pixels), long_side=None).pixels
    mono1 = read_dicom_image(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"), long_side=None).pixels
    assert mono2[0, 0] == 0 and mono2[0, -1] == 255
    assert mono1[0, 0] == 255 and mono1[0, -1] == 0
    np.testing.assert_array_equal(mono1.astype(int), 255 - mono2.astype(int))


@pytest.mark.parametrize("bits_stored", [12, 14, 16])
def test_high_bit_depth_input_stretches_to_8_and_16_bit_output(tmp_path, bits_stored):
    top = 2**bits_stored - 1
    path = write_dicom(tmp_path / "deep.dcm", ramp(top=top), bits_stored=bits_stored)
    eight = read_dicom_image(path, long_side=None).pixels
    sixteen = read_dicom_image(path, long_side=None, bit_depth=16).pixels
    assert eight.dtype == np.uint8 and sixteen.dtype == np.uint16
    assert (eight.min(), eight.max()) == (0, 255)
    assert (sixteen.min(), sixteen.max()) == (0, 65535)
    assert np.all(np.diff(sixteen[0].astype(int)) > 0)  # 16-bit output keeps every distinct level
    expected = np.rint(ramp(top=top)[0] / top * 255)
    np.testing.assert_array_equal(eight[0], expected)


def test_modality_rescale_then_window(tmp_path):
    # stored S -> value 2*S - 1024; window centre 0, width 400 shows [-200, 200]
    stored = np.array([[0, 412, 512, 612, 1000]], np.uint16)
    path = write_dicom(
        tmp_path / "rescaled.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=400
    )
    pixels = read_dicom_image(path, long_side=None).pixels[0]
    assert pixels[0] == 0 and pixels[1] == 0  # at or below the window's floor
    assert pixels[2] == 128  # the window centre: ((0 + 0.5) / 399 + 0.5) * 255 = 128
    assert pixels[3] == 255 and pixels[4] == 255
    without_voi = read_dicom_image(path, long_side=None, apply_voi_transform=False).pixels[0]
    np.testing.assert_array_equal(without_voi, np.rint(stored[0] / 1000 * 255))


def test_sigmoid_window_function(tmp_path):
    stored = np.array([[0, 2048, 4095]], np.uint16)
    path = write_dicom(
        tmp_path / "sigmoid.dcm", stored, WindowCenter=2048, WindowWidth=1000, VOILUTFunction="SIGMOID"
    )
    pixels = read_dicom_image(path, long_side=None).pixels[0]
    assert pixels[0] == 0 and pixels[1] == 128 and pixels[2] == 255


def test_voi_lut_sequence_is_applied_before_any_window(tmp_path):
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 12])
    item.add_new("LUTData", "US", [0] * 2048 + [4095] * 2048)  # a hard threshold at 2048
    stored = np.array([[0, 1000, 2047, 2048, 3000, 4095]], np.uint16)
    path = write_dicom(tmp_path / "voi.dcm", stored, VOILUTSequence=Sequence([item]), WindowCenter=10, WindowWidth=4)
    pixels = read_dicom_image(path, long_side=None).pixels[0]
    np.testing.assert_array_equal(pixels, [0, 0, 0, 255, 255, 255])


def test_jpeg2000_compressed_16_bit_matches_uncompressed(tmp_path):
    pixels = (np.arange(48 * 64).reshape(48, 64) * 7 % 4096).astype(np.uint16)
    plain = read_dicom_image(write_dicom(tmp_path / "plain.dcm", pixels), long_side=None, bit_depth=16)
    j2k_path = write_dicom(tmp_path / "j2k.dcm", pixels, compress=JPEG2000Lossless)
    assert pydicom.dcmread(j2k_path).file_meta.TransferSyntaxUID == JPEG2000Lossless
    j2k = read_dicom_image(j2k_path, long_side=None, bit_depth=16)
    np.testing.assert_array_equal(j2k.pixels, plain.pixels)


def test_resize_keeps_aspect_and_never_upsamples(tmp_path):
    path = write_dicom(tmp_path / "wide.dcm", ramp(height=300, width=450))
    image = read_dicom_image(path, long_side=100)
    assert (image.width, image.height) == (100, 67)
    assert image.scale == pytest.approx((100 / 450, 67 / 300))
    assert read_dicom_image(path, long_side=1024).pixels.shape == (300, 450)
    assert resized_size(3000, 2000, 1024) == (1024, 683)
    assert resized_size(2000, 3000, None) == (2000, 3000)


def test_write_png_round_trips_8_and_16_bit(tmp_path):
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        pixels = np.linspace(0, top, 40).astype(dtype).reshape(5, 8)
        target = tmp_path / f"out_{top}.png"
        write_png(pixels, target)
        np.testing.assert_array_equal(np.array(Image.open(target)), pixels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_255.png", "out_65535.png"]  # no partial files


def test_empty_file_is_named_in_the_error(tmp_path):
    path = tmp_path / "empty.dicom"
    path.write_bytes(b"")
    with pytest.raises(DicomReadError, match=r"empty\.dicom: the file is empty"):
        read_dicom_image(path)


def test_non_dicom_file_is_named_in_the_error(tmp_path):
    path = tmp_path / "notes.dicom"
    path.write_text("not an image")
    with pytest.raises(DicomReadError, match=r"notes\.dicom: not a DICOM file"):
        read_dicom_image(path)


def test_truncated_pixel_data_is_named_in_the_error(tmp_path):
    path = write_dicom(tmp_path / "full.dcm", ramp(height=64, width=64))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(path.read_bytes()[: -64 * 32 * 2])
    with pytest.raises(DicomReadError, match=r"truncated\.dcm: cannot decode pixel data .*less than expected"):
        read_dicom_image(truncated)


def test_missing_file_and_missing_pixel_data_and_colour_are_rejected(tmp_path):
    with pytest.raises(DicomReadError, match=r"absent\.dcm: no such DICOM file"):
        read_dicom_image(tmp_path / "absent.dcm")
    path = write_dicom(tmp_path / "nopixels.dcm", ramp())
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(DicomReadError, match=r"nopixels\.dcm: the file has no pixel data"):
        read_dicom_image(path)
    colour = write_dicom(tmp_path / "colour.dcm", ramp(), photometric="RGB")
    with pytest.raises(DicomReadError, match=r"colour\.dcm: photometric interpretation 'RGB' is not a grayscale"):
        read_dicom_image(colour)


def test_unsupported_bit_depth_is_rejected(shared_data):
    with pytest.raises(ValueError, match="bit_depth must be one of"):
        read_dicom_image(shared_data / REAL_DICOM, bit_depth=12)


def _relabelled(path, syntax_uid: str):
    """The file at `path` (Explicit VR Little Endian) with another transfer syntax UID in its meta header."""
    data = path.read_bytes()
    old = pydicom.uid.ExplicitVRLittleEndian.encode() + b"\x00"
    assert data.count(old) == 1 and len(syntax_uid) == len(old) - 1
    out = path.with_name(f"relabelled_{path.name}")
    out.write_bytes(data.replace(old, syntax_uid.encode() + b"\x00"))
    return out


def test_rle_decoding_errors_say_what_pydicom_needs_and_what_is_wrong(tmp_path):
    """pydicom 3 decodes RLE Lossless with its own numpy decoder: no pylibjpeg hint for RLE files."""
    raw = write_dicom(tmp_path / "raw.dcm", ramp(16, 16))
    mislabelled = _relabelled(raw, pydicom.uid.RLELossless)
    with pytest.raises(DicomReadError) as info:
        read_dicom_image(mislabelled)
    message = str(info.value)
    assert message.startswith(f"{mislabelled}: cannot decode pixel data with transfer syntax RLE Lossless (")
    assert message.endswith(
        "; the pixel data is not encapsulated as RLE Lossless requires (its 512 bytes are exactly the uncompressed "
        "16x16 16-bit image): the file is probably uncompressed but labelled RLE Lossless; pydicom decodes RLE "
        "Lossless itself, with no plugin, once the transfer syntax matches the data (e.g. Explicit VR Little Endian)")
    assert "pylibjpeg" not in message
    ds = pydicom.dcmread(write_dicom(tmp_path / "rle.dcm", ramp(16, 16), compress=pydicom.uid.RLELossless))
    ds.PixelData = pydicom.encaps.encapsulate([b"\x01\x00\x00\x00" + b"\x40" + b"\x00" * 63 + b"\xff" * 40])
    ds.save_as(tmp_path / "corrupt_rle.dcm")
    with pytest.raises(DicomReadError) as info:
        read_dicom_image(tmp_path / "corrupt_rle.dcm")
    assert str(info.value).endswith("; pydicom decodes RLE Lossless itself (no plugin needed), so the pixel data "
                                    "is corrupt or truncated")
    assert read_dicom_image(tmp_path / "rle.dcm", long_side=None).pixels.shape == (16, 16)


def test_a_missing_decoder_plugin_is_named_from_pydicoms_own_list(shared_data, tmp_path, monkeypatch):
    from pydicom.pixels.decoders.base import Decoder

    source = pydicom.dcmread(shared_data / REAL_DICOM)
    source.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8" + b"\x00" * 1000])  # a JPEG start, then nothing
    source.save_as(tmp_path / "cut_jpeg.dcm")
    with pytest.raises(DicomReadError) as info:
        read_dicom_image(tmp_path / "cut_jpeg.dcm")
    assert str(info.value).endswith("; pydicom decodes JPEG Baseline (Process 1) with its pillow and pylibjpeg "
                                    "plugins (installed), so the pixel data is corrupt or truncated")
    def no_plugin(self):
        raise RuntimeError("Unable to decode the pixel data as there are no pixel data handlers available")

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))  # as without pillow and pylibjpeg
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(no_plugin))
    with pytest.raises(DicomReadError) as info:
        read_dicom_image(shared_data / REAL_DICOM)
    assert "; pydicom has no decoder for JPEG Baseline (Process 1) installed; install one of: " in str(info.value)
    assert "gdcm - requires gdcm>=3.0.10" in str(info.value)


def test_dicom_reader_refuses_truncated_and_huge_files(tmp_path, shared_data):
    real = (shared_data / REAL_DICOM).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(real[: int(len(real) * 0.9)])
    with pytest.raises(DicomReadError, match=r"cut\.dcm: the file is truncated"):
        read_dicom_image(tmp_path / "cut.dcm")
    with PeakMemory("cpu") as memory, pytest.raises(DicomReadError, match=r"huge\.dcm: the image is 10000x10000"):
        read_dicom_image(huge_dicom_header(tmp_path / "huge.dcm"))
    assert memory.peak_mib < 40
