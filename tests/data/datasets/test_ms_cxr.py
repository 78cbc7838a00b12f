"""MS-CXR phrase grounding: one sample per (image, phrase) with all its boxes, rescaled to the image on disk."""
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from cxr_codet.data.datasets.ms_cxr import (
    MS_CXR_CLASSES,
    find_ms_cxr_csv,
    load_ms_cxr,
    phrase_region_mask,
    read_ms_cxr_csv,
    register_ms_cxr,
)

HEADER = "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height,split"


ROWS = [
    # two boxes of one phrase on a 2000 x 1000 DICOM whose JPG on disk is 500 x 250 (scale 0.25)
    "d1,Pleural Effusion,small bilateral effusions,files/p10/s1/d1.jpg,100,200,400,400,2000,1000,train",
    "d1,Pleural Effusion,small bilateral effusions,files/p10/s1/d1.jpg,1500,200,400,400,2000,1000,train",
    # a second phrase on the same image
    "d1,Cardiomegaly,enlarged heart,files/p10/s1/d1.jpg,800,400,600,400,2000,1000,train",
    "d2,Pneumonia,right lower lobe pneumonia,files/p11/s2/d2.jpg,10,10,100,100,1000,1000,test",
    "d3,Edema,mild edema,files/p12/s3/missing.jpg,10,10,100,100,1000,1000,val",
]


def write_release(folder, rows=ROWS, header=HEADER, name="MS_CXR_Local_Alignment_v1.1.0.csv"):
    images = folder / "images"
    for path, size in (("files/p10/s1/d1.jpg", (500, 250)), ("files/p11/s2/d2.jpg", (1000, 1000))):
        (images / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", size).save(images / path)
    csv = folder / name
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    return csv, images


def test_one_sample_per_image_and_phrase_with_rescaled_boxes(tmp_path, caplog):
    csv, images = write_release(tmp_path)
    samples = load_ms_cxr(str(csv), str(images))
    assert [(s["dicom_id"], s["phrase"]) for s in samples] == [
        ("d1", "enlarged heart"), ("d1", "small bilateral effusions"), ("d2", "right lower lobe pneumonia")
    ]
    effusion = samples[1]
    assert (effusion["width"], effusion["height"]) == (500, 250)
    assert effusion["category_name"] == "Pleural effusion"
    assert [a["bbox"] for a in effusion["annotations"]] == [[25.0, 50.0, 100.0, 100.0], [375.0, 50.0, 100.0, 100.0]]
    assert {a["category_id"] for a in effusion["annotations"]} == {MS_CXR_CLASSES.index("Pleural effusion")}
    assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in effusion["annotations"])
    assert samples[2]["annotations"][0]["bbox"] == [10.0, 10.0, 100.0, 100.0]  # same size on disk: unchanged
    assert effusion["file_name"] == str(images / "files/p10/s1/d1.jpg")
    assert len({s["image_id"] for s in samples}) == 3
    assert "skipped 1 (image, phrase) samples whose image is missing" in caplog.text and "missing.jpg" in caplog.text


def test_split_column_selects_rows(tmp_path):
    csv, images = write_release(tmp_path)
    assert [s["dicom_id"] for s in load_ms_cxr(str(csv), str(images), split="test")] == ["d2"]
    assert len(load_ms_cxr(str(csv), str(images), split="train")) == 2
    no_split = tmp_path / "nosplit"
    no_split.mkdir()
    csv2, images2 = write_release(no_split, rows=[r.rsplit(",", 1)[0] for r in ROWS], header=HEADER.rsplit(",", 1)[0])
    assert len(load_ms_cxr(str(csv2), str(images2))) == 3
    with pytest.raises(ValueError, match="no 'split' column, so split 'train' is undefined"):
        load_ms_cxr(str(csv2), str(images2), split="train")


def test_union_mask_counts_overlaps_once():
    record = {"height": 10, "width": 10, "annotations": [{"bbox": [0, 0, 4, 4]}, {"bbox": [2, 2, 4, 4]}]}
    mask = phrase_region_mask(record)
    assert mask.dtype == bool and mask.sum() == 16 + 16 - 4
    assert mask[3, 3] and mask[5, 5] and not mask[0, 5]


def test_register_and_bad_input(tmp_path):
    csv, images = write_release(tmp_path)
    register_ms_cxr("test_ms_cxr_all", str(csv), str(images))
    try:
        assert len(DatasetCatalog.get("test_ms_cxr_all")) == 3
        assert MetadataCatalog.get("test_ms_cxr_all").thing_classes == list(MS_CXR_CLASSES)
    finally:
        DatasetCatalog.remove("test_ms_cxr_all")
        MetadataCatalog.remove("test_ms_cxr_all")
    bad = tmp_path / "bad.csv"
    bad.write_text("dicom_id,category_name,label_text,path,x,y,w,h\nd1,Edema,x,p.jpg,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['image_width', 'image_height'\]"):
        load_ms_cxr(str(bad), str(images))
    bad.write_text(HEADER + "\nd1,Fracture,x,p.jpg,1,2,3,4,10,10,train\n")
    with pytest.raises(ValueError, match=r"bad.csv: line 2: unknown category_name 'Fracture'"):
        load_ms_cxr(str(bad), str(images))
    bad.write_text(HEADER + "\nd1,Edema,x,p.jpg,1,2,0,4,10,10,train\n")
    with pytest.raises(ValueError, match=r"bad.csv: line 2: .* positive sizes"):
        load_ms_cxr(str(bad), str(images))


def test_builtin_splits_are_lazy_with_a_clear_error_when_absent(tmp_path):
    assert {"ms_cxr_train", "ms_cxr_val", "ms_cxr_test"} <= set(DatasetCatalog.list())
    with pytest.raises(FileNotFoundError, match=r"no MS-CXR CSV \(MS_CXR_Local_Alignment_v\*\.csv\) in .*ms_cxr"):
        DatasetCatalog.get("ms_cxr_train")
    write_release(tmp_path, name="MS_CXR_Local_Alignment_v1.0.0.csv")
    newest, _ = write_release(tmp_path)
    assert find_ms_cxr_csv(str(tmp_path)) == str(newest)


def test_phrase_mask_matches_rescaled_boxes(tmp_path):
    csv, images = write_release(tmp_path)
    effusion = load_ms_cxr(str(csv), str(images))[1]
    mask = phrase_region_mask(effusion)
    assert mask.shape == (250, 500)
    assert mask.sum() == 2 * 100 * 100
    assert np.all(mask[50:150, 25:125]) and not mask[200, 250]


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
