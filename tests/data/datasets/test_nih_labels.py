"""NIH ChestX-ray14's image-level labels (Data_Entry_2017_v2020.csv): reading, mapping onto the box findings,
captions, and the errors that name the line."""
import gzip
import shutil

import pytest

from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES
from cxr_codet.data.datasets.nih_cxr14 import image_level_fields, load_nih_cxr14_bbox, read_data_entry

HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID\n"


def _write(path, rows):
    path.write_text(HEADER + "".join(f"{image},{labels},0,1\n" for image, labels in rows))
    return str(path)


def test_labels_are_read_split_and_mapped_infiltration_to_infiltrate(tmp_path):
    path = _write(tmp_path / "Data_Entry_2017_v2020.csv",
                  [("a.png", "Infiltration|Edema"), ("b.png", "No Finding"), ("c.png", "Pleural_Thickening|Mass")])
    labels = read_data_entry(path)
    assert labels == {"a.png": ["Edema", "Infiltration"], "b.png": [], "c.png": ["Mass", "Pleural_Thickening"]}
    fields = image_level_fields(labels["a.png"], index=0)
    assert fields["nih_box_labels"] == [NIH_CXR14_BBOX_CLASSES.index("Infiltrate")]  # Edema has no box class
    assert fields["caption"] == "Chest X-ray showing edema and infiltrate."
    assert image_level_fields(labels["c.png"], index=1)["caption"] == "Findings: mass and pleural thickening."
    assert image_level_fields([], index=0)["nih_box_labels"] == []
    gz = tmp_path / "Data_Entry_2017_v2020.csv.gz"
    with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert read_data_entry(str(gz)) == labels


@pytest.mark.parametrize("rows,message", [
    ([("a.png", "Infiltrate")], r"line 2: Finding Labels 'Infiltrate' has unknown label\(s\) \['Infiltrate'\]"),
    ([("a.png", "No Finding|Mass")], "line 2: 'No Finding' beside other labels"),
    ([("a.png", "Mass"), ("a.png", "Nodule")], "line 3: image 'a.png' is listed again \\(first on line 2\\)"),
])
def test_bad_rows_are_refused_naming_the_line(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        read_data_entry(_write(tmp_path / "entry.csv", rows))


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "entry.csv"
    path.write_text("Image,Labels\na.png,Mass\n")
    with pytest.raises(ValueError, match=r"no column \['Image Index', 'Finding Labels'\]"):
        read_data_entry(str(path))


def test_real_nih_records_carry_nih_labels_that_include_their_box_findings(shared_data):
    folder = shared_data / "nih-cxr14-bbox"
    records = load_nih_cxr14_bbox(str(folder / "BBox_List_2017.csv"), str(folder / "images"))
    assert len(records) == 438 and all("nih_labels" in r for r in records)
    assert all(set(r["image_labels"]) <= set(r["nih_box_labels"]) for r in records)
    # NIH's labels name findings the boxes do not: more Effusion images than Effusion boxes, labels beyond the 8.
    effusion = NIH_CXR14_BBOX_CLASSES.index("Effusion")
    assert sum(effusion in r["nih_box_labels"] for r in records) > sum(effusion in r["image_labels"] for r in records)
    assert any("Edema" in r["nih_labels"] for r in records)


def test_without_a_data_entry_file_records_have_no_nih_labels(tmp_path, shared_data):
    folder = shared_data / "nih-cxr14-bbox"
    shutil.copy(folder / "BBox_List_2017.csv", tmp_path / "BBox_List_2017.csv")
    records = load_nih_cxr14_bbox(str(tmp_path / "BBox_List_2017.csv"), str(folder / "images"))
    assert len(records) == 438 and not any("nih_labels" in r or "caption" in r for r in records)


def test_nih_labels_datasets_take_image_labels_from_nih(shared_data):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from cxr_codet.data.datasets.nih_cxr14 import register_nih_cxr14_bbox, with_nih_image_labels

    names = register_nih_cxr14_bbox(str(shared_data / "nih-cxr14-bbox"), prefix="test_nihlabels")
    try:
        boxes, nih = DatasetCatalog.get("test_nihlabels_val"), DatasetCatalog.get("test_nihlabels_val_nih_labels")
        assert [r["image_id"] for r in boxes] == [r["image_id"] for r in nih]
        assert all(r["image_labels"] == r["nih_box_labels"] and r["annotations"] == b["annotations"]
                   for r, b in zip(nih, boxes))
        assert any(r["image_labels"] != b["image_labels"] for r, b in zip(nih, boxes))
        assert "NLP-mined" in MetadataCatalog.get("test_nihlabels_val_nih_labels").image_labels_source
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    with pytest.raises(ValueError, match="have no NIH image-level labels"):
        with_nih_image_labels([{"image_index": "x.png"}], "BBox_List_2017.csv")
