"""VinDr-CXR converter: the annotation stage on the full real train.csv.gz, and a tiny synthetic release in
each layout (DICOMs written here) for box scaling, clipping, skips, reruns, splits, the CLI and bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT
from dicom_files import REAL_DICOM, huge_dicom_header, ramp, write_dicom
from PIL import Image

from cxr_codet.data.classes import VINDR_CXR_CLASSES
from cxr_codet.data.converters import ConverterError, VindrConversionOptions, build_vindr_coco, convert_vindr
from cxr_codet.data.converters.box_fusion import fuse_reader_boxes
from cxr_codet.data.converters.images import FAILED, ImageJob, convert_images, convert_one, remove_partial_files
from cxr_codet.data.converters.report import ConversionReport
from cxr_codet.data.converters.splits import split_train_val
from cxr_codet.data.converters.vindr_cli import main
from cxr_codet.data.converters.vindr_release import locate_release, read_reader_boxes
from cxr_codet.data.datasets.coco_cxr import load_cxr_coco_json
from cxr_codet.data.datasets.vindr_cxr import VINDR_CXR_SPLITS
from cxr_codet.data.synthetic_vindr import plan_images, synthetic_pixels, write_synthetic_vindr_release

VINDR_CSV = "vindr-cxr-annotations/train.csv.gz"


@pytest.fixture(scope="module")
def real_csv(shared_data):
    return pd.read_csv(shared_data / VINDR_CSV)


@pytest.fixture(scope="module")
def real_readers(shared_data):
    report = ConversionReport(VINDR_CXR_CLASSES)
    readers = read_reader_boxes(locate_release(shared_data / VINDR_CSV), report)
    return readers, report


@pytest.fixture(scope="module")
def real_wbf(real_readers):
    readers, _ = real_readers
    report = ConversionReport(VINDR_CXR_CLASSES)
    return build_vindr_coco(readers, None, VindrConversionOptions(), report), report


def test_full_csv_reads_every_image_and_every_reader_box(real_csv, real_readers):
    readers, report = real_readers
    assert len(real_csv) == 67914
    assert len(readers.image_ids["train"]) == 15000
    assert report.skipped == []
    expected = real_csv[real_csv["class_id"] < 14]["class_name"].value_counts().to_dict()
    assert dict(Counter(VINDR_CXR_CLASSES[c] for c in readers.boxes["category_id"])) == expected


def test_full_csv_boxes_in_per_finding_equal_the_csv(real_csv, real_wbf):
    _, report = real_wbf
    expected = real_csv[real_csv["class_id"] < 14]["class_name"].value_counts()
    assert dict(report.boxes_in["train"]) == expected.to_dict()
    assert sum(report.boxes_in["train"].values()) == 36096


def test_full_csv_split_is_94_to_6_with_every_finding_in_val(real_wbf):
    coco, report = real_wbf
    assert sorted(coco) == ["train", "val"]  # the Kaggle release has no test annotations
    train_ids = {image["vindr_image_id"] for image in coco["train"]["images"]}
    val_ids = {image["vindr_image_id"] for image in coco["val"]["images"]}
    assert (len(train_ids), len(val_ids)) == (14100, 900)
    assert not train_ids & val_ids
    assert report.images == {"vindr_cxr_train": 14100, "vindr_cxr_val": 900}
    val_findings = {VINDR_CXR_CLASSES[a["category_id"]] for a in coco["val"]["annotations"]}
    assert val_findings == set(VINDR_CXR_CLASSES)
    # stratified: the share of normal images is the same on both sides (within a percentage point)
    normal = {split: np.mean([not i["image_labels"] for i in coco[split]["images"]]) for split in coco}
    assert abs(normal["train"] - normal["val"]) < 0.01


def test_full_csv_no_finding_images_are_kept_without_boxes(real_csv, real_wbf):
    coco, _ = real_wbf
    with_boxes = set(real_csv.loc[real_csv["class_id"] < 14, "image_id"])
    normal = set(real_csv["image_id"]) - with_boxes
    assert len(normal) == 10606
    for split in coco:
        annotated = {a["image_id"] for a in coco[split]["annotations"]}
        for image in coco[split]["images"]:
            is_normal = image["vindr_image_id"] in normal
            assert (image["id"] not in annotated) == is_normal
            assert (image["image_labels"] == []) == is_normal


@pytest.mark.slow
def test_full_csv_every_fused_box_comes_from_a_reader_box_of_its_finding(real_csv, real_wbf):
    coco, report = real_wbf
    readers = real_csv[real_csv["class_id"] < 14]
    by_key = {key: group[["x_min", "y_min", "x_max", "y_max"]].to_numpy()
              for key, group in readers.groupby(["image_id", "class_id"])}
    fused = 0
    for split in coco:
        names = {image["id"]: image["vindr_image_id"] for image in coco[split]["images"]}
        for annotation in coco[split]["annotations"]:
            x, y, w, h = annotation["bbox"]
            box = np.array([x, y, x + w, y + h])
            source = by_key[(names[annotation["image_id"]], annotation["category_id"])]
            inter_w = np.clip(np.minimum(box[2], source[:, 2]) - np.maximum(box[0], source[:, 0]), 0, None)
            inter_h = np.clip(np.minimum(box[3], source[:, 3]) - np.maximum(box[1], source[:, 1]), 0, None)
            inter = inter_w * inter_h
            union = w * h + (source[:, 2] - source[:, 0]) * (source[:, 3] - source[:, 1]) - inter
            assert (inter / union).max() >= 0.4 - 1e-6
            # a weighted average of reader boxes lies within their hull
            assert np.all(box[:2] >= source[:, :2].min(axis=0) - 0.01)
            assert np.all(box[2:] <= source[:, 2:].max(axis=0) + 0.01)
            assert 1 <= annotation["readers"] <= 3
            fused += 1
    assert fused == sum(report.boxes_out["train"].values())
    for name in VINDR_CXR_CLASSES:  # fusion merges duplicates but never invents or drops a finding
        assert 0 < report.boxes_out["train"][name] <= report.boxes_in["train"][name]


@pytest.mark.slow
def test_full_csv_agreement_and_keep_all_strategies(real_readers):
    readers, _ = real_readers
    boxes = readers.boxes
    keep_all = fuse_reader_boxes(boxes, "keep_all")
    assert len(keep_all) == len(boxes) == 36096
    wbf = fuse_reader_boxes(boxes, "wbf", iou_threshold=0.4)
    agreed = fuse_reader_boxes(boxes, "agreement", iou_threshold=0.4, min_readers=2)
    assert len(agreed) < len(wbf) < len(keep_all)
    assert agreed["readers"].min() >= 2
    assert len(agreed) == int((wbf["readers"] >= 2).sum())
    assert len(fuse_reader_boxes(boxes, "agreement", min_readers=3)) < len(agreed)
    # a stricter IoU merges less
    assert len(fuse_reader_boxes(boxes, "wbf", iou_threshold=0.7)) > len(wbf)


def test_full_csv_coco_entries_have_captions_labels_and_categories(real_wbf):
    coco, _ = real_wbf
    train = coco["train"]
    assert train["categories"] == [{"id": i, "name": n} for i, n in enumerate(VINDR_CXR_CLASSES)]
    ids = [image["id"] for split in coco for image in coco[split]["images"]]
    assert len(set(ids)) == 15000
    assert len({a["id"] for a in train["annotations"]}) == len(train["annotations"])
    image = next(i for i in train["images"] if len(i["image_labels"]) >= 2)
    assert image["file_name"] == f"{image['vindr_image_id']}.png"  # relative to images/train
    assert (image["width"], image["height"]) == (None, None)  # CSV-only without a size table
    assert set(image["captions"]) == {"elaborate", "unelaborate"}
    assert image["caption"] == image["captions"]["unelaborate"]
    assert len(image["captions"]["elaborate"]) > len(image["captions"]["unelaborate"])
    for name in image["image_labels"]:
        assert name.lower() in image["caption"].lower()
    normal = next(i for i in train["images"] if not i["image_labels"])
    assert "no finding" in normal["caption"].lower()


def test_split_is_seeded_and_covers_rare_labels():
    ids = [f"i{k}" for k in range(200)]
    labels = [["common"] if k % 3 == 0 else [] for k in range(200)]
    labels[7], labels[8] = ["rare"], ["rare", "common"]
    train, val = split_train_val(ids, labels, val_fraction=0.05, seed=3)
    assert len(val) == 10 and len(train) == 190
    assert {"rare", "common"} <= {name for i in val for name in labels[ids.index(i)]}
    assert split_train_val(ids, labels, 0.05, seed=3) == (train, val)
    assert split_train_val(ids, labels, 0.05, seed=4)[1] != val


PHYSIONET_TRAIN = """image_id,rad_id,class_name,x_min,y_min,x_max,y_max
img0,R1,Cardiomegaly,10,10,50,40
img0,R2,Cardiomegaly,12,10,50,42
img0,R3,No finding,,,,
img1,R1,Nodule/Mass,-2,-1,10,12
img1,R1,Lung Opacity,-2,-1,10,12
img1,R2,Nodule/Mass,0,0,10,12
img1,R3,Edema,5,5,20,20
img2,R1,No finding,,,,
img2,R2,No finding,,,,
img2,R3,No finding,,,,
img3,R1,Pleural Effusion,30,20,60,45
img3,R2,Pneumothorax,70,10,90,30
img3,R3,Alien finding,1,1,5,5
img4,R1,Aortic enlargement,,,,
img4,R2,No finding,,,,
img5,R1,Pleural effusion,20,20,40,40
img5,R2,Pleural effusion,22,21,41,40
img5,R3,Pleural effusion,21,20,40,41
img6,R1,Cardiomegaly,10,10,50,40
img7,R1,No finding,,,,
"""


PHYSIONET_TEST = """image_id,class_name,x_min,y_min,x_max,y_max
tst0,Cardiomegaly,10,10,50,40
tst0,Cardiomegaly,11,10,50,40
tst1,No finding,,,,
"""


IMAGE_LABELS_TRAIN = """image_id,rad_ID,Cardiomegaly,Pneumonia,No finding
img0,R1,1,0,0
img0,R2,1,1,0
img2,R1,0,0,1
ghost,R1,0,0,1
"""


def make_physionet_release(root: Path) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "annotations_train.csv").write_text(PHYSIONET_TRAIN)
    (root / "annotations" / "annotations_test.csv").write_text(PHYSIONET_TEST)
    (root / "annotations" / "image_labels_train.csv").write_text(IMAGE_LABELS_TRAIN)
    for split, ids in (("train", ["img0", "img1", "img2", "img3", "img4", "img5", "img9"]), ("test", ["tst0", "tst1"])):
        (root / split).mkdir()
        for image_id in ids:
            write_dicom(root / split / f"{image_id}.dicom", ramp(height=48, width=64))
    (root / "train" / "img7.dicom").write_bytes(b"\x00" * 500)  # unreadable; img6 has no DICOM at all
    return root


def snapshot(folder: Path):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def physionet_conversion(tmp_path):
    source = make_physionet_release(tmp_path / "vindr-cxr")
    before = snapshot(source)
    out = tmp_path / "datasets"
    options = VindrConversionOptions(long_side=32, val_fraction=1 / 3, seed=0)
    report = convert_vindr(source, out, options)
    assert snapshot(source) == before  # the source tree is never written
    return source, out / "vindr_cxr", options, report


def load_split(dataset_dir: Path, split: str) -> dict:
    return json.loads((dataset_dir / "annotations" / f"vindr_cxr_{split}.json").read_text())


def boxes_by_image(coco: dict):
    names = {image["id"]: image["vindr_image_id"] for image in coco["images"]}
    out = {}
    for a in coco["annotations"]:
        out.setdefault(names[a["image_id"]], []).append((VINDR_CXR_CLASSES[a["category_id"]], a["bbox"], a["readers"]))
    return out


def test_physionet_release_converts_images_and_scaled_fused_boxes(physionet_conversion):
    _, dataset_dir, _, report = physionet_conversion
    train, val, test = (load_split(dataset_dir, s) for s in ("train", "val", "test"))
    assert report.images == {"vindr_cxr_train": 4, "vindr_cxr_val": 2, "vindr_cxr_test": 2}
    images = {i["vindr_image_id"]: i for i in train["images"] + val["images"]}
    assert sorted(images) == ["img0", "img1", "img2", "img3", "img4", "img5"]
    for image_id, entry in images.items():
        assert (entry["width"], entry["height"]) == (32, 24)
        png = dataset_dir / "images" / "train" / entry["file_name"]
        assert entry["file_name"] == f"{image_id}.png"
        assert Image.open(png).size == (32, 24) and Image.open(png).mode == "L"
    boxes = {**boxes_by_image(train), **boxes_by_image(val)}
    assert boxes["img0"] == [("Cardiomegaly", [5.5, 5.0, 19.5, 15.5], 2)]  # mean of 2 readers, x 0.5
    assert sorted(boxes["img1"]) == [  # the repeated box with two labels; -2, -1 clipped to 0
        ("Lung Opacity", [0.0, 0.0, 5.0, 6.0], 1), ("Nodule/Mass", [0.0, 0.0, 5.0, 6.0], 2)
    ]
    assert boxes["img3"] == [("Pleural effusion", [15.0, 10.0, 15.0, 12.5], 1)]  # case-insensitive name
    [(name, _, readers)] = boxes["img5"]
    assert (name, readers) == ("Pleural effusion", 3)
    assert "img2" not in boxes and "img4" not in boxes
    assert images["img1"]["image_labels"] == ["Lung Opacity", "Nodule/Mass"]
    assert images["img0"]["release_labels"] == ["Cardiomegaly", "Pneumonia"]
    val_findings = {name for i in val["images"] for name in i["image_labels"]}
    assert "Pleural effusion" in val_findings  # the only finding with two images must reach val
    # the test set keeps the consensus boxes as released (no fusion), also scaled
    test_boxes = boxes_by_image(test)
    assert sorted(b for _, b, _ in test_boxes["tst0"]) == [[5.0, 5.0, 20.0, 15.0], [5.5, 5.0, 19.5, 15.0]]
    assert (dataset_dir / "images" / "test" / "tst1.png").is_file()
    assert report.boxes_in["train"]["Cardiomegaly"] == 3 and report.boxes_out["train"]["Cardiomegaly"] == 1
    sizes = pd.read_csv(dataset_dir / "image_sizes.csv")
    assert set(sizes.columns) == {"image_id", "original_width", "original_height", "width", "height"}
    assert (sizes["original_width"] == 64).all() and (sizes["width"] == 32).all()


def test_converted_splits_load_through_the_registered_loader(physionet_conversion):
    _, dataset_dir, _, _ = physionet_conversion
    for split, folder in VINDR_CXR_SPLITS.items():
        records = load_cxr_coco_json(
            str(dataset_dir / "annotations" / f"vindr_cxr_{split}.json"), str(dataset_dir / "images" / folder)
        )
        coco = load_split(dataset_dir, split)
        assert len(records) == len(coco["images"])
        assert sum(len(r["annotations"]) for r in records) == len(coco["annotations"])
        for record in records:
            assert Image.open(record["file_name"]).size == (record["width"], record["height"])
            assert set(record["captions"]) == {"elaborate", "unelaborate"}


def test_physionet_report_lists_every_skipped_item_with_file_and_row(physionet_conversion):
    source, dataset_dir, _, report = physionet_conversion
    train_csv = str(source / "annotations" / "annotations_train.csv")
    skipped = {(item["reason"], item.get("image_id"), item.get("row")) for item in report.skipped}
    assert ("'Edema' is a VinDr-CXR local label outside the 14 detection findings", "img1", 8) in skipped
    assert ("unknown finding name 'Alien finding'", "img3", 14) in skipped
    assert ("missing or non-numeric box coordinates", "img4", 15) in skipped
    assert ("box lies outside the image", "img3", 13) in skipped
    assert any(r.startswith("DICOM file missing") and i == "img6" for r, i, _ in skipped)
    assert any(r.startswith("DICOM could not be converted") and i == "img7" for r, i, _ in skipped)
    assert any(r.startswith("DICOM has no rows in annotations_train.csv") and i == "img9" for r, i, _ in skipped)
    no_size = [item for item in report.skipped if item["reason"].startswith("no image size")]
    assert [item["image_id"] for item in no_size] == ["img6", "img7"]
    assert no_size[0]["detail"] == "with its 1 reader boxes"
    assert any(r.startswith("image listed in image_labels_train.csv") and i == "ghost" for r, i, _ in skipped)
    labels_csv = str(source / "annotations" / "image_labels_train.csv")
    assert {item["file"] for item in report.skipped if item.get("row") is not None} == {train_csv, labels_csv}
    assert [item["row"] for item in report.skipped if item.get("file") == labels_csv] == [5]
    [unreadable] = [item for item in report.skipped if item["reason"] == "DICOM could not be converted"]
    assert unreadable["file"] == str(source / "train" / "img7.dicom")
    assert "img7.dicom: not a DICOM file" in unreadable["detail"]
    assert any("clipped" in note for note in report.notes)
    written = json.loads((dataset_dir / "conversion_report.json").read_text())
    assert len(written["skipped"]) == len(report.skipped)
    assert written["boxes_in"]["train"]["Pleural effusion"] == 4
    summary = report.summary()
    assert "| Cardiomegaly | 3 | 1 |" in summary and "unknown finding name 'Alien finding'" in summary


def test_rerun_skips_converted_images_and_a_new_size_reconverts(physionet_conversion):
    source, dataset_dir, options, _ = physionet_conversion
    png = dataset_dir / "images" / "train" / "img0.png"
    first_mtime = png.stat().st_mtime_ns
    report = convert_vindr(source, dataset_dir.parent, options)
    assert "image stage: {'existing': 8, 'failed': 1}" in report.notes
    assert png.stat().st_mtime_ns == first_mtime
    assert load_split(dataset_dir, "train")["images"][0]["width"] == 32
    options.long_side = 48
    report = convert_vindr(source, dataset_dir.parent, options)
    assert "image stage: {'converted': 8, 'failed': 1}" in report.notes
    assert Image.open(png).size == (48, 36)
    boxes = {**boxes_by_image(load_split(dataset_dir, "train")), **boxes_by_image(load_split(dataset_dir, "val"))}
    assert boxes["img0"] == [("Cardiomegaly", [8.25, 7.5, 29.25, 23.25], 2)]  # x 0.75 now


def test_output_inside_the_source_tree_is_refused(tmp_path):
    source = make_physionet_release(tmp_path / "release")
    with pytest.raises(ConverterError, match="inside the source release"):
        convert_vindr(source, source / "converted", VindrConversionOptions(long_side=32))


@pytest.mark.slow
def test_parallel_image_stage_matches_serial(tmp_path):
    jobs = []
    for k in range(3):
        write_dicom(tmp_path / f"d{k}.dicom", ramp(height=40 + k, width=60))
        jobs.append(ImageJob(f"d{k}", tmp_path / f"d{k}.dicom", tmp_path / "out" / f"d{k}.png"))
    jobs.append(ImageJob("bad", tmp_path / "missing.dicom", tmp_path / "out" / "bad.png"))
    results = {r.image_id: r for r in convert_images(jobs, long_side=30, workers=2)}
    assert {k: r.status for k, r in results.items()} == {"d0": "converted", "d1": "converted", "d2": "converted",
                                                         "bad": "failed"}
    assert "missing.dicom: no such DICOM file" in results["bad"].error
    assert (results["d1"].original_width, results["d1"].original_height, results["d1"].width) == (60, 41, 30)
    assert Image.open(tmp_path / "out" / "d2.png").size == (30, 21)


KAGGLE_TRAIN = """image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max
k0,Cardiomegaly,3,R1,100,100,500,400
k0,Cardiomegaly,3,R2,110,100,500,420
k0,No finding,14,R3,,,,
k1,No finding,14,R1,,,,
k1,No finding,14,R2,,,,
k2,Aortic enlargement,0,R1,50,50,80,90
k2,Aortic enlargement,3,R2,50,50,80,90
k3,ILD,5,R1,10,10,300,300
"""


def test_kaggle_csv_only_with_size_table_via_cli(tmp_path, capsys):
    source = tmp_path / "vinbigdata"
    source.mkdir()
    (source / "train.csv").write_text(KAGGLE_TRAIN)
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("image_id,width,height\nk0,2000,1000\nk1,1000,1000\nk2,1000,2000\nk3,800,800\n")
    out = tmp_path / "out"
    code = main([str(source), "--csv-only", "--size-table", str(sizes), "--out", str(out), "--val-fraction", "0.25",
                 "--long-side", "1000"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "class_id 3 does not match class_name 'Aortic enlargement'" in printed
    assert "no test annotations" in printed
    dataset_dir = out / "vindr_cxr"
    train, val = load_split(dataset_dir, "train"), load_split(dataset_dir, "val")
    assert not (dataset_dir / "annotations" / "vindr_cxr_test.json").exists()
    assert not (dataset_dir / "images").exists()  # CSV-only: no images written
    images = {i["vindr_image_id"]: i for i in train["images"] + val["images"]}
    assert len(val["images"]) == 1 and len(images) == 4
    assert (images["k0"]["width"], images["k0"]["height"]) == (1000, 500)  # 2000 x 1000 shrunk to long side 1000
    assert (images["k3"]["width"], images["k3"]["height"]) == (800, 800)  # never upsampled
    boxes = {**boxes_by_image(train), **boxes_by_image(val)}
    assert boxes["k0"] == [("Cardiomegaly", [52.5, 50.0, 197.5, 155.0], 2)]
    assert boxes["k2"] == [("Aortic enlargement", [25.0, 25.0, 15.0, 20.0], 1)]  # the mismatched row is skipped


def test_csv_only_without_sizes_keeps_original_pixels_away_from_the_registered_files(tmp_path, capsys):
    (tmp_path / "train.csv").write_text(KAGGLE_TRAIN)
    out = tmp_path / "out"
    assert main([str(tmp_path / "train.csv"), "--csv-only", "--out", str(out), "--val-fraction", "0.25"]) == 0
    assert "cannot be loaded for training" in capsys.readouterr().out
    dataset_dir = out / "vindr_cxr"
    assert not (dataset_dir / "annotations").exists()
    train = json.loads((dataset_dir / "annotations_without_sizes" / "vindr_cxr_train.json").read_text())
    val = json.loads((dataset_dir / "annotations_without_sizes" / "vindr_cxr_val.json").read_text())
    boxes = {**boxes_by_image(train), **boxes_by_image(val)}
    assert boxes["k0"] == [("Cardiomegaly", [105.0, 100.0, 395.0, 310.0], 2)]  # original pixels
    assert all(i["width"] is None and i["height"] is None for i in train["images"] + val["images"])


def test_cli_exits_2_naming_the_file_and_missing_column(tmp_path, capsys):
    source = tmp_path / "vinbigdata"
    source.mkdir()
    (source / "train.csv").write_text("image_id,class_name,rad_id,x_min,y_min,x_max\nk0,ILD,R1,1,2,3\n")
    assert main([str(source), "--csv-only", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "train.csv: missing column(s) ['y_max']" in error
    assert main([str(tmp_path / "nowhere"), "--csv-only", "--out", str(tmp_path / "out")]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err


def test_missing_dicom_folder_is_a_clear_error(tmp_path):
    source = tmp_path / "vinbigdata"
    source.mkdir()
    (source / "train.csv").write_text(KAGGLE_TRAIN)
    with pytest.raises(ConverterError, match=r"train: DICOM folder missing; pass --csv-only"):
        convert_vindr(source, tmp_path / "out", VindrConversionOptions())


def test_no_usable_image_stops_the_conversion(tmp_path):
    source = tmp_path / "vinbigdata"
    (source / "train").mkdir(parents=True)
    (source / "train.csv").write_text(KAGGLE_TRAIN)
    for image_id in ("k0", "k1", "k2", "k3"):
        (source / "train" / f"{image_id}.dicom").write_bytes(b"")
    with pytest.raises(ConverterError, match="no usable training image is left"):
        convert_vindr(source, tmp_path / "out", VindrConversionOptions())


@pytest.mark.slow
def test_tool_help_documents_both_layouts():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "prepare_vindr.py"), "--help"],
        capture_output=True, text=True, check=True,
    )
    for text in ("PhysioNet", "annotations/annotations_train.csv", "image_labels_{train,test}.csv",
                 "Kaggle", "train.csv", "class_id 14", "--fusion", "--csv-only", "--size-table", "94:6"):
        assert text in result.stdout








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




NUM_IMAGES = 14


def _complete_pngs(folder: Path):
    """Names of PNGs in `folder` that decode completely; fails on any that does not."""
    names = []
    for path in sorted(folder.glob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.shape[0] > 0, f"{path} is not a complete PNG"
        names.append(path.stem)
    return names


@pytest.mark.slow
def test_sigkilled_conversion_restarts_with_only_the_missing_images(tmp_path):
    release, out = tmp_path / "release", tmp_path / "out"
    write_synthetic_vindr_release(release, NUM_IMAGES, seed=3, side_range=(1000, 1200))
    images = out / "vindr_cxr" / "images" / "train"
    command = [sys.executable, "tools/prepare_vindr.py", str(release), "--out", str(out), "--workers", "1",
               "--long-side", "0", "--bit-depth", "16"]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(images.glob("*.png"))) < 3:
        assert proc.poll() is None, "the conversion ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _complete_pngs(images)
    assert 3 <= len(done_before) < NUM_IMAGES
    assert not (out / "vindr_cxr" / "annotations").exists()  # annotations are written after the images

    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=600)
    report = json.loads((out / "vindr_cxr" / "conversion_report.json").read_text())
    stage = next(note for note in report["notes"] if note.startswith("image stage"))
    assert f"'existing': {len(done_before)}" in stage
    assert f"'converted': {NUM_IMAGES - len(done_before)}" in stage
    assert len(_complete_pngs(images)) == NUM_IMAGES
    assert not list(images.glob("*.part"))


def test_partial_files_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path / "b.png.1234.part").write_bytes(b"half")
    (tmp_path / "notes.part").write_bytes(b"not ours")
    jobs = [ImageJob("a", tmp_path / "a.dicom", tmp_path / "a.png"), ImageJob("c", tmp_path / "c.dicom", tmp_path / "c.png")]
    assert remove_partial_files(jobs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "notes.part"]


def test_synthetic_release_varies_like_vindr():
    plan = plan_images(8, seed=0)
    assert {image.bits_stored for image in plan} == {12, 14, 16}
    assert {image.photometric for image in plan} == {"MONOCHROME1", "MONOCHROME2"}
    assert {image.jpeg2000 for image in plan} == {True, False}
    assert all(2000 <= side <= 3400 for image in plan for side in (image.width, image.height))
    pixels = synthetic_pixels(64, 48, 12, np.random.default_rng(0))
    assert pixels.shape == (48, 64) and pixels.dtype == np.uint16 and pixels.max() <= 4095


def test_paper_protocol_square_resize_every_reader_box_and_imported_val_ids(tmp_path):
    """--resize 40x40 squashes the 64x48 DICOMs to 40x40 with the boxes scaled per axis, --fusion keep_all keeps
    every reader's box, and --val-ids makes exactly those images the val split."""
    source = make_physionet_release(tmp_path / "vindr-cxr")
    ids = tmp_path / "val_ids.txt"
    ids.write_text("# the paper's split\nimg0.png\nimg5\n")
    options = VindrConversionOptions(fusion="keep_all", resize=(40, 40), val_ids=ids)
    convert_vindr(source, tmp_path / "datasets", options)
    dataset_dir = tmp_path / "datasets" / "vindr_cxr"
    train, val = load_split(dataset_dir, "train"), load_split(dataset_dir, "val")
    assert sorted(i["vindr_image_id"] for i in val["images"]) == ["img0", "img5"]
    assert "img0" not in {i["vindr_image_id"] for i in train["images"]}
    assert {(i["width"], i["height"]) for i in train["images"] + val["images"]} == {(40, 40)}
    png = dataset_dir / "images" / "train" / "img5.png"
    assert Image.open(png).size == (40, 40)
    boxes = boxes_by_image(val)
    assert len(boxes["img5"]) == 3 and len(boxes["img0"]) == 2  # every reader's box: no fusion
    x, y, w, h = boxes["img0"][0][1]  # R1's Cardiomegaly [10, 10, 50, 40] of a 64 x 48 image
    assert (x, y, w, h) == pytest.approx((10 * 40 / 64, 10 * 40 / 48, 40 * 40 / 64, 30 * 40 / 48), abs=0.01)  # 2 decimals


def test_val_ids_and_resize_are_refused_before_any_work(tmp_path, capsys):
    source = make_physionet_release(tmp_path / "vindr-cxr")
    (tmp_path / "dup.txt").write_text("img0\nimg0\n")
    (tmp_path / "ghost.txt").write_text("img0\nnot_an_image\n")
    for argv, message in (
        (["--val-ids", str(tmp_path / "absent.txt")], "--val-ids " + str(tmp_path / "absent.txt") + ": cannot read it"),
        (["--val-ids", str(tmp_path / "dup.txt")], "line 2: image id 'img0' is listed again (first on line 1)"),
        (["--resize", "8x1024"], "--resize must be at least 16, got 8"),
    ):
        assert main([str(source), "--out", str(tmp_path / "out"), *argv]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main([str(source), "--resize", "1024"])
    with pytest.raises(ValueError, match=r"ghost.txt: 1 of its 2 ids are not usable training images"):
        convert_vindr(source, tmp_path / "out2", VindrConversionOptions(val_ids=tmp_path / "ghost.txt"))
