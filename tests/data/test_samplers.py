"""data/samplers.py: the concept-group sampler's groups, sharding, seeding, buckets, box and No-finding images,
and the start-up check of its batch layout."""
import itertools
from collections import Counter

import numpy as np
import pytest
from conftest import make_cfg
from records import make_record, records_with_findings

from cxr_codet.data.box_supervision import split_box_supervision
from cxr_codet.data.concept_groups import NO_CONCEPT, groups_per_batch
from cxr_codet.data.samplers import ConceptGroupSampler, check_concept_group_layout


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
    cfg = make_cfg(None, "SOLVER.IMS_PER_BATCH", 32, tiny=False)
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


def test_sampler_appends_box_images_with_findings():
    records, _ = split_box_supervision(records_with_findings(), 0.25, seed=0)
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
    records, _ = split_box_supervision(records_with_findings(), 0.0, seed=0)
    with pytest.raises(ValueError, match="BOX_IMAGES_PER_BATCH = 2 but no training image with a finding has boxes"):
        ConceptGroupSampler(records, group_size=2, ims_per_batch=8, box_images_per_batch=2, seed=0, rank=0,
                            world_size=1)
