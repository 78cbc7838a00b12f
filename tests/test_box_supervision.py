"""The weak-label regime: the seeded box fraction split, its loader wiring, box images per batch, the
trainer's refusal for box-only detectors, and CXR-CoDet's per-image masking of the RPN and box losses."""
import itertools
import json
import logging

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils.events import EventStorage
from tiny_cxr_codet import REPO_ROOT, _instances, hand_made_batch, tiny_model

from cxr_codet import add_cxr_codet_config
from cxr_codet.data.box_supervision import apply_box_fraction, boxed_positions, split_box_supervision
from cxr_codet.data.build import build_cxr_train_loader
from cxr_codet.data.datasets.coco_cxr import register_cxr_coco
from cxr_codet.data.concept_groups import NO_CONCEPT, groups_per_batch
from cxr_codet.data.samplers import ConceptGroupSampler
from cxr_codet.config import build_cfg
from cxr_codet.studies.spec import load_study
from cxr_codet.engine.startup import check_image_level_only_support

BOX_LOSSES = ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg")


def _records(num_with_findings=40, num_normal=10):
    """Dicts with one or two findings (one box each, and a caption), then `num_normal` No-finding images."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(num_with_findings + num_normal):
        labels = sorted(set(rng.choice(5, size=rng.integers(1, 3)).tolist())) if i < num_with_findings else []
        records.append({
            "file_name": f"img{i}.png", "image_id": i, "width": 100, "height": 120, "caption": f"caption {i}",
            "image_labels": labels,
            "annotations": [{"bbox": [1, 1, 10, 10], "bbox_mode": 0, "category_id": c} for c in labels],
        })
    return records


def _cfg(**data):
    cfg = get_cfg()
    add_cxr_codet_config(cfg)
    cfg.SEED = 0
    for key, value in data.items():
        setattr(cfg.DATASETS, key, value)
    return cfg


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (0.1, 4), (0.25, 10), (0.5, 20), (1.0, 40)])
def test_split_keeps_boxes_on_exactly_the_fraction_of_images_with_findings(fraction, expected):
    records = _records()
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
    records = _records()
    assert boxed_positions(records, 0.25, 7) == boxed_positions(records, 0.25, 7)
    assert boxed_positions(records, 0.25, 7)[0] != boxed_positions(records, 0.25, 8)[0]
    small, large = boxed_positions(records, 0.1, 7)[0], boxed_positions(records, 0.25, 7)[0]
    assert set(small) < set(large)


def test_drop_leaves_out_image_level_only_images_and_keeps_no_finding_ones():
    out, summary = split_box_supervision(_records(), 0.25, seed=0, drop_image_level_only=True)
    assert len(out) == 10 + 10 and summary.dropped == 30
    assert all(r["box_supervised"] for r in out)
    assert sum(1 for r in out if not r["image_labels"]) == 10


def test_findings_left_without_boxes_are_reported():
    records = _records()
    _, summary = split_box_supervision(records, 0.0, seed=0)
    assert summary.findings_without_boxes == sorted({c for r in records for c in r["image_labels"]})


def test_apply_box_fraction_reads_the_config_and_logs_counts(caplog):
    records = _records()
    assert apply_box_fraction(_cfg(), records) == records  # fraction 1: unchanged
    cfg = _cfg(TRAIN_BOX_FRACTION=0.1)
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
        apply_box_fraction(_cfg(TRAIN_BOX_FRACTION=fraction), _records())


def test_dropping_everything_is_refused():
    cfg = _cfg(TRAIN_BOX_FRACTION=0.0, TRAIN_DROP_IMAGE_LEVEL_ONLY=True)
    with pytest.raises(ValueError, match="no training image is left"):
        apply_box_fraction(cfg, _records(num_normal=0))


def test_sampler_appends_box_images_with_findings():
    records, _ = split_box_supervision(_records(), 0.25, seed=0)
    boxed = {i for i, r in enumerate(records) if r["box_supervised"] and r["image_labels"]}
    sampler = ConceptGroupSampler(records, group_size=2, ims_per_batch=8, box_images_per_batch=2, seed=0,
                                  rank=0, world_size=1)
    assert sampler.batch_size == 8
    for batch in itertools.islice(iter(sampler), 20):
        assert all(concept != NO_CONCEPT for _, concept in batch[:6])
        assert all(concept == NO_CONCEPT and index in boxed for index, concept in batch[6:])


def test_box_images_per_batch_errors_name_the_key():
    with pytest.raises(ValueError, match="BOX_IMAGES_PER_BATCH = 1 leaves 5 images"):
        groups_per_batch(8, 1, 2, no_finding_per_batch=2, box_images_per_batch=1)
    records, _ = split_box_supervision(_records(), 0.0, seed=0)
    with pytest.raises(ValueError, match="BOX_IMAGES_PER_BATCH = 2 but no training image with a finding has boxes"):
        ConceptGroupSampler(records, group_size=2, ims_per_batch=8, box_images_per_batch=2, seed=0, rank=0,
                            world_size=1)


def test_registered_coco_dataset_trains_with_a_box_fraction(tmp_path, caplog):
    """Any register_cxr_coco dataset: the loader splits it and the flags reach the model inputs."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 80} for i in range(1, 13)]
    annotations = [{"id": i, "image_id": i, "category_id": i % 2, "bbox": [10, 10, 20, 20]} for i in range(1, 11)]
    categories = [{"id": 0, "name": "Cardiomegaly"}, {"id": 1, "name": "Pleural effusion"}]
    (tmp_path / "images").mkdir()
    for image in images:  # the loader checks every image's header at build time
        cv2.imwrite(str(tmp_path / "images" / image["file_name"]), np.zeros((80, 100), np.uint8))
    json_file = tmp_path / "train.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    if "test_box_fraction_coco" not in DatasetCatalog.list():
        register_cxr_coco("test_box_fraction_coco", str(json_file), str(tmp_path / "images"))
    cfg = _cfg(TRAIN=("test_box_fraction_coco",), TRAIN_BOX_FRACTION=0.3)
    cfg.merge_from_list(["DATALOADER.SAMPLER_TRAIN", "ConceptGroupSampler", "DATALOADER.BOX_IMAGES_PER_BATCH", 2,
                         "SOLVER.IMS_PER_BATCH", 6, "DATALOADER.NUM_WORKERS", 0, "SEED", 1])
    with caplog.at_level(logging.INFO, logger="cxr_codet.data.box_supervision"):
        loader = build_cxr_train_loader(cfg, mapper=lambda record: record)
    assert "3 images with findings keep their boxes, 7 become image-level-only" in caplog.text
    assert "2 No-finding images" in caplog.text
    batch = next(iter(loader))
    assert len(batch) == 6
    for item in batch[:4]:
        assert item["annotations"] == [] if not item["box_supervised"] else len(item["annotations"]) == 1
        assert item["image_labels"]
    assert all(item["box_supervised"] and item["annotations"] for item in batch[4:])


