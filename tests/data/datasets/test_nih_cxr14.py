"""NIH ChestX-ray14 boxes: the real 438-image subset registered in place, patient-level splits, and bad input."""
import logging

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from image_files import write_gray_png
from PIL import Image

from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES
from cxr_codet.data.datasets.nih_cxr14 import (
    load_nih_cxr14_bbox,
    read_bbox_csv,
    register_nih_cxr14_bbox,
    split_by_patient,
)

SUBSET = "nih-cxr14-bbox"


@pytest.fixture(scope="module")
def registered(shared_data):
    names = register_nih_cxr14_bbox(str(shared_data / SUBSET), prefix="test_nih_subset")
    yield {name[len("test_nih_subset_"):]: name for name in names}
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_subset_registers_438_images_with_496_boxes(registered, shared_data):
    records = DatasetCatalog.get(registered["all"])
    assert len(records) == 438
    assert sum(len(r["annotations"]) for r in records) == 496
    assert len({r["image_id"] for r in records}) == 438
    first = next(r for r in records if r["image_index"] == "00000032_037.png")
    assert first["file_name"] == str(shared_data / SUBSET / "images" / "00000032_037.png")
    assert (first["width"], first["height"]) == (512, 512)  # read from the PNG, not assumed
    [box] = first["annotations"]
    assert box["bbox"] == pytest.approx([169.583, 59.598, 86.146, 175.543])
    assert box["bbox_mode"] == BoxMode.XYWH_ABS
    assert NIH_CXR14_BBOX_CLASSES[box["category_id"]] == "Infiltrate"
    assert first["image_labels"] == [NIH_CXR14_BBOX_CLASSES.index("Infiltrate")]
    for record in records:
        assert Image.open(record["file_name"]).size == (record["width"], record["height"])
        for a in record["annotations"]:
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 512 and y + h <= 512


def test_subset_has_all_8_findings_and_coco_metadata(registered):
    records = DatasetCatalog.get(registered["all"])
    found = {a["category_id"] for r in records for a in r["annotations"]}
    assert found == set(range(8))
    metadata = MetadataCatalog.get(registered["train"])
    assert metadata.thing_classes == list(NIH_CXR14_BBOX_CLASSES)
    assert metadata.evaluator_type == "coco"
    assert metadata.boxes_exhaustive is False


def test_train_and_val_split_by_patient(registered):
    train = DatasetCatalog.get(registered["train"])
    val = DatasetCatalog.get(registered["val"])
    assert len(train) + len(val) == 438
    assert sum(len(r["annotations"]) for r in train + val) == 496
    train_patients = {r["patient_id"] for r in train}
    val_patients = {r["patient_id"] for r in val}
    assert not train_patients & val_patients
    assert all(r["patient_id"] == r["image_index"][:8] for r in train + val)
    assert 0.1 < len(val_patients) / len(train_patients | val_patients) < 0.3  # the 20% of patients
    assert [r["image_id"] for r in DatasetCatalog.get(registered["val"])] == [r["image_id"] for r in val]  # seeded


def test_dev_split_is_a_patient_level_part_of_train(registered):
    train = {r["image_id"] for r in DatasetCatalog.get(registered["train"])}
    devtrain, dev = (DatasetCatalog.get(registered[s]) for s in ("devtrain", "dev"))
    assert {r["image_id"] for r in devtrain} | {r["image_id"] for r in dev} == train
    assert not {r["patient_id"] for r in devtrain} & {r["patient_id"] for r in dev}
    assert 0.1 < len({r["patient_id"] for r in dev}) / len({r["patient_id"] for r in devtrain + dev}) < 0.3


def test_split_by_patient_seed_and_bad_split():
    records = [{"patient_id": f"{k // 2:08d}", "image_id": k} for k in range(40)]
    val_a = split_by_patient(records, "val", 0.25, seed=0)
    assert len(val_a) == 10 and split_by_patient(records, "val", 0.25, seed=0) == val_a
    assert split_by_patient(records, "val", 0.25, seed=1) != val_a
    with pytest.raises(ValueError, match="unknown split 'test'"):
        split_by_patient(records, "test", 0.25, 0)


