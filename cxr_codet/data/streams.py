"""Two training streams, as CoDet and Detic train: box batches and caption (image-level) batches, one per iteration.

Each iteration draws one stream with probability proportional to its ratio (DATALOADER.DATASET_RATIO, e.g.
CoDet's [1, 4]); that iteration's per-process batch comes from that stream alone, at the stream's own batch
size (DATALOADER.DATASET_BS) and input size. The box stream is a plain shuffled stream of box-annotated images
(RPN and box losses, normalised as detectron2 normalises them: over that batch's images); the caption stream is
CoDet's concept-group sampler over images that carry image-level findings and captions (image-level losses
only).

Three independent, seeded random streams make the draw reproducible and the box batches identical across
models: which stream each iteration takes, the box stream's image order, and the caption stream's groups. Two
runs with the same seed, ratio and box-stream images therefore see the same box batches at the same iterations,
whatever their caption stream holds or whether they train on it at all. All processes take the same stream in
an iteration (each its own share of it), and `set_start_iteration` fast-forwards every stream, so a resumed run
continues the exact sequence.
"""
import itertools
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import numpy as np
from detectron2.utils import comm
from torch.utils.data.sampler import Sampler

from .concept_groups import NO_CONCEPT
from .samplers import ConceptGroupSampler

BOX_STREAM, CAPTION_STREAM = "box", "caption"
STREAM_NAMES = (BOX_STREAM, CAPTION_STREAM)
# Seed offsets of the three random streams (stream choice, box order, caption groups).
_CHOICE, _BOX = 0x5EED, 0xB0C5


@dataclass(frozen=True)
class StreamKey:
    """One image of a batch: its stream, its position in that stream's records and its concept (-1: none)."""

    stream: int
    index: int
    concept_id: int = NO_CONCEPT


def stream_probabilities(ratio: Sequence[float]) -> np.ndarray:
    """DATALOADER.DATASET_RATIO as probabilities; refuses negative entries and an all-zero ratio."""
    values = np.asarray(list(ratio), dtype=np.float64)
    if values.ndim != 1 or len(values) != len(STREAM_NAMES) or (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"DATALOADER.DATASET_RATIO must be two non-negative numbers (box, caption) that are not "
                         f"both 0, got {list(ratio)}")
    return values / values.sum()


class _BoxStream:
    """Infinite seeded shuffles of the box-stream records; process `rank` takes every world_size-th image."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int, world_size: int):
        if size <= 0:
            raise ValueError("the box stream has no image")
        self._size, self._batch, self._rank, self._world = size, batch_size, rank, world_size
        self._rng = np.random.default_rng([seed, _BOX])
        self._order: List[int] = []

    def _take(self, count: int) -> List[int]:
        while len(self._order) < count:
            self._order.extend(self._rng.permutation(self._size).tolist())
        taken, self._order = self._order[:count], self._order[count:]
        return taken

    def next_batch(self) -> List[int]:
        """This process's share of the next global box batch (batch_size x world_size images)."""
        return self._take(self._batch * self._world)[self._rank::self._world]


class TwoStreamBatchSampler(Sampler):
    """Infinite batch sampler over two streams; yields lists of StreamKey, all of one stream."""

    def __init__(self, num_box_records: int, caption_sampler: Optional[ConceptGroupSampler], *, ratio: Sequence[float],
                 box_batch_size: int, seed: int, rank: Optional[int] = None, world_size: Optional[int] = None,
                 skip_caption: bool = False):
        """
        Args:
            num_box_records: images in the box stream (indices 0..n-1 of its records).
            caption_sampler: concept-group batches of the caption stream (per process), or None when the ratio
                gives the caption stream no iteration.
            ratio: DATALOADER.DATASET_RATIO, (box, caption).
            box_batch_size: images per process in a box batch.
            seed: shared by all processes.
            skip_caption: yield a caption iteration as one placeholder key (no image is read), for models that
                train nothing on captions: the trainer then takes a zero-gradient step, keeping the schedule.
        """
        self.probabilities = stream_probabilities(ratio)
        if self.probabilities[1] > 0 and caption_sampler is None and not skip_caption:
            raise ValueError("DATALOADER.DATASET_RATIO gives the caption stream iterations, but it has no image")
        if box_batch_size < 1:
            raise ValueError(f"the box stream's batch size (DATALOADER.DATASET_BS[0]) must be >= 1, got {box_batch_size}")
        self._world = comm.get_world_size() if world_size is None else int(world_size)
        self._rank = comm.get_rank() if rank is None else int(rank)
        self._seed = int(seed)
        self._num_box, self._box_batch = int(num_box_records), int(box_batch_size)
        self._caption_sampler = caption_sampler
        self._skip_caption = bool(skip_caption)
        self._start_iter = 0

    def set_start_iteration(self, iteration: int) -> None:
        """Begin at `iteration` (a resumed run): every stream is advanced past the iterations already trained."""
        if iteration < 0:
            raise ValueError(f"start iteration must be >= 0, got {iteration}")
        self._start_iter = int(iteration)

    def stream_sequence(self, count: int) -> List[int]:
        """The stream (0 box, 1 caption) of the first `count` iterations."""
        return self._choices(count)

    def _choices(self, count: Optional[int] = None):
        rng = np.random.default_rng([self._seed, _CHOICE])
        draws = (int(rng.choice(len(STREAM_NAMES), p=self.probabilities)) for _ in itertools.count())
        return draws if count is None else [next(draws) for _ in range(count)]

    def __iter__(self) -> Iterator[List[StreamKey]]:
        box = _BoxStream(self._num_box, self._box_batch, self._seed, self._rank, self._world) if self._num_box else None
        captions = iter(self._caption_sampler) if self._caption_sampler is not None and not self._skip_caption else None
        for iteration, stream in enumerate(self._choices()):
            if stream == 0:
                if box is None:
                    raise ValueError("DATALOADER.DATASET_RATIO gives the box stream iterations, but it has no image")
                batch = [StreamKey(0, i) for i in box.next_batch()]
            elif captions is None:
                batch = [StreamKey(1, -1)]  # placeholder: no image read, the trainer steps on zero gradients
            else:
                batch = [StreamKey(1, index, concept) for index, concept in next(captions)]
            if iteration >= self._start_iter:
                yield batch


def batch_stream(batch: Sequence[dict]) -> str:
    """The stream name of a mapped training batch ("box" for batches of a one-stream loader)."""
    streams = {item.get("stream", BOX_STREAM) for item in batch}
    if len(streams) != 1:
        raise ValueError(f"a training batch mixes streams {sorted(streams)}; each iteration takes one stream")
    return streams.pop()


def is_placeholder(batch: Sequence[dict]) -> bool:
    """True for a caption iteration of a model that trains nothing on captions (no image was read)."""
    return len(batch) == 1 and batch[0].get("placeholder", False)

