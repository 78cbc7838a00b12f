"""Concept-group sampler and training loaders: group contents, sharding, seeding, buckets, errors, loaders."""
import itertools
from collections import Counter

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from cxr_codet import add_cxr_codet_config
from cxr_codet.data.build import (
    TRAIN_LOADER_BUILDERS,
    ConceptTaggedDataset,
    build_cxr_train_loader,
)
from cxr_codet.data.concept_groups import NO_CONCEPT, groups_per_batch
from cxr_codet.data.samplers import ConceptGroupSampler, check_concept_group_layout


def make_record(index, labels, width=100, height=120):
    """A dataset dict with one box per finding in `labels` (no image file: the sampler never reads one)."""
    return {
        "file_name": f"img{index}.png",
        "image_id": index,
        "width": width,
        "height": height,
        "image_labels": sorted(labels),
        "annotations": [
            {"bbox": [1, 1, 10, 10], "bbox_mode": 0, "category_id": c} for c in sorted(labels)
        ],
    }


def mixed_dataset():
    """60 images: findings 0..3 with 1-2 per image, some portrait, some landscape, plus 10 No-finding."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(50):
        labels = set(rng.choice(4, size=rng.integers(1, 3), replace=False).tolist())
        landscape = i % 3 == 0
        records.append(make_record(i, labels, *((140, 100) if landscape else (100, 140))))
    records += [make_record(50 + i, []) for i in range(10)]
    return records


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def groups_of(batch, group_size, num_groups):
    return [batch[g * group_size:(g + 1) * group_size] for g in range(num_groups)]


@pytest.mark.parametrize("group_size", [2, 4])
def test_every_group_shares_a_finding_present_in_each_image(group_size):
    records = mixed_dataset()
    sampler = ConceptGroupSampler(records, group_size=group_size, ims_per_batch=2 * group_size, seed=1,
                                  rank=0, world_size=1)
    assert sampler.batch_size == 2 * group_size
    seen = set()
    for batch in take(sampler, 100):
        assert len(batch) == 2 * group_size
        for group in groups_of(batch, group_size, 2):
            concepts = {concept for _, concept in group}
            assert len(concepts) == 1
            concept = concepts.pop()
            assert all(concept in records[index]["image_labels"] for index, _ in group)
            assert len({index for index, _ in group}) == group_size  # distinct images
            seen.add(concept)
    assert seen == {0, 1, 2, 3}


def test_two_processes_get_whole_different_groups_sharded_from_one_stream():
    records = mixed_dataset()
    kwargs = dict(group_size=2, seed=7)
    ranks = [ConceptGroupSampler(records, ims_per_batch=8, rank=r, world_size=2, **kwargs) for r in (0, 1)]
    single = ConceptGroupSampler(records, ims_per_batch=4, rank=0, world_size=1, **kwargs)
    rank0, rank1, stream = take(ranks[0], 20), take(ranks[1], 20), take(single, 40)
    for batch in rank0 + rank1:
        assert len(batch) == 4  # 8 images / 2 processes = 2 whole groups of 2
        for group in groups_of(batch, 2, 2):
            assert group[0][1] == group[1][1]
    assert rank0 != rank1
    assert rank0 == stream[0::2] and rank1 == stream[1::2]


def test_deterministic_by_seed():
    records = mixed_dataset()

    def stream(seed):
        return take(ConceptGroupSampler(records, group_size=2, ims_per_batch=4, seed=seed, rank=0,
                                        world_size=1), 30)

    assert stream(3) == stream(3)
    assert stream(3) != stream(4)


def test_groups_stay_in_one_aspect_ratio_bucket_when_possible():
    # Finding 0: 5 landscape + 5 portrait images; finding 1: one landscape + one portrait image only;
    # finding 2: 3 portrait images + 1 landscape one, which must still be drawn (with a portrait one).
    records = [make_record(i, {0}, *((140, 100) if i < 5 else (100, 140))) for i in range(10)]
    records += [make_record(10, {1}, 140, 100), make_record(11, {1}, 100, 140)]
    records += [make_record(12 + i, {2}, 100, 140) for i in range(3)] + [make_record(15, {2}, 140, 100)]
    sampler = ConceptGroupSampler(records, group_size=2, ims_per_batch=2, seed=0, rank=0, world_size=1)
    buckets_used, drawn = Counter(), Counter()
    for (a, concept), (b, _) in take(sampler, 300):
        assert a != b
        drawn.update([a, b])
        landscape = {records[a]["width"] > records[a]["height"], records[b]["width"] > records[b]["height"]}
        if concept == 0:
            assert len(landscape) == 1, "a group of finding 0 mixes aspect-ratio buckets"
            buckets_used[landscape.pop()] += 1
        elif concept == 1:
            assert {a, b} == {10, 11}  # no bucket has 2 images: both buckets, still distinct images
        elif 15 not in (a, b):
            assert landscape == {False}  # portrait groups of finding 2 stay portrait
    assert buckets_used[True] > 0 and buckets_used[False] > 0
    assert set(drawn) == set(range(16)), "every image can be drawn"


def test_concept_sampling_uniform_and_by_frequency():
    records = [make_record(i, {0}) for i in range(90)] + [make_record(90 + i, {1}) for i in range(10)]

    def share_of_rare(**kwargs):
        sampler = ConceptGroupSampler(records, group_size=2, ims_per_batch=2, seed=0, rank=0, world_size=1,
                                      **kwargs)
        concepts = [batch[0][1] for batch in take(sampler, 2000)]
        return concepts.count(1) / len(concepts)

    assert share_of_rare() == pytest.approx(0.5, abs=0.05)
    assert share_of_rare(concept_sampling="frequency", frequency_power=1.0) == pytest.approx(0.1, abs=0.03)
    assert share_of_rare(concept_sampling="frequency", frequency_power=0.5) == pytest.approx(
        np.sqrt(10) / (np.sqrt(10) + np.sqrt(90)), abs=0.04
    )


def test_no_finding_images_fill_the_end_of_each_batch_with_concept_minus_one():
    records = mixed_dataset()
    sampler = ConceptGroupSampler(records, group_size=2, ims_per_batch=6, no_finding_per_batch=2, seed=0,
                                  rank=0, world_size=1)
    for batch in take(sampler, 50):
        assert len(batch) == 6
        assert all(concept != NO_CONCEPT for _, concept in batch[:4])
        assert all(concept == NO_CONCEPT and records[i]["image_labels"] == [] for i, concept in batch[4:])


def test_finding_rarer_than_group_size_repeats_images_with_a_warning(caplog):
    records = [make_record(0, {0}), make_record(1, {0}), make_record(2, {1})]
    with caplog.at_level("WARNING"):
        sampler = ConceptGroupSampler(records, group_size=3, ims_per_batch=3, seed=0, rank=0, world_size=1)
    assert "fewer images than CONCEPT_GROUP_SIZE = 3" in caplog.text and "{0: 2, 1: 1}" in caplog.text
    for batch in take(sampler, 20):
        if batch[0][1] == 1:
            assert [index for index, _ in batch] == [2, 2, 2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(group_size=1, ims_per_batch=4), r"CONCEPT_GROUP_SIZE = 1 leaves no support image"),
        (dict(group_size=4, ims_per_batch=6),
         r"batch of 6 images .* leaves 6 images.*\.CONCEPT_GROUP_SIZE = 4"),
        (dict(group_size=2, ims_per_batch=8, world_size=2, no_finding_per_batch=1),
         r"batch of 4 images \(SOLVER.IMS_PER_BATCH = 8 / 2 processes\) minus .*NO_FINDING_PER_BATCH = 1"),
        (dict(group_size=2, ims_per_batch=5, world_size=2),
         r"IMS_PER_BATCH = 5 must be a positive multiple of"),
        (dict(group_size=2, ims_per_batch=4, concept_sampling="sqrt"),
         r"CONCEPT_SAMPLING = 'sqrt' is unknown"),
    ],
)
def test_bad_batch_layout_is_refused_with_the_numbers(kwargs, message):
    kwargs = {"rank": 0, "world_size": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        ConceptGroupSampler(mixed_dataset(), **kwargs)


def test_data_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"'img0.png' has no 'width' key"):
        ConceptGroupSampler([{"file_name": "img0.png", "height": 3, "image_labels": [0]}], group_size=2,
                            ims_per_batch=2, seed=0, rank=0, world_size=1)
    with pytest.raises(ValueError, match="none of the 2 training images has a finding"):
        ConceptGroupSampler([make_record(0, []), make_record(1, [])], group_size=2, ims_per_batch=2, seed=0,
                            rank=0, world_size=1)
    with pytest.raises(ValueError, match=r"NO_FINDING_PER_BATCH = 1 but the training data has no 'No fi"):
        ConceptGroupSampler([make_record(0, [0])], group_size=2, ims_per_batch=3, no_finding_per_batch=1,
                            seed=0, rank=0, world_size=1)


def test_labels_fall_back_to_annotations_when_image_labels_are_absent():
    records = [make_record(i, {i % 2}) for i in range(6)]
    for record in records:
        del record["image_labels"]
    sampler = ConceptGroupSampler(records, group_size=2, ims_per_batch=2, seed=0, rank=0, world_size=1)
    for (a, concept), (b, _) in take(sampler, 20):
        assert a % 2 == b % 2 == concept


def test_check_concept_group_layout_reads_cfg():
    cfg = get_cfg()
    add_cxr_codet_config(cfg)
    cfg.SOLVER.IMS_PER_BATCH = 32
    assert check_concept_group_layout(cfg, world_size=1) == 16
    assert check_concept_group_layout(cfg, world_size=2) == 8
    assert groups_per_batch(32, 2, 4, 0) == 4
    cfg.DATALOADER.CONCEPT_SAMPLING = "often"
    with pytest.raises(ValueError, match="CONCEPT_SAMPLING = 'often' is unknown"):
        check_concept_group_layout(cfg, world_size=1)
    cfg.DATALOADER.CONCEPT_SAMPLING = "uniform"
    cfg.DATALOADER.CONCEPT_GROUP_SIZE = 1
    with pytest.raises(ValueError, match="leaves no support image"):
        check_concept_group_layout(cfg, world_size=1)


def test_tagged_dataset_never_mutates_the_shared_dicts():
    records = [make_record(0, {2}), make_record(1, [])]
    for record in records:
        del record["image_labels"]
    dataset = ConceptTaggedDataset(records, mapper=lambda d: {"file_name": d["file_name"]})
    assert dataset[(0, 2)] == {"file_name": "img0.png", "concept_id": 2, "image_labels": [2]}
    assert dataset[(1, NO_CONCEPT)]["concept_id"] == NO_CONCEPT
    assert all("concept_id" not in record and "image_labels" not in record for record in records)


# ---- Loaders over a tiny registered dataset ----------------------------------------------------

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
    cfg = get_cfg()
    add_cxr_codet_config(cfg)
    cfg.DATASETS.TRAIN = (dataset_name,)
    cfg.DATALOADER.SAMPLER_TRAIN = sampler
    cfg.DATALOADER.NUM_WORKERS = num_workers
    cfg.INPUT.MIN_SIZE_TRAIN = (32,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.SEED = 5
    return cfg


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
