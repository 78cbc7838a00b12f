"""data/build.py: the training and test loaders, the mapper the datasets' metadata names, the concept-tagged
dataset, and the weak-label split through a registered dataset."""
import itertools
import json
import logging

import cv2
import numpy as np
import pytest
import torch
from conftest import make_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from PIL import Image
from records import make_record
from tiny_cxr_codet import progression_cfg

from cxr_codet.data import build as build_module
from cxr_codet.data.build import (
    TRAIN_LOADER_BUILDERS,
    ConceptTaggedDataset,
    build_cxr_test_loader,
    build_cxr_train_loader,
    build_mapper,
    check_test_images,
)
from cxr_codet.data.concept_groups import NO_CONCEPT
from cxr_codet.data.datasets.coco_cxr import register_cxr_coco
from cxr_codet.data.datasets.imagenome import PROGRESSION_LABELS
from cxr_codet.data.image_pairs import ImagePairMapper
from cxr_codet.data.mapper import CXRDatasetMapper


def test_tagged_dataset_never_mutates_the_shared_dicts():
    records = [make_record(0, {2}), make_record(1, [])]
    for record in records:
        del record["image_labels"]
    dataset = ConceptTaggedDataset(records, mapper=lambda d: {"file_name": d["file_name"]})
    assert dataset[(0, 2)] == {"file_name": "img0.png", "concept_id": 2, "image_labels": [2]}
    assert dataset[(1, NO_CONCEPT)]["concept_id"] == NO_CONCEPT
    assert all("concept_id" not in record and "image_labels" not in record for record in records)


