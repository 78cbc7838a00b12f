"""The two-stream batch sampler: the ratio, box batches that do not depend on the caption stream, exact resume."""
import itertools

import numpy as np
import pytest

from cxr_codet.data.samplers import ConceptGroupSampler
from cxr_codet.data.streams import StreamKey, TwoStreamBatchSampler, stream_probabilities


def _records(n, labels_of):
    return [{"file_name": f"{i}.png", "width": 64, "height": 64, "image_labels": labels_of(i)} for i in range(n)]


def _caption_sampler(records, seed=3, batch=4):
    return ConceptGroupSampler(records, group_size=2, ims_per_batch=batch, seed=seed, rank=0, world_size=1)


def _take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def _box_batches(batches):
    return [(i, [k.index for k in b]) for i, b in enumerate(batches) if b[0].stream == 0]


def test_ratio_holds_over_many_iterations():
    sampler = TwoStreamBatchSampler(10, _caption_sampler(_records(12, lambda i: [i % 3])), ratio=[1, 4],
                                    box_batch_size=2, seed=0, rank=0, world_size=1)
    streams = np.array(sampler.stream_sequence(4000))
    assert abs(streams.mean() - 0.8) < 0.02
    batches = _take(sampler, 200)
    assert [b[0].stream for b in batches] == sampler.stream_sequence(200)
    assert all(len(b) == 2 for b in batches if b[0].stream == 0)
    caption = [b for b in batches if b[0].stream == 1]
    assert all(len(b) == 4 and b[0].concept_id == b[1].concept_id and b[2].concept_id == b[3].concept_id for b in caption)


def test_box_batches_do_not_depend_on_the_caption_stream():
    a = TwoStreamBatchSampler(10, _caption_sampler(_records(12, lambda i: [i % 3])), ratio=[1, 1], box_batch_size=3,
                              seed=5, rank=0, world_size=1)
    b = TwoStreamBatchSampler(10, _caption_sampler(_records(30, lambda i: [i % 7]), seed=9), ratio=[1, 1],
                              box_batch_size=3, seed=5, rank=0, world_size=1)
    skipped = TwoStreamBatchSampler(10, None, ratio=[1, 1], box_batch_size=3, seed=5, rank=0, world_size=1,
                                    skip_caption=True)
    runs = [_take(s, 100) for s in (a, b, skipped)]
    assert _box_batches(runs[0]) == _box_batches(runs[1]) == _box_batches(runs[2])
    assert len(_box_batches(runs[0])) > 30
    assert all(batch == [StreamKey(1, -1)] for batch in runs[2] if batch[0].stream == 1)  # placeholders
    other_seed = TwoStreamBatchSampler(10, None, ratio=[1, 1], box_batch_size=3, seed=6, rank=0, world_size=1,
                                       skip_caption=True)
    assert _box_batches(_take(other_seed, 100)) != _box_batches(runs[2])


def test_every_box_image_is_seen_once_per_pass():
    sampler = TwoStreamBatchSampler(9, None, ratio=[1, 0], box_batch_size=3, seed=1, rank=0, world_size=1)
    first_pass = [i for batch in _take(sampler, 3) for i in (k.index for k in batch)]
    assert sorted(first_pass) == list(range(9))


def test_resume_continues_the_exact_sequence():
    def make():
        return TwoStreamBatchSampler(10, _caption_sampler(_records(12, lambda i: [i % 3])), ratio=[1, 4],
                                     box_batch_size=2, seed=2, rank=0, world_size=1)
    full = _take(make(), 60)
    resumed = make()
    resumed.set_start_iteration(37)
    assert _take(resumed, 23) == full[37:]


def test_processes_share_the_stream_and_split_the_box_batch():
    ranks = [TwoStreamBatchSampler(12, None, ratio=[1, 1], box_batch_size=2, seed=4, rank=r, world_size=2,
                                   skip_caption=True) for r in (0, 1)]
    one, two = (_take(s, 40) for s in ranks)
    assert [b[0].stream for b in one] == [b[0].stream for b in two]
    for x, y in zip(one, two):
        if x[0].stream == 0:
            assert len(x) == len(y) == 2 and not {k.index for k in x} & {k.index for k in y}


@pytest.mark.parametrize("ratio", [[0, 0], [1, -1], [1]])
def test_bad_ratio_is_refused(ratio):
    with pytest.raises(ValueError, match="DATALOADER.DATASET_RATIO"):
        stream_probabilities(ratio)


def test_caption_iterations_without_caption_images_are_refused():
    with pytest.raises(ValueError, match="caption stream iterations, but it has no image"):
        TwoStreamBatchSampler(10, None, ratio=[1, 1], box_batch_size=2, seed=0, rank=0, world_size=1)
