"""Bad input everywhere it enters: the COCO, NIH and MS-CXR loaders, the VinDr converter, the image readers and
mapper, the demo, and training itself. Each case gives a clear error naming the file (and row or id) or a
counted skip; none crashes deep inside torch and none is lost silently.

Decision on huge images: a PNG/JPEG/DICOM whose header declares more than MAX_IMAGE_PIXELS (50 megapixels;
a chest radiograph has at most ~18) is refused from its header alone, before any decoding, so memory stays
bounded; the tests measure that with the process's resident high-water mark.
"""
import json
import logging
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from test_demo import save_tiny_model
from test_dicom import ramp, write_dicom

from cxr_codet.data.converters import ConverterError, VindrConversionOptions, convert_vindr
from cxr_codet.data.converters.images import FAILED, ImageJob, convert_one
from cxr_codet.data.datasets.coco_cxr import load_cxr_coco_json
from cxr_codet.data.datasets.ms_cxr import read_ms_cxr_csv
from cxr_codet.data.datasets.nih_cxr14 import load_nih_cxr14_bbox, read_bbox_csv
from cxr_codet.data.dicom import DicomReadError, read_dicom_image
from cxr_codet.data.mapper import CXRDatasetMapper, read_gray_image
from cxr_codet.demo.cli import main as demo_main
from cxr_codet.config import build_cfg
from cxr_codet.benchmark.memory import PeakMemory
from cxr_codet.engine.trainer import CXRTrainer

REPO = Path(__file__).resolve().parents[1]
BASELINE = str(REPO / "configs" / "phantom" / "faster_rcnn_R18_FPN_phantom.yaml")
REAL_DICOM = "dicom/cr-chest-jpeg-baseline.dcm"
HUGE = 10_000
TINY_INPUT = ["INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 64, "INPUT.MIN_SIZE_TEST", 64,
              "INPUT.MAX_SIZE_TEST", 64]


# ---------------------------------------------------------------------------------------------- helpers


