"""The synthetic cxr_phantom dataset: split plan, rendering, boxes vs pixels, files, registration, concurrency."""
import filecmp
import json
import os
import threading
from collections import Counter

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from cxr_codet.data.classes import VINDR_CXR_CLASSES
from cxr_codet.data.datasets import phantom
from cxr_codet.data.datasets.phantom import (
    BUILTIN_PHANTOM_SPLITS,
    ensure_cxr_phantom,
    phantom_dir,
    phantom_split_plan,
    register_cxr_phantom,
)
from cxr_codet.data.datasets.phantom_render import render_phantom_image
from cxr_codet.data.realism import dataset_realism

NUM_CLASSES = len(VINDR_CXR_CLASSES)


def test_split_plan_balances_findings_and_normal_images():
    plan = phantom_split_plan(100, seed=0)
    assert len(plan) == 100
    assert plan.count(None) == 20
    counts = Counter(c for c in plan if c is not None)
    assert set(counts) == set(range(NUM_CLASSES))
    assert max(counts.values()) - min(counts.values()) <= 1
    assert plan == phantom_split_plan(100, seed=0)
    assert plan != phantom_split_plan(100, seed=1)


def test_render_is_deterministic_by_seed_and_index():
    a = render_phantom_image(96, seed=3, index=5, primary=8, with_background=True)
    b = render_phantom_image(96, seed=3, index=5, primary=8, with_background=True)
    assert a.image.dtype == np.uint8 and a.image.shape == (96, 96)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.background, b.background) and a.boxes == b.boxes
    assert not np.array_equal(a.image, render_phantom_image(96, seed=4, index=5, primary=8).image)
    assert not np.array_equal(a.image, render_phantom_image(96, seed=3, index=6, primary=8).image)


def test_normal_image_has_no_boxes_and_no_lesion_pixels():
    sample = render_phantom_image(96, seed=0, index=1, primary=None, with_background=True)
    assert sample.boxes == [] and sample.findings == []
    assert np.array_equal(sample.image, sample.background)


@pytest.mark.parametrize("size", [128, 256])
def test_boxes_tightly_cover_the_lesion_pixels(size):
    """Each box lies in the image, its pixels differ from the lesion-free render, and nothing differs outside."""
    seen = set()
    for index in range(2 * NUM_CLASSES):
        sample = render_phantom_image(size, seed=11, index=index, primary=index % NUM_CLASSES, with_background=True)
        assert sample.boxes, f"image {index}: the primary finding was not placed"
        diff = np.abs(sample.image.astype(int) - sample.background.astype(int))
        covered = np.zeros_like(diff, dtype=bool)
        for category, (x, y, w, h) in sample.boxes:
            seen.add(category)
            assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= size and y + h <= size
            inside = diff[y : y + h, x : x + w]
            assert inside.mean() > 5, (VINDR_CXR_CLASSES[category], inside.mean())
            # the lesion reaches each side of its box (within 2 px of blur)
            for strip in (inside[:2], inside[-2:], inside[:, :2], inside[:, -2:]):
                assert strip.max() > 8, VINDR_CXR_CLASSES[category]
            covered[max(y - 2, 0) : y + h + 2, max(x - 2, 0) : x + w + 2] = True
        assert diff[~covered].max() <= 8, f"image {index}: lesion pixels outside every box"
    assert seen == set(range(NUM_CLASSES))


def test_lesions_sit_where_the_finding_belongs():
    """Location priors: effusions at the lung bases, fibrosis above ILD, aortic knob in the upper image right."""
    centres = {c: [] for c in range(NUM_CLASSES)}
    for index in range(4 * NUM_CLASSES):
        for category, (x, y, w, h) in render_phantom_image(128, 21, index, index % NUM_CLASSES).boxes:
            centres[category].append(((x + w / 2) / 128, (y + h / 2) / 128))
    mean_y = {c: np.mean([p[1] for p in v]) for c, v in centres.items()}
    name = VINDR_CXR_CLASSES.index
    assert mean_y[name("Pleural effusion")] > 0.58 > mean_y[name("Pulmonary fibrosis")] + 0.2
    assert mean_y[name("Pulmonary fibrosis")] < mean_y[name("ILD")] - 0.15
    assert all(x > 0.5 and y < 0.45 for x, y in centres[name("Aortic enlargement")])


