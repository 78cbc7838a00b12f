"""The Chest ImaGenome comparison loader on small files written here: records and their regions, CSV and TSV,
descriptions, counted skips, clear errors, and registration with the progression evaluator."""
import logging

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from cxr_codet.data.datasets.imagenome import (
    PROGRESSION_LABELS,
    load_imagenome_comparisons,
    normalize_comparison,
    progression_description,
    register_imagenome_comparisons,
)

COMPARISON_HEADER = "current_image_id,previous_image_id,region,finding,comparison,sentence"


BOX_HEADER = "image_id,region,x1,y1,x2,y2"


def write(path, lines, delimiter=","):
    path.write_text("\n".join(line.replace(",", delimiter) for line in lines) + "\n")
    return str(path)


@pytest.fixture
def boxes_file(tmp_path):
    return write(tmp_path / "regions.csv", [
        BOX_HEADER + ",width,height",
        "cur1,right lower lung zone,10,60,50,90,100,120",
        "cur1,left lung,55,10,95,90,100,120",
        "prev1,right lower lung zone,12,58,52,88,110,130",
        "prev1,left lung,57,12,97,92,110,130",
        "cur2,cardiac silhouette,40,50,70,80,,",
        "prev2,cardiac silhouette,41,51,71,81,,",
    ])


def test_rows_become_one_record_per_pair_with_merged_regions(tmp_path, boxes_file):
    comparisons = write(tmp_path / "comparisons.csv", [
        COMPARISON_HEADER,
        "cur1,prev1,right lower lung zone,pleural effusion,worsened,Increasing right effusion.",
        "cur1,prev1,right lower lung zone,atelectasis,Worsened,",
        "cur1,prev1,left lung,lung opacity,no_change,",
        "cur2,prev2,cardiac silhouette,enlarged cardiac silhouette,improved,",
    ])
    records = load_imagenome_comparisons(comparisons, boxes_file, str(tmp_path / "img"), image_extension=".png")
    assert [r["image_id"] for r in records] == ["cur1|prev1", "cur2|prev2"]
    first = records[0]
    assert first["file_name"] == str(tmp_path / "img" / "cur1.png")
    assert first["prior_file_name"] == str(tmp_path / "img" / "prev1.png")
    assert (first["height"], first["width"], first["prior_height"], first["prior_width"]) == (120, 100, 130, 110)
    lower, left = first["regions"]
    assert lower["name"] == "right lower lung zone" and lower["findings"] == ["pleural effusion", "atelectasis"]
    assert lower["comparison"] == "worsened" and lower["label"] == PROGRESSION_LABELS.index("worsened")
    assert lower["description"] == "Increasing right effusion."
    assert lower["current_box"] == [10.0, 60.0, 50.0, 90.0] and lower["prior_box"] == [12.0, 58.0, 52.0, 88.0]
    assert left["comparison"] == "no change"
    assert left["description"] == "The lung opacity in the left lung is unchanged."
    assert "height" not in records[1]  # the box table gives no size for cur2


def test_tab_separated_files_and_file_names_from_the_box_table(tmp_path):
    boxes = write(tmp_path / "regions.tsv", [BOX_HEADER + ",file_name", "a,right lung,1,2,30,40,p1/a.jpg",
                                              "b,right lung,1,2,30,40,p1/b.jpg"], delimiter="\t")
    comparisons = write(tmp_path / "comparisons.txt", ["current_image_id,previous_image_id,region,finding,comparison",
                                                        "b,a,right lung,pneumonia,improved"], delimiter="\t")
    [record] = load_imagenome_comparisons(comparisons, boxes, "/data")
    assert record["file_name"] == "/data/p1/b.jpg" and record["prior_file_name"] == "/data/p1/a.jpg"
    assert record["regions"][0]["description"] == "The pneumonia in the right lung has improved."


