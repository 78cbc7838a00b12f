"""data/box_supervision.py: the weak-label split (boxes on a seeded fraction of the images with findings)."""
import logging

import pytest
from conftest import make_cfg
from records import records_with_findings

from cxr_codet.data.box_supervision import apply_box_fraction, boxed_positions, split_box_supervision


def box_cfg(*overrides):
    """The defaults at seed 0 with `overrides` (the DATASETS.TRAIN_BOX_* keys)."""
    return make_cfg(None, "SEED", 0, *overrides, tiny=False)


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (0.1, 4), (0.25, 10), (0.5, 20), (1.0, 40)])
def test_split_keeps_boxes_on_exactly_the_fraction_of_images_with_findings(fraction, expected):
    records = records_with_findings()
    out, summary = split_box_supervision(records, fraction, seed=3)
    assert len(out) == 50
    boxed = [r for r in out if r["box_supervised"] and r["image_labels"]]
    image_level = [r for r in out if not r["box_supervised"]]
    assert len(boxed) == summary.boxed_with_findings == expected
    assert len(image_level) == summary.image_level_only == 40 - expected
    assert summary.no_finding == 10 and all(r["box_supervised"] for r in out[40:])
    assert summary.boxes_removed == sum(len(records[r["image_id"]]["annotations"]) for r in image_level)
    for r in image_level:  # findings and caption stay, boxes go
        assert r["annotations"] == [] and r["image_labels"] == records[r["image_id"]]["image_labels"]
        assert r["caption"] == f"caption {r['image_id']}"
    for r in boxed:
        assert r["annotations"] == records[r["image_id"]]["annotations"]
    assert all("box_supervised" not in r and r["annotations"] for r in records[:40])  # inputs untouched


def test_split_is_deterministic_by_seed_and_nested_across_fractions():
    records = records_with_findings()
    assert boxed_positions(records, 0.25, 7) == boxed_positions(records, 0.25, 7)
    assert boxed_positions(records, 0.25, 7)[0] != boxed_positions(records, 0.25, 8)[0]
    small, large = boxed_positions(records, 0.1, 7)[0], boxed_positions(records, 0.25, 7)[0]
    assert set(small) < set(large)


def test_drop_leaves_out_image_level_only_images_and_keeps_no_finding_ones():
    out, summary = split_box_supervision(records_with_findings(), 0.25, seed=0, drop_image_level_only=True)
    assert len(out) == 10 + 10 and summary.dropped == 30
    assert all(r["box_supervised"] for r in out)
    assert sum(1 for r in out if not r["image_labels"]) == 10


def test_findings_left_without_boxes_are_reported():
    records = records_with_findings()
    _, summary = split_box_supervision(records, 0.0, seed=0)
    assert summary.findings_without_boxes == sorted({c for r in records for c in r["image_labels"]})


def test_apply_box_fraction_reads_the_config_and_logs_counts(caplog):
    records = records_with_findings()
    assert apply_box_fraction(box_cfg(), records) == records  # fraction 1: unchanged
    cfg = box_cfg("DATASETS.TRAIN_BOX_FRACTION", 0.1)
    cfg.SEED = 5
    with caplog.at_level(logging.INFO, logger="cxr_codet.data.box_supervision"):
        out = apply_box_fraction(cfg, records)
    assert [r["box_supervised"] for r in out] == [r["box_supervised"] for r in split_box_supervision(records, 0.1, 5)[0]]
    assert "4 images with findings keep their boxes, 36 become image-level-only" in caplog.text
    assert "(seed 5)" in caplog.text and "10 No-finding images" in caplog.text
    cfg.DATASETS.TRAIN_BOX_SEED = 2  # an explicit split seed wins over SEED
    assert [r["box_supervised"] for r in apply_box_fraction(cfg, records)] == [
        r["box_supervised"] for r in split_box_supervision(records, 0.1, 2)[0]
    ]


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_fraction_outside_unit_interval_is_refused(fraction):
    with pytest.raises(ValueError, match=r"DATASETS.TRAIN_BOX_FRACTION = .* must lie in \[0, 1\]"):
        apply_box_fraction(box_cfg("DATASETS.TRAIN_BOX_FRACTION", fraction), records_with_findings())


def test_dropping_everything_is_refused():
    cfg = box_cfg("DATASETS.TRAIN_BOX_FRACTION", 0.0, "DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY", True)
    with pytest.raises(ValueError, match="no training image is left"):
        apply_box_fraction(cfg, records_with_findings(num_normal=0))


def test_images_the_loader_left_without_boxes_stay_image_level_only():
    """An image whose every box the loader skipped ("box_supervised" False, findings kept) is never picked to
    keep boxes, so it never trains as a box-supervised No-finding image; with the drop it goes too."""
    records = records_with_findings()
    records[0] = dict(records[0], annotations=[], box_supervised=False)
    for seed in range(5):
        out, summary = split_box_supervision(records, 0.5, seed=seed)
        assert out[0]["box_supervised"] is False and out[0]["image_labels"] == records[0]["image_labels"]
        assert summary.boxed_with_findings == 20 and summary.image_level_only == 20  # of the 39 with boxes, + 1
    out, summary = split_box_supervision(records, 0.5, seed=0, drop_image_level_only=True)
    assert all(r["image_id"] != 0 for r in out) and summary.dropped == 20