def test_start_up_refuses_image_level_only_images_for_a_box_only_detector():
    cfg = _cfg(TRAIN_BOX_FRACTION=0.5)
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"  # Faster R-CNN
    with pytest.raises(ValueError, match="which GeneralizedRCNN would train on as if they had no lesion; set "
                                         "DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY True.*or use MODEL.META_ARCHITECTURE "
                                         "'CXRCoDet'"):
        check_image_level_only_support(cfg)
    cfg.MODEL.META_ARCHITECTURE = "CXRCoDet"
    check_image_level_only_support(cfg)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY = True
    check_image_level_only_support(cfg)


def _image_level_only(item):
    """The loader's view of `item` after the split: findings kept, no box."""
    return dict(item, instances=_instances([], []), box_supervised=False)


def _losses(model, batch, seed=0):
    torch.manual_seed(seed)  # the RPN and ROI samplers draw from torch's generator
    with EventStorage():
        return model(batch)


@pytest.mark.parametrize("c4", [False, True])
def test_image_level_only_image_adds_nothing_to_rpn_and_box_losses(tmp_path, c4):
    """The box losses of a batch with one image-level-only image equal those of the batch without it."""
    model = tiny_model(tmp_path, c4=c4, group_size=1, extra=["MODEL.CO_OCCURRENCE.ENABLED", False])
    batch = hand_made_batch(num_groups=2, with_concepts=False)
    masked = _losses(model, [batch[0], _image_level_only(batch[1]), *batch[2:]])
    without = _losses(model, [batch[0], *batch[2:]])
    as_background = _losses(model, [batch[0], dict(batch[1], instances=_instances([], [])), *batch[2:]])
    for key in BOX_LOSSES:
        torch.testing.assert_close(masked[key], without[key])
    assert any(not torch.allclose(as_background[key], without[key]) for key in BOX_LOSSES)