def test_rows_without_boxes_and_conflicting_regions_are_skipped_and_counted(tmp_path, boxes_file, caplog):
    comparisons = write(tmp_path / "comparisons.csv", [
        COMPARISON_HEADER,
        "cur1,prev1,right lower lung zone,pleural effusion,worsened,",
        "cur1,prev1,right lower lung zone,atelectasis,improved,",
        "cur1,prev1,left lung,lung opacity,improved,",
        "cur1,prev1,right apical zone,pneumothorax,improved,",
        "cur3,prev2,cardiac silhouette,edema,improved,",
    ])
    with caplog.at_level(logging.WARNING):
        [record] = load_imagenome_comparisons(comparisons, boxes_file, "/img")
    assert [r["name"] for r in record["regions"]] == ["left lung"]
    message = caplog.text
    assert "skipped 2 row(s): findings of one region disagree on the comparison" in message
    assert "skipped 2 row(s): region has no valid box in the current image" in message
    assert "line 5 ('right apical zone')" in message


def test_degenerate_boxes_count_as_missing(tmp_path, caplog):
    boxes = write(tmp_path / "regions.csv", [BOX_HEADER, "a,right lung,10,10,10,40", "b,right lung,1,2,30,40"])
    comparisons = write(tmp_path / "comparisons.csv", ["current_image_id,previous_image_id,region,finding,comparison",
                                                        "b,a,right lung,pneumonia,improved"])
    with caplog.at_level(logging.WARNING):
        assert load_imagenome_comparisons(comparisons, boxes, "/img") == []
    assert "no valid box in the previous image" in caplog.text and "ignored 1 degenerate box" in caplog.text


@pytest.mark.parametrize("lines, message", [
    (["current_image_id,previous_image_id,region,comparison", "a,b,r,improved"], r"lacks column\(s\) \['finding'\]"),
    ([COMPARISON_HEADER, "cur1,prev1,left lung,opacity,better,"], "line 2: comparison 'better' is not one of"),
    ([COMPARISON_HEADER, "cur1,cur1,left lung,opacity,improved,"], "line 2: image 'cur1' is compared with itself"),
    ([COMPARISON_HEADER, "cur1,,left lung,opacity,improved,"], "line 2: empty"),
])
def test_malformed_comparison_tables_name_file_and_line(tmp_path, boxes_file, lines, message):
    comparisons = write(tmp_path / "comparisons.csv", lines)
    with pytest.raises(ValueError, match=message) as error:
        load_imagenome_comparisons(comparisons, boxes_file, "/img")
    assert "comparisons.csv" in str(error.value)


@pytest.mark.parametrize("lines, message", [
    ([BOX_HEADER, "a,right lung,1,2,x,4"], "line 2: column 'x2' must be a finite number, got 'x'"),
    ([BOX_HEADER, "a,right lung,1,2,3,4", "a,right lung,1,2,3,5"], "line 3: region 'right lung' of image 'a' has a second"),
    ([BOX_HEADER + ",file_name", "a,r1,1,2,3,4,a.png", "a,r2,1,2,3,4,b.png"], "line 3: image 'a' has two file names"),
])
def test_malformed_box_tables_name_file_and_line(tmp_path, lines, message):
    boxes = write(tmp_path / "regions.csv", lines)
    comparisons = write(tmp_path / "comparisons.csv", [COMPARISON_HEADER])
    with pytest.raises(ValueError, match=message):
        load_imagenome_comparisons(comparisons, boxes, "/img")


def test_missing_files_are_named(tmp_path, boxes_file):
    with pytest.raises(FileNotFoundError, match="comparison file .*nope.csv does not exist"):
        load_imagenome_comparisons(str(tmp_path / "nope.csv"), boxes_file, "/img")


def test_comparison_names_and_descriptions():
    assert normalize_comparison(" No_Change ") == "no change"
    assert normalize_comparison("WORSENED") == "worsened"
    assert normalize_comparison("new") is None
    assert progression_description(["Nodule"], "left upper lung zone", "worsened") == \
        "The nodule in the left upper lung zone has worsened."


def test_registration_uses_the_progression_evaluator(tmp_path, boxes_file):
    comparisons = write(tmp_path / "comparisons.csv", [COMPARISON_HEADER, "cur1,prev1,left lung,opacity,improved,"])
    register_imagenome_comparisons("imagenome_test_split", comparisons, boxes_file, str(tmp_path))
    try:
        assert MetadataCatalog.get("imagenome_test_split").evaluator_type == "progression"
        assert len(DatasetCatalog.get("imagenome_test_split")) == 1
    finally:
        DatasetCatalog.remove("imagenome_test_split")
        MetadataCatalog.remove("imagenome_test_split")