def _style_statistics(style, count=28, size=256):
    images, records = {}, []
    for index in range(count):
        sample = render_phantom_image(size, 9, index, None if index % 7 == 0 else index % NUM_CLASSES, style=style)
        images[index] = sample.image
        records.append({"file_name": index, "annotations": [{"bbox": box} for _, box in sample.boxes]})
    return dataset_realism(records, read_image=images.__getitem__)


def test_nih_like_style_draws_the_same_findings_in_looser_boxes():
    for index in range(NUM_CLASSES):
        plain = render_phantom_image(128, 4, index, index, with_background=True)
        nih = render_phantom_image(128, 4, index, index, with_background=True, style="nih_like")
        assert [c for c, _ in nih.boxes] == [c for c, _ in plain.boxes]
        assert not np.array_equal(nih.image, plain.image) and not np.array_equal(nih.background, plain.background)
        for (_, (x, y, w, h)), (_, (nx, ny, nw, nh)) in zip(plain.boxes, nih.boxes):
            assert nx <= x and ny <= y and nx + nw >= x + w and ny + nh >= y + h  # padding only grows a box
            assert 0 <= nx and 0 <= ny and nx + nw <= 128 and ny + nh <= 128
            assert nw * nh > w * h or (nw, nh) == (128, 128)


def test_nih_like_style_is_closer_to_the_nih_figures():
    """The NIH box images' p25 intensity (0.31), median box side (0.22) and p95 lesion CNR (0.68), from
    datasets/README.md: the nih_like style is nearer to each than the default style."""
    plain, nih = _style_statistics("synthetic"), _style_statistics("nih_like")
    for key, target in (("intensity_p25", 0.31), ("box_side_p50", 0.22), ("contrast_p95", 0.68)):
        assert abs(nih[key] - target) < abs(plain[key] - target), (key, plain[key], nih[key])


def test_unknown_style_is_named(tmp_path):
    with pytest.raises(KeyError, match=r"unknown cxr_phantom style 'nih'; known styles: \['nih_like', 'synthetic'\]"):
        register_cxr_phantom("phantom_bad_style", str(tmp_path), 4, 80, 0, style="nih")
    assert os.path.basename(phantom_dir(str(tmp_path), 4, 80, 0, "nih_like")) == "v2-nih_like_n4_s80_seed0"
    assert os.path.basename(phantom_dir(str(tmp_path), 4, 80, 0)) == "v2_n4_s80_seed0"


def test_held_out_test_split_draws_other_images_than_train_and_val():
    """cxr_phantom_test is the held-out split: it must not share (size, seed) with a split of its style, since the
    same parameters give the same images."""
    num_images, size, seed, style = BUILTIN_PHANTOM_SPLITS["cxr_phantom_test"]
    assert (num_images, size, style) == (200, 256, "synthetic")
    others = {(s, sd, st) for name, (_, s, sd, st) in BUILTIN_PHANTOM_SPLITS.items() if name != "cxr_phantom_test"}
    assert (size, seed, style) not in others
    val_seed = BUILTIN_PHANTOM_SPLITS["cxr_phantom_val"][2]
    assert phantom_split_plan(num_images, seed) != phantom_split_plan(num_images, val_seed)
    assert MetadataCatalog.get("cxr_phantom_test").phantom_params["seed"] == seed


def test_tiny_split_is_registered_and_loads(tmp_path):
    name = "cxr_phantom_tiny_train"
    num_images, size, _, style = BUILTIN_PHANTOM_SPLITS[name]
    assert style == "synthetic"
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == num_images == 24
    metadata = MetadataCatalog.get(name)
    assert metadata.thing_classes == list(VINDR_CXR_CLASSES) and metadata.evaluator_type == "coco"
    assert os.path.isfile(metadata.json_file) and os.path.isdir(metadata.image_root)
    box_counts = [len(d["annotations"]) for d in dicts]
    assert box_counts.count(0) == round(0.2 * num_images)  # "No finding" images are kept
    assert sum(len(set(d["image_labels"])) >= 2 for d in dicts) >= 3  # some images have several findings
    for d in dicts:
        image = cv2.imread(d["file_name"], cv2.IMREAD_UNCHANGED)
        assert image.shape == (size, size) and image.dtype == np.uint8
        labels = sorted({a["category_id"] for a in d["annotations"]})
        assert d["image_labels"] == labels
        findings = [VINDR_CXR_CLASSES[c] for c in labels] or ["No finding"]
        assert set(d["captions"]) == {"elaborate", "unelaborate"} and d["caption"] == d["captions"]["unelaborate"]
        for finding in findings:
            assert finding.lower() in d["caption"].lower() and finding.lower() in d["captions"]["elaborate"].lower()
        for a in d["annotations"]:
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= size and y + h <= size and w > 0 and h > 0