def write_subset(folder, rows, sizes):
    (folder / "images").mkdir(parents=True)
    for name, size in sizes.items():
        Image.new("L", size).save(folder / "images" / name)
    (folder / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + "\n".join(rows) + "\n")


def test_official_trailing_columns_clipping_and_missing_images(tmp_path, caplog):
    rows = [
        "00000001_000.png,Mass,10,20,30,40,,,",
        "00000001_000.png,Nodule,90,90,30,30,,,",  # reaches beyond the 100 x 100 image: clipped
        "00000002_000.png,Effusion,5,5,10,10,,,",  # image missing
        "00000001_000.png,Atelectasis,150,150,10,10,,,",  # entirely outside: skipped
    ]
    write_subset(tmp_path, rows, {"00000001_000.png": (100, 100)})
    records = load_nih_cxr14_bbox(str(tmp_path / "BBox_List_2017.csv"), str(tmp_path / "images"))
    assert len(records) == 1
    boxes = [a["bbox"] for a in records[0]["annotations"]]
    assert boxes == [[10.0, 20.0, 30.0, 40.0], [90.0, 90.0, 10.0, 10.0]]
    log = caplog.text
    assert "1 x image missing or unreadable (skipped with its boxes)" in log and "00000002_000.png" in log
    assert "1 x box clipped to the image (kept) (e.g. line 3)" in log
    assert "1 x box with no area inside the image (skipped) (e.g. line 5)" in log


def test_unknown_finding_and_bad_numbers_name_the_line(tmp_path):
    write_subset(tmp_path, ["00000001_000.png,Mass,1,2,3,4", "00000001_000.png,Fracture,1,2,3,4"],
                 {"00000001_000.png": (10, 10)})
    with pytest.raises(ValueError, match=r"BBox_List_2017.csv: line 3: unknown finding 'Fracture'"):
        load_nih_cxr14_bbox(str(tmp_path / "BBox_List_2017.csv"), str(tmp_path / "images"))
    (tmp_path / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h]\na.png,Mass,1,two,3,4\n")
    with pytest.raises(ValueError, match=r"line 2: box \['1', 'two', '3', '4'\] is not four numbers"):
        load_nih_cxr14_bbox(str(tmp_path / "BBox_List_2017.csv"), str(tmp_path / "images"))
    (tmp_path / "BBox_List_2017.csv").write_text("Image Index,Finding Label\na.png,Mass\n")
    with pytest.raises(ValueError, match="expected 6 columns"):
        load_nih_cxr14_bbox(str(tmp_path / "BBox_List_2017.csv"), str(tmp_path / "images"))


def test_builtin_registration_is_lazy_and_missing_files_are_explained():
    assert "nih_cxr14_bbox_train" in DatasetCatalog.list()  # registered at import, under $DETECTRON2_DATASETS
    with pytest.raises(FileNotFoundError, match=r"nih_cxr14/BBox_List_2017.csv does not exist"):
        DatasetCatalog.get("nih_cxr14_bbox_all")




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
    # the skipped boxes' findings stay image labels; c.png, whose only box was skipped, is not a No-finding image
    names = {r["image_index"]: [NIH_CXR14_BBOX_CLASSES[c] for c in r["image_labels"]] for r in records}
    assert names["a.png"] == ["Effusion", "Mass", "Nodule"] and "box_supervised" not in by_name["a.png"]
    write_gray_png(images / "c.png", 32, 32)
    csv.write_text(header + "c.png,Nodule,100,100,10,10\n")
    (record,) = load_nih_cxr14_bbox(str(csv), str(images))
    assert record["annotations"] == [] and record["box_supervised"] is False
    assert [NIH_CXR14_BBOX_CLASSES[c] for c in record["image_labels"]] == ["Nodule"]