TINY_CLASSES = ["Aortic enlargement", "Cardiomegaly", "Nodule/Mass"]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A registered 12-image dataset (findings 0..2, two No-finding images) with tiny PNGs."""
    root = tmp_path_factory.mktemp("tiny_cxr")
    records = []
    for i in range(12):
        width, height = (40, 32) if i % 4 == 0 else (32, 40)
        path = root / f"{i}.png"
        Image.fromarray(np.full((height, width), 20 * i, dtype=np.uint8)).save(path)
        labels = [] if i >= 10 else [i % 3]
        record = make_record(i, labels, width, height)
        record["file_name"] = str(path)
        record["annotations"] = [
            {"bbox": [4, 4, 20, 20], "bbox_mode": 1, "category_id": c, "iscrowd": 0} for c in labels
        ]
        records.append(record)
    name = "test_samplers_tiny_cxr"
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).set(thing_classes=TINY_CLASSES)
    yield name, records
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def tiny_cfg(dataset_name, sampler="ConceptGroupSampler", num_workers=0):
    return make_cfg(None, "DATASETS.TRAIN", (dataset_name,), "DATALOADER.SAMPLER_TRAIN", sampler,
                    "DATALOADER.NUM_WORKERS", num_workers, "INPUT.MIN_SIZE_TRAIN", (32,), "INPUT.MAX_SIZE_TRAIN", 64,
                    "SEED", 5, tiny=False)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_concept_group_loader_yields_tagged_whole_groups(tiny_dataset, num_workers):
    name, records = tiny_dataset
    cfg = tiny_cfg(name, num_workers=num_workers)
    cfg.SOLVER.IMS_PER_BATCH = 5
    cfg.DATALOADER.NO_FINDING_PER_BATCH = 1
    batches = list(itertools.islice(iter(build_cxr_train_loader(cfg)), 3))
    for batch in batches:
        assert len(batch) == 5
        concept_ids = [d["concept_id"] for d in batch]
        assert concept_ids[0] == concept_ids[1] != -1 and concept_ids[2] == concept_ids[3] != -1
        assert concept_ids[4] == -1 and batch[4]["image_labels"] == []
        for d in batch[:4]:
            assert d["concept_id"] in d["image_labels"]
            assert d["image"].shape[0] == 3 and tuple(d["image"].shape[1:]) == d["instances"].image_size
            assert d["instances"].gt_classes.tolist() == [d["concept_id"]]


def test_standard_samplers_still_build_plain_batches(tiny_dataset):
    name, _ = tiny_dataset
    assert {"TrainingSampler", "RepeatFactorTrainingSampler", "RandomSubsetTrainingSampler",
            "ConceptGroupSampler"} <= set(TRAIN_LOADER_BUILDERS)
    cfg = tiny_cfg(name, sampler="TrainingSampler")
    cfg.SOLVER.IMS_PER_BATCH = 3
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    batch = next(iter(build_cxr_train_loader(cfg)))
    assert len(batch) == 3 and all("concept_id" not in d and "image" in d for d in batch)


def test_unknown_sampler_is_refused(tiny_dataset):
    with pytest.raises(ValueError, match=r"SAMPLER_TRAIN = 'Nope' is unknown; choose one of .*ConceptGroup"):
        build_cxr_train_loader(tiny_cfg(tiny_dataset[0], sampler="Nope"))


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
    cfg = make_cfg(None, "SEED", 0, "DATASETS.TRAIN", ("test_box_fraction_coco",), "DATASETS.TRAIN_BOX_FRACTION", 0.3,
                   tiny=False)
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


def test_the_data_layer_maps_pair_datasets_as_pairs_for_training_and_test():
    torch.manual_seed(0)
    cfg = progression_cfg()
    assert MetadataCatalog.get("cxr_phantom_pairs_tiny_val").mapper == "image_pair"
    assert isinstance(build_mapper(cfg, ["cxr_phantom_pairs_tiny_train"], is_train=True), ImagePairMapper)
    model = build_model(cfg).eval()
    loaded = next(iter(build_cxr_test_loader(cfg, "cxr_phantom_pairs_tiny_val")))
    assert "prior_image" in loaded[0] and "prior_boxes" in loaded[0]
    record = DatasetCatalog.get("cxr_phantom_pairs_tiny_val")[0]
    with torch.no_grad():
        from_loader = model(loaded)[0]["progression"]
        from_pair = model([ImagePairMapper(cfg, is_train=False)(record)])[0]["progression"]
    assert from_loader["regions"] == [r["name"] for r in record["regions"]]
    assert from_loader["labels"] == list(PROGRESSION_LABELS)
    assert from_loader["scores"].shape == (len(record["regions"]), 3)
    torch.testing.assert_close(from_loader["scores"].sum(dim=1), torch.ones(len(record["regions"])))
    torch.testing.assert_close(from_loader["scores"], from_pair["scores"])
    batch = next(iter(build_cxr_train_loader(cfg)))
    assert all("prior_image" in item and "progression_labels" in item for item in batch)


def test_the_deprecated_pair_sampler_is_the_training_sampler_without_aspect_ratio_grouping(caplog):
    cfg = progression_cfg("DATALOADER.SAMPLER_TRAIN", "PairTrainingSampler", "DATALOADER.ASPECT_RATIO_GROUPING", True)
    with caplog.at_level(logging.WARNING, logger="cxr_codet.data.build"):
        batch = next(iter(build_cxr_train_loader(cfg)))
    assert "'PairTrainingSampler' is deprecated: use 'TrainingSampler' with DATALOADER.ASPECT_RATIO_GROUPING" in caplog.text
    assert len(batch) == cfg.SOLVER.IMS_PER_BATCH and all("prior_image" in item for item in batch)


def test_the_mapper_comes_from_the_metadata_and_must_agree(tiny_dataset):
    name, _ = tiny_dataset
    cfg = tiny_cfg(name)
    assert isinstance(build_mapper(cfg, [name], is_train=True), CXRDatasetMapper)  # no metadata mapper: "cxr"
    with pytest.raises(ValueError, match=r"need different mappers \{'.*': 'cxr', 'cxr_phantom_pairs_tiny_train': "
                                         r"'image_pair'\}"):
        build_mapper(cfg, [name, "cxr_phantom_pairs_tiny_train"], is_train=True)
    DatasetCatalog.register("test_build_unknown_mapper", lambda: [])
    MetadataCatalog.get("test_build_unknown_mapper").mapper = "video"
    try:
        with pytest.raises(ValueError, match=r"'test_build_unknown_mapper' has metadata mapper 'video'; known: "
                                             r"\['cxr', 'image_pair'\]"):
            build_mapper(cfg, ["test_build_unknown_mapper"], is_train=True)
    finally:
        DatasetCatalog.remove("test_build_unknown_mapper")
        MetadataCatalog.remove("test_build_unknown_mapper")


def test_a_test_set_checked_at_start_up_is_not_checked_again(tiny_dataset, monkeypatch):
    name, records = tiny_dataset
    cfg = tiny_cfg(name)
    cfg.DATASETS.TEST = (name,)
    cfg.DATALOADER.SKIP_BAD_IMAGES = True
    calls = []
    original = build_module.check_images

    def counting_check(dataset_dicts, what, **kwargs):
        calls.append(what)
        kept = original(dataset_dicts, what, **kwargs)
        return [record for record in kept if not record["file_name"].endswith("/0.png")]  # as if 0.png were bad

    monkeypatch.setattr(build_module, "check_images", counting_check)
    monkeypatch.setattr(build_module, "_IMAGE_CHECKS", {})
    check_test_images(cfg)
    loader = build_cxr_test_loader(cfg, name)
    assert calls == [f"test set {name}"]  # checked once, at start-up
    assert len(loader.dataset) == len(records) - 1  # the image the check skipped stays out of the loader