def test_image_level_only_image_trains_only_through_the_co_occurrence_loss(tmp_path):
    """Gradients reaching the backbone features of the image-level-only image: none from the RPN and box
    losses, some from the co-occurrence loss; the boxed image in its group gets box-loss gradients."""
    model = tiny_model(tmp_path)
    batch = hand_made_batch(num_groups=2)
    batch[1] = _image_level_only(batch[1])
    captured = []
    model.backbone.register_forward_hook(lambda module, inputs, output: captured.extend(output.values()))
    losses = _losses(model, batch)
    box_loss = sum(losses[k] for k in BOX_LOSSES)
    box_grads = torch.autograd.grad(box_loss, captured, retain_graph=True, allow_unused=True)
    co_grads = torch.autograd.grad(losses["loss_cooccurrence"], captured, allow_unused=True)
    box_grads = [g for g in box_grads if g is not None]
    assert box_grads and all(torch.count_nonzero(g[1]) == 0 for g in box_grads)
    assert sum(g[0].abs().sum() for g in box_grads) > 0
    assert sum(g[1].abs().sum() for g in co_grads if g is not None) > 0


def test_batch_without_any_box_gives_zero_box_losses_and_trains_co_occurrence(tmp_path):
    model = tiny_model(tmp_path)
    batch = [_image_level_only(item) for item in hand_made_batch(num_groups=2)]
    losses = _losses(model, batch)
    for key in BOX_LOSSES:
        assert losses[key].item() == 0.0
    assert losses["loss_cooccurrence"].item() > 0
    sum(losses.values()).backward()
    assert model.roi_heads.co_occurrence.sim_mlp.fc1.weight.grad.abs().sum() > 0


def test_weak_label_study_rows_build_and_pair_each_fraction(monkeypatch):
    """studies/phantom_weak_labels.yaml, read as the study runner reads it: every row's config and overrides
    build; at fractions below 1 the baseline drops the image-level-only images and CXR-CoDet keeps them; the
    box-only control (co-occurrence off) at fraction 0.1 drops them like the baseline."""
    monkeypatch.chdir(REPO_ROOT)  # study files name configs relative to the repository
    study = load_study(REPO_ROOT / "studies" / "phantom_weak_labels.yaml")
    assert list(study.seeds) == [0, 1, 2]
    by_fraction = {}
    for row in study.rows:
        cfg = build_cfg(row.config, [*study.overrides, *row.overrides], cpu=True)
        assert cfg.SOLVER.MAX_ITER == 850 and cfg.SOLVER.IMS_PER_BATCH == 8  # the component study's budget
        model = cfg.MODEL.META_ARCHITECTURE
        if model == "CXRCoDet" and not cfg.MODEL.CO_OCCURRENCE.ENABLED:
            model = "box-only control"
        by_fraction.setdefault(cfg.DATASETS.TRAIN_BOX_FRACTION, {})[model] = cfg
    assert sorted(by_fraction) == [0.1, 0.25, 1.0]
    for fraction, cells in by_fraction.items():  # at fraction 1.0 no image is image-level-only: nothing to drop
        assert cells["GeneralizedRCNN"].DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY == (fraction < 1.0)
        assert not cells["CXRCoDet"].DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY
        assert cells["CXRCoDet"].DATALOADER.BOX_IMAGES_PER_BATCH == 2
    control = by_fraction[0.1]["box-only control"]
    assert control.DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY and control.DATALOADER.SAMPLER_TRAIN == "TrainingSampler"
