"""VinDr converter: rejected rows never turn an image into a negative, header lines inside the file are rows
to reject, and a CSV with bytes that are not UTF-8 is refused naming every bad line and its column."""
import gzip
import json

import pytest

from cxr_codet.data.converters import ConverterError, VindrConversionOptions, convert_vindr
from cxr_codet.data.descriptions import compose_caption

HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"


ROWS = [
    "a0,Cardiomegaly,3,R1,nan,10,50,40",  # 2: only row, NaN coordinate, class known
    "a1,Tumour,3,R1,1,1,5,5",  # 3: only row, unknown class
    "a2,Cardiomegaly,5,R1,1,1,5,5",  # 4: only row, class_id disagrees with the name
    "a3,Nodule/Mass,8,R1,30,30,20,60",  # 5: x_min > x_max, class known
    "a3,ILD,5,R2,10,10,50,50",  # 6: fine
    "a4,No finding,14,R1,,,,",  # 7
    "a4,No finding,14,R2,,,,",  # 8
    "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max",  # 9: the header again
    "a5,Tumour,3,R1,1,1,5,5",  # 10: unknown class ...
    "a5,No finding,14,R2,,,,",  # 11: ... and one reader saw nothing
    "a6,Pneumothorax,12,R1,inf,1,5,5",  # 12: infinite coordinate ...
    "a6,Pneumothorax,12,R2,1,1,inf,5",  # 13: ... twice
    "a7,Aortic enlargement,0,R1,500,500,600,600",  # 14: lies outside the 100 x 100 image
]


IDS = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"]


def _convert(tmp_path, text):
    csv = tmp_path / "train.csv"
    csv.write_text(text)
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("image_id,width,height\n" + "".join(f"{i},100,100\n" for i in IDS))
    options = VindrConversionOptions(csv_only=True, size_table=sizes, val_fraction=0.2)
    report = convert_vindr(csv, tmp_path / "out", options)
    folder = tmp_path / "out" / "vindr_cxr"
    images = {}
    for split in ("train", "val"):
        coco = json.loads((folder / "annotations" / f"vindr_cxr_{split}.json").read_text())
        images.update({image["vindr_image_id"]: image for image in coco["images"]})
    return report, images, json.loads((folder / "conversion_report.json").read_text())


def test_rejected_rows_keep_known_findings_or_drop_the_image(tmp_path):
    report, images, written = _convert(tmp_path, HEADER + "\n".join(ROWS) + "\n")
    assert sorted(images) == ["a0", "a3", "a4", "a6", "a7"]
    labels = {image_id: image["image_labels"] for image_id, image in images.items()}
    assert labels == {
        "a0": ["Cardiomegaly"], "a3": ["ILD", "Nodule/Mass"], "a4": [], "a6": ["Pneumothorax"],
        "a7": ["Aortic enlargement"],
    }
    assert all(compose_caption([], "unelaborate", k).endswith("no finding.") for k in range(5))
    negatives = [image_id for image_id, image in images.items() if image["caption"].endswith("no finding.")]
    assert negatives == ["a4"]  # the only image whose rows say "No finding"
    kept = {(item["reason"], item["image_id"]) for item in written["kept_with_rejected_rows"]}
    assert kept == {("kept with 1 rejected row", "a0"), ("kept with 1 rejected row", "a3"),
                    ("kept with 2 rejected rows", "a6"), ("kept with 1 rejected row", "a7")}
    dropped = {(item["reason"], item["image_id"]) for item in written["skipped"] if item["reason"].startswith("dropped")}
    assert dropped == {("dropped: all rows rejected", "a1"), ("dropped: all rows rejected", "a2"),
                       ("dropped: no usable finding left after 1 rejected row", "a5")}
    assert written["skipped_by_reason"]["dropped: all rows rejected"] == 2
    assert written["kept_by_reason"] == {"kept with 1 rejected row": 3, "kept with 2 rejected rows": 1}
    assert report.images == {"vindr_cxr_train": 4, "vindr_cxr_val": 1}
    summary = report.summary()
    assert "3 x kept with 1 rejected row" in summary and "2 x dropped: all rows rejected" in summary


def test_header_line_inside_the_file_is_a_rejected_row_not_an_image(tmp_path):
    report, images, written = _convert(tmp_path, HEADER + "\n".join(ROWS) + "\n")
    assert "image_id" not in images
    [header] = [item for item in written["skipped"] if item["reason"] == "header line repeated inside the file"]
    assert header["row"] == 9 and header["file"].endswith("train.csv")


@pytest.mark.slow
def test_real_csv_has_no_rejected_rows_and_keeps_every_image(shared_data, tmp_path):
    options = VindrConversionOptions(csv_only=True)
    report = convert_vindr(shared_data / "vindr-cxr-annotations/train.csv.gz", tmp_path / "out", options)
    assert report.skipped == [] and report.kept_with_rejected_rows == []
    assert report.images == {"vindr_cxr_train": 14100, "vindr_cxr_val": 900}


@pytest.mark.parametrize("compress", [False, True])
def test_non_utf8_csv_names_every_bad_line_and_its_column(tmp_path, compress):
    lines = [HEADER.strip(), "k0,Cardiomegaly,3,R1,1,1,5,5"] + ["k1,ILD,5,R1,1,1,5,5"] * 20
    lines[3] = "k1,Cardiom\xe9galy,3,R1,1,1,5,5"  # line 4, column class_name
    lines[9] = "k1,ILD,5,R\xe91,1,1,5,5"  # line 10, column rad_id
    lines[15] = "k\xe91,ILD,5,R\xe91,1,1,5,5"  # line 16: two bad fields, the first is named
    data = ("\n".join(lines) + "\n").encode("latin-1")
    csv = tmp_path / ("train.csv.gz" if compress else "train.csv")
    csv.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(ConverterError) as error:
        convert_vindr(csv, tmp_path / "out", VindrConversionOptions(csv_only=True))
    message = str(error.value)
    assert f"{csv.name}: 3 lines are not valid UTF-8" in message
    assert "line 4 (column class_name, byte 0xe9)" in message
    assert "line 10 (column rad_id, byte 0xe9)" in message
    assert "line 16 (column image_id, byte 0xe9)" in message
    assert "re-save the file as UTF-8" in message


def test_loading_the_converted_json_keeps_the_findings_of_images_whose_rows_were_rejected(tmp_path):
    """The loader reads the converter's image_labels: a0 (its only row rejected, known Cardiomegaly) is an
    image-level Cardiomegaly image, not the No-finding image it used to become; a4 stays the only negative."""
    from cxr_codet.data.classes import VINDR_CXR_CLASSES
    from cxr_codet.data.datasets.coco_cxr import load_cxr_coco_json

    _convert(tmp_path, HEADER + "\n".join(ROWS) + "\n")
    folder = tmp_path / "out" / "vindr_cxr"
    (folder / "images" / "train").mkdir(parents=True)
    records = {}
    for split in ("train", "val"):
        for record in load_cxr_coco_json(str(folder / "annotations" / f"vindr_cxr_{split}.json"),
                                         str(folder / "images" / "train")):
            records[record["file_name"].rsplit("/", 1)[-1][:-4]] = record
    names = {k: [VINDR_CXR_CLASSES[c] for c in r["image_labels"]] for k, r in records.items()}
    assert names == {"a0": ["Cardiomegaly"], "a3": ["ILD", "Nodule/Mass"], "a4": [], "a6": ["Pneumothorax"],
                     "a7": ["Aortic enlargement"]}
    assert [k for k, r in records.items() if r.get("box_supervised") is False] == ["a0", "a6", "a7"]