def write_gray_png(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit gray PNG of any size, streamed row by row (a 10000 x 10000 one costs ~100 KB, not 100 MB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(1)
    row = b"\x00" + b"\x80" * width  # filter byte + mid-gray pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def truncated_png(path: Path) -> Path:
    ok, encoded = cv2.imencode(".png", (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    path.write_bytes(encoded.tobytes()[: len(encoded) // 2])
    return path


def huge_dicom_header(path: Path) -> Path:
    """A DICOM whose header says 10000 x 10000 (its pixel data is tiny: only the header may be read)."""
    write_dicom(path, ramp(height=8, width=8))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = HUGE, HUGE
    ds.save_as(path)
    return path


def _record(path: Path, width: int, height: int) -> dict:
    return {"file_name": str(path), "image_id": 7, "width": width, "height": height}


# ---------------------------------------------------------------------------------------------- COCO loader


def _coco(**changes):
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80, "caption": "Findings: nodule."},
                   {"id": 2, "file_name": "b.png", "width": 100, "height": 80}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [10, 10, 20, 20]}],
        "categories": [{"id": 0, "name": "Nodule/Mass"}],
    }
    coco.update(changes)
    return coco


def _load(tmp_path, content):
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "data.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return load_cxr_coco_json(str(path), str(tmp_path / "images"))


IMAGE = {"id": 1, "file_name": "a.png", "width": 100, "height": 80}
BAD_COCO = {
    "empty file": (b"", r"data\.json is not valid JSON"),
    "non-UTF-8 caption": (b'{"images": [{"caption": "caf\xe9"}], "annotations": [], "categories": []}',
                          r"data\.json is not UTF-8 text \(byte \d+"),
    "top level is a list": ("[]", r"expected a JSON object .* got a list"),
    "missing annotations": (json.dumps({"images": [], "categories": []}), r"top-level key 'annotations' is missing"),
    "image entry not an object": (_coco(images=[IMAGE, 5]), r"images entry #1 is a int, not an object"),
    "image without id": (_coco(images=[{"file_name": "a.png", "width": 1, "height": 1}]),
                         r"image entry #0 \(file 'a.png'\) has no 'id'"),
    "image without width": (_coco(images=[{"id": 1, "file_name": "a.png", "height": 80}]),
                            r"image id 1 has no positive 'width' \(got None\)"),
    "duplicate image id": (_coco(images=[IMAGE, dict(IMAGE, file_name="b.png")]), r"duplicate image id 1"),
    "caption not text": (_coco(images=[dict(IMAGE, caption=3)]), r"image id 1 has a 'caption' that is not text"),
    "captions not an object": (_coco(images=[dict(IMAGE, captions="short")]),
                               r"image id 1 has 'captions' 'short'; expected \{granularity: text\}"),
    "unknown class name": (_coco(categories=[{"id": 0, "name": "Tumour"}]),
                           r"category id 0 has unknown name 'Tumour'"),
    "annotation without bbox": (_coco(annotations=[{"id": 4, "image_id": 1, "category_id": 0}]),
                                r"annotation id 4 \(image id 1\) has malformed 'bbox' None"),
    "annotation without category": (_coco(annotations=[{"id": 4, "image_id": 1, "bbox": [1, 1, 2, 2]}]),
                                    r"annotation id 4 \(image id 1\) has unknown category id None"),
    "annotation of unknown image": (_coco(annotations=[{"id": 4, "image_id": 9, "category_id": 0,
                                                        "bbox": [1, 1, 2, 2]}]),
                                    r"annotation id 4 refers to unknown image id 9"),
    "NaN coordinate": ('{"images": [{"id": 1, "file_name": "a.png", "width": 9, "height": 9}], "annotations": '
                       '[{"id": 4, "image_id": 1, "category_id": 0, "bbox": [NaN, 1, 2, 2]}], '
                       '"categories": [{"id": 0, "name": "Nodule/Mass"}]}',
                       r"annotation id 4 \(image id 1\) has malformed 'bbox' \[nan, 1, 2, 2\]"),
    "boolean coordinate": (_coco(annotations=[{"id": 4, "image_id": 1, "category_id": 0, "bbox": [1, 1, True, 2]}]),
                           r"malformed 'bbox' \[1, 1, True, 2\]"),
}


@pytest.mark.parametrize("case", list(BAD_COCO))
def test_coco_loader_names_the_file_and_the_entry(tmp_path, case):
    content, message = BAD_COCO[case]
    with pytest.raises(ValueError, match=message):
        _load(tmp_path, content)


def test_coco_loader_counts_skipped_and_clipped_boxes(tmp_path, caplog):
    boxes = {1: [10, 10, 20, 20], 2: [-1, -1, 20, 20], 3: [-50, -50, 20, 20], 4: [30, 30, 0, 10], 5: [5, 5, 10, -3]}
    annotations = [{"id": i, "image_id": 1, "category_id": 0, "bbox": b} for i, b in boxes.items()]
    with caplog.at_level(logging.WARNING, logger="cxr_codet.data.datasets.coco_cxr"):
        records = _load(tmp_path, _coco(annotations=annotations))
    kept = records[0]["annotations"]
    assert [a["bbox"] for a in kept] == [[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 19.0, 19.0]]
    assert records[1]["annotations"] == []  # the image without boxes is kept as a "No finding" image
    warning = caplog.text
    assert "skipped 2 (degenerate box (w or h <= 0); e.g. annotation 4 of image 1, annotation 5 of image 1)" in warning
    assert "skipped 1 (box outside the image; e.g. annotation 3 of image 1)" in warning
    assert "clipped 1 (clipped to the image; e.g. annotation 2 of image 1)" in warning


# ---------------------------------------------------------------------------------------------- NIH and MS-CXR


def test_nih_box_list_errors_and_counted_skips(tmp_path, caplog):
    csv = tmp_path / "BBox_List_2017.csv"
    header = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
    for content, message in (
        (b"", r"BBox_List_2017\.csv: cannot read as a UTF-8 CSV \(EmptyDataError"),
        ((header + "a.png,Atel\xe9ctasis,1,2,3,4\n").encode("latin-1"),
         r"BBox_List_2017\.csv: 1 line is not valid UTF-8: line 2 \(column Finding Label, byte 0xe9\)"),
        ((header + "a.png,Tumour,1,2,3,4\n").encode(), r"line 2: unknown finding 'Tumour'"),
        ((header + "a.png,Mass,1,2,3,4\nb.png,Mass,1,nan,3,4\n").encode(),
         r"line 3: box \['1', nan, '3', '4'\] is not four numbers"),
    ):
        csv.write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_bbox_csv(str(csv))

    images = tmp_path / "images"
    images.mkdir()
    write_gray_png(images / "a.png", 32, 32)
    write_gray_png(images / "b.png", 1, 1)
    csv.write_text(header + "a.png,Mass,4,4,10,10\na.png,Nodule,-40,-40,10,10\na.png,Effusion,5,5,0,8\n"
                   "b.png,Nodule,0,0,5,5\nmissing.png,Mass,1,1,2,2\n")
    with caplog.at_level(logging.WARNING, logger="cxr_codet.data.datasets.nih_cxr14"):
        records = load_nih_cxr14_bbox(str(csv), str(images))
    by_name = {r["image_index"]: r for r in records}
    assert [a["bbox"] for a in by_name["a.png"]["annotations"]] == [[4.0, 4.0, 10.0, 10.0]]
    assert by_name["b.png"]["annotations"][0]["bbox"] == [0.0, 0.0, 1.0, 1.0]  # a 1 x 1 image: clipped to it
    assert "2 x box with no area inside the image (skipped) (e.g. line 3, line 4)" in caplog.text
    assert "1 x image missing or unreadable (skipped with its boxes)" in caplog.text
    assert "1 x box clipped to the image (kept)" in caplog.text


def test_ms_cxr_csv_errors(tmp_path):
    csv = tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv"
    header = "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height\n"
    for content, message in (
        (b"", r"cannot read as a UTF-8 CSV \(EmptyDataError"),
        ((header + "d,Pneumonia,caf\xe9 opacity,p.jpg,1,2,3,4,100,100\n").encode("latin-1"),
         r"1 line is not valid UTF-8: line 2 \(column label_text, byte 0xe9\)"),
        ((header + "d,Tumour,text,p.jpg,1,2,3,4,100,100\n").encode(), r"line 2: unknown category_name 'Tumour'"),
        ((header + "d,Pneumonia,text,p.jpg,1,2,0,4,100,100\n").encode(), r"line 2: .* must be numbers with positive"),
        ((header + "d,Pneumonia,text,p.jpg,NaN,2,3,4,100,100\n").encode(), r"line 2: .* must be numbers"),
        ("dicom_id,category_name\nd,Pneumonia\n".encode(), r"missing column\(s\) \['label_text', 'path'"),
    ):
        csv.write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_ms_cxr_csv(str(csv))


# ---------------------------------------------------------------------------------------------- VinDr converter


KAGGLE_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"


def test_vindr_converter_counts_every_bad_row(tmp_path):
    rows = [
        "k0,Cardiomegaly,3,R1,10,10,50,40",  # fine
        "k0,Cardiomegaly,3,R2,nan,10,50,40",  # NaN coordinate
        "k0,Cardiomegaly,3,R3,10,10,inf,40",  # infinite coordinate
        "k1,Nodule/Mass,8,R1,-5,-5,20,20",  # negative: clipped to the image
        "k1,Nodule/Mass,8,R2,30,30,30,60",  # zero area
        "k1,Tumour,8,R3,1,1,5,5",  # unknown class name
        "k2,No finding,14,R1,,,,",
    ]
    (tmp_path / "train.csv").write_text(KAGGLE_HEADER + "\n".join(rows) + "\n")
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("image_id,width,height\nk0,100,100\nk1,100,100\nk2,100,100\nk2,100,100\n")  # repeat agrees
    options = VindrConversionOptions(csv_only=True, size_table=sizes, val_fraction=0.34)
    report = convert_vindr(tmp_path / "train.csv", tmp_path / "out", options)
    skipped = {(item["reason"], item["row"]) for item in report.skipped}
    assert skipped == {
        ("missing or non-numeric box coordinates", 3),
        ("infinite box coordinates", 4),
        ("empty box (x_max <= x_min or y_max <= y_min)", 6),
        ("unknown finding name 'Tumour'", 7),
    }
    assert any("1 reader boxes reached beyond the image and were clipped" in note for note in report.notes)
    assert sum(report.boxes_in["train"].values()) == 2 and sum(report.images.values()) == 3


def test_vindr_converter_refuses_unreadable_tables(tmp_path):
    csv = tmp_path / "train.csv"
    for content, message in (
        (b"", r"train\.csv: cannot read as CSV"),
        ((KAGGLE_HEADER + "k0,Cardiom\xe9galy,3,R1,1,1,5,5\n").encode("latin-1"), r"line 2 \(column class_name"),
        (b"image_id,class_name\nk0,ILD\n", r"train\.csv: missing column\(s\) \['x_min'"),
    ):
        csv.write_bytes(content)
        with pytest.raises(ConverterError, match=message):
            convert_vindr(csv, tmp_path / "out", VindrConversionOptions(csv_only=True))
    csv.write_text(KAGGLE_HEADER + "k0,Cardiomegaly,3,R1,1,1,5,5\n")
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("image_id,width,height\nk0,100,100\nk0,200,100\n")
    with pytest.raises(ConverterError, match=r"sizes\.csv: image k0 is listed more than once with different sizes"):
        convert_vindr(csv, tmp_path / "out", VindrConversionOptions(csv_only=True, size_table=sizes))
    sizes.write_bytes(b"")
    with pytest.raises(ConverterError, match=r"sizes\.csv: cannot read the size table as CSV"):
        convert_vindr(csv, tmp_path / "out", VindrConversionOptions(csv_only=True, size_table=sizes))


def test_vindr_image_stage_reports_bad_dicoms_and_converts_a_1x1(tmp_path, shared_data):
    real = (shared_data / REAL_DICOM).read_bytes()
    (tmp_path / "truncated.dicom").write_bytes(real[: len(real) // 2])
    (tmp_path / "empty.dicom").write_bytes(b"")
    huge_dicom_header(tmp_path / "huge.dicom")
    write_dicom(tmp_path / "one.dicom", np.array([[300]], dtype=np.uint16))
    results = {
        name: convert_one(ImageJob(name, tmp_path / f"{name}.dicom", tmp_path / "out" / f"{name}.png"), 1024, 8)
        for name in ("truncated", "empty", "huge", "one")
    }
    assert {name for name, result in results.items() if result.status == FAILED} == {"truncated", "empty", "huge"}
    assert "truncated.dicom: the file is truncated" in results["truncated"].error
    assert "empty.dicom: the file is empty" in results["empty"].error
    assert "10000x10000 pixels (100.0 megapixels)" in results["huge"].error
    assert (results["one"].width, results["one"].height) == (1, 1)
    assert cv2.imread(str(tmp_path / "out" / "one.png"), cv2.IMREAD_UNCHANGED).shape == (1, 1)


# ---------------------------------------------------------------------------------------------- images and mapper


def test_image_reader_refuses_empty_truncated_and_huge_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    truncated_png(tmp_path / "truncated.png")
    write_gray_png(tmp_path / "huge.png", HUGE, HUGE)
    for name, message in (("empty.png", "the file is empty"),
                          ("truncated.png", "not a decodable PNG/JPEG image")):
        with pytest.raises(ValueError, match=rf"cannot read image '.*{name}' \(dataset record image_id=7\): {message}"):
            read_gray_image(_record(tmp_path / name, 64, 64))
    with PeakMemory("cpu") as memory, pytest.raises(ValueError, match=r"huge\.png.* 10000x10000 pixels .* above the"):
        read_gray_image(_record(tmp_path / "huge.png", HUGE, HUGE))
    assert memory.peak_mib < 40, "the 95 MiB image must not be decoded"


def test_mapper_resizes_a_1x1_image_and_names_an_impossible_aspect_ratio(tmp_path):
    mapper = CXRDatasetMapper(build_cfg(BASELINE, TINY_INPUT), is_train=False)
    mapped = mapper(_record(write_gray_png(tmp_path / "one.png", 1, 1), 1, 1))
    assert tuple(mapped["image"].shape) == (3, 64, 64)
    write_gray_png(tmp_path / "sliver.png", 3000, 1)
    with pytest.raises(ValueError, match=r"cannot augment image '.*sliver\.png' .* of size \(1, 3000\)"):
        mapper(_record(tmp_path / "sliver.png", 3000, 1))
    with pytest.raises(ValueError, match=r"Mismatched image shape.*sliver\.png"):  # record and file disagree
        mapper(_record(tmp_path / "sliver.png", 64, 64))


def test_dicom_reader_refuses_truncated_and_huge_files(tmp_path, shared_data):
    real = (shared_data / REAL_DICOM).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(real[: int(len(real) * 0.9)])
    with pytest.raises(DicomReadError, match=r"cut\.dcm: the file is truncated"):
        read_dicom_image(tmp_path / "cut.dcm")
    with PeakMemory("cpu") as memory, pytest.raises(DicomReadError, match=r"huge\.dcm: the image is 10000x10000"):
        read_dicom_image(huge_dicom_header(tmp_path / "huge.dcm"))
    assert memory.peak_mib < 40


# ---------------------------------------------------------------------------------------------- demo


def test_demo_skips_bad_inputs_by_name_and_handles_a_1x1_image(tmp_path, shared_data):
    config = save_tiny_model(tmp_path / "model", Path(BASELINE), group_size=None)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "empty.png").write_bytes(b"")
    truncated_png(inputs / "truncated.png")
    real = (shared_data / REAL_DICOM).read_bytes()
    (inputs / "truncated.dcm").write_bytes(real[: len(real) // 3])
    write_gray_png(inputs / "huge.png", HUGE, HUGE)
    write_gray_png(inputs / "one.png", 1, 1)
    write_gray_png(inputs / "sliver.png", 3000, 1)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    out = tmp_path / "out"
    status = demo_main(["--config-file", str(config), "--input", str(inputs), str(notes), "--output", str(out),
                        "--confidence-threshold", "0"])
    assert status == 1  # some inputs were skipped
    summary = json.loads((out / "demo_summary.json").read_text())
    assert [Path(p["input"]).name for p in summary["processed"]] == ["one.png"]
    reasons = {Path(s["input"]).name: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"empty.png", "truncated.png", "truncated.dcm", "huge.png", "sliver.png", "notes.txt"}
    assert reasons["empty.png"].endswith("empty.png: the file is empty")
    assert "truncated.png: not a decodable PNG/JPEG image" in reasons["truncated.png"]
    assert "truncated.dcm: the file is truncated" in reasons["truncated.dcm"]
    assert "huge.png: the image is 10000x10000 pixels" in reasons["huge.png"]
    assert "cannot resize an image of 3000x1 pixels" in reasons["sliver.png"]
    assert "notes.txt: not a decodable PNG/JPEG image" in reasons["notes.txt"]
    record = json.loads((out / "one.json").read_text())
    assert (record["width"], record["height"]) == (1, 1) and record["detections"]
    boxes = np.array([d["box"] for d in record["detections"]])
    assert boxes.min() >= 0 and boxes.max() <= 1


# ---------------------------------------------------------------------------------------------- training


def test_non_finite_loss_stops_training_naming_the_iteration_and_the_losses(tmp_path):
    cfg = build_cfg(BASELINE, TINY_INPUT + [
        "DATASETS.TRAIN", ("cxr_phantom_tiny_train",), "DATASETS.TEST", (), "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 100, "DATALOADER.NUM_WORKERS", 0,
        "OUTPUT_DIR", str(tmp_path),
    ])
    trainer = CXRTrainer(cfg)
    model = trainer._trainer.model
    forward, calls = model.forward, []

    def nan_at_third_iteration(batched_inputs):
        losses = forward(batched_inputs)
        calls.append(len(batched_inputs))
        if len(calls) == 3:
            losses["loss_box_reg"] = losses["loss_box_reg"] * float("nan")
        return losses

    model.forward = nan_at_third_iteration
    with pytest.raises(FloatingPointError, match=r"Loss became infinite or NaN at iteration=2!") as error:
        trainer.train()
    assert calls == [2, 2, 2]  # stopped at the first non-finite loss
    assert re.search(r"'loss_box_reg': (np\.float64\()?nan", str(error.value))
    for name in ("loss_cls", "loss_rpn_cls", "loss_rpn_loc"):  # every loss is listed, with its value
        assert re.search(rf"'{name}': (np\.float64\()?\d", str(error.value)), name
    assert not (tmp_path / "model_final.pth").exists()  # no checkpoint of a diverged model