def test_second_use_reuses_the_files(monkeypatch):
    DatasetCatalog.get("cxr_phantom_tiny_val")

    def fail(*args):
        raise AssertionError("the split was generated again")

    monkeypatch.setattr(phantom, "write_cxr_phantom", fail)
    assert len(DatasetCatalog.get("cxr_phantom_tiny_val")) == 12


def test_same_parameters_give_byte_identical_files(tmp_path):
    json_a, images_a = ensure_cxr_phantom(str(tmp_path / "a"), 6, 96, seed=7)
    json_b, images_b = ensure_cxr_phantom(str(tmp_path / "b"), 6, 96, seed=7)
    assert filecmp.cmp(json_a, json_b, shallow=False)
    names = sorted(os.listdir(images_a))
    assert names == [f"{i:06d}.png" for i in range(6)] == sorted(os.listdir(images_b))
    match, mismatch, errors = filecmp.cmpfiles(images_a, images_b, names, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == 6
    json_c, _ = ensure_cxr_phantom(str(tmp_path / "a"), 6, 96, seed=8)
    assert json_c != json_a and not filecmp.cmp(json_a, json_c, shallow=False)


def test_coco_file_contents(tmp_path):
    json_file, _ = ensure_cxr_phantom(str(tmp_path), 10, 96, seed=2)
    coco = json.load(open(json_file))
    assert [c["id"] for c in coco["categories"]] == list(range(NUM_CLASSES))
    assert [c["name"] for c in coco["categories"]] == list(VINDR_CXR_CLASSES)
    assert coco["info"]["num_images"] == 10 and coco["info"]["seed"] == 2
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    for a in coco["annotations"]:
        assert a["area"] == a["bbox"][2] * a["bbox"][3] and a["iscrowd"] == 0


def test_custom_registration_and_bad_parameters(tmp_path):
    register_cxr_phantom("cxr_phantom_test_custom", str(tmp_path), num_images=5, image_size=80, seed=9)
    dicts = DatasetCatalog.get("cxr_phantom_test_custom")
    assert len(dicts) == 5 and all(d["height"] == d["width"] == 80 for d in dicts)
    params = MetadataCatalog.get("cxr_phantom_test_custom").phantom_params
    assert params == {"num_images": 5, "image_size": 80, "seed": 9, "style": "synthetic"}
    with pytest.raises(ValueError, match="num_images >= 1 and image_size >= 64, got 0, 96"):
        ensure_cxr_phantom(str(tmp_path), 0, 96, seed=0)


def test_concurrent_first_use_generates_once(tmp_path, monkeypatch):
    calls = []
    real_write = phantom.write_cxr_phantom

    def counting_write(*args):
        calls.append(args)
        real_write(*args)

    monkeypatch.setattr(phantom, "write_cxr_phantom", counting_write)
    key = os.path.basename(phantom_dir(str(tmp_path), 4, 80, 1))
    (tmp_path / "cxr_phantom" / f".{key}.tmp-1-dead").mkdir(parents=True)  # left by a killed process
    results = []
    def first_use():
        results.append(ensure_cxr_phantom(str(tmp_path), 4, 80, 1))

    threads = [threading.Thread(target=first_use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3
    assert sorted(os.listdir(tmp_path / "cxr_phantom")) == [f".{key}.lock", key]
    assert results[0][0] == os.path.join(phantom_dir(str(tmp_path), 4, 80, 1), "annotations.json")


def test_incomplete_folder_is_reported(tmp_path):
    os.makedirs(phantom_dir(str(tmp_path), 3, 80, 0))
    with pytest.raises(FileNotFoundError, match="has no annotations.json; delete the folder"):
        ensure_cxr_phantom(str(tmp_path), 3, 80, 0)
