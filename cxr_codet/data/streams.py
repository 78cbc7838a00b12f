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
import logging
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch.utils.data as torchdata
from detectron2.data.build import trivial_batch_collator, worker_init_reset_seed
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm
from torch.utils.data.sampler import Sampler

from ..config import run_seed
from .box_supervision import BOX_SUPERVISED, is_box_supervised
from .concept_groups import NO_CONCEPT, image_labels
from .samplers import ConceptGroupSampler, concept_group_sampler_config

logger = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------- the loader

STREAM_KEY = "stream"  # a mapped training input's stream name
PLACEHOLDER_KEY = "placeholder"  # True on the one dict of a caption iteration whose images are not read


def split_streams(records: Sequence[dict], box_fraction: float) -> Tuple[List[dict], List[dict]]:
    """(box-stream records, caption-stream records) of the training records.

    The box stream holds every box-supervised image (No-finding images too: their empty annotation is complete).
    The caption stream holds images with findings as image-level images (no boxes, "box_supervised" False): under
    DATASETS.TRAIN_BOX_FRACTION < 1 the images that lost their boxes, else every image with findings (the paper's
    setting: each training image in both streams).
    """
    box = [r for r in records if is_box_supervised(r)]
    if box_fraction < 1.0:
        caption = [r for r in records if not is_box_supervised(r) and image_labels(r)]
    else:
        caption = [r for r in records if image_labels(r)]
    caption = [dict(r, annotations=[], image_labels=image_labels(r), **{BOX_SUPERVISED: False}) for r in caption]
    return box, caption


class TwoStreamDataset(torchdata.Dataset):
    """Indexed by StreamKey: the record of that stream through that stream's mapper, tagged with "stream" (and on
    caption images "concept_id" and "image_labels"); StreamKey(1, -1) gives the placeholder of a skipped caption
    iteration without reading an image."""

    def __init__(self, box_records, caption_records, box_mapper: Callable, caption_mapper: Callable):
        self._records = [DatasetFromList(list(box_records), copy=True, serialize=True),
                         DatasetFromList(list(caption_records), copy=True, serialize=True)]
        self._mappers = [box_mapper, caption_mapper]

    def __len__(self) -> int:
        return sum(len(r) for r in self._records)

    def __getitem__(self, key: StreamKey) -> dict:
        if key.stream == 1 and key.index < 0:
            return {STREAM_KEY: CAPTION_STREAM, PLACEHOLDER_KEY: True}
        record = self._records[key.stream][key.index]
        mapped = self._mappers[key.stream](record)
        if mapped is None:
            raise RuntimeError(f"the mapper returned None for {record.get('file_name', key.index)!r}: the two-stream "
                               "loader cannot replace an image without breaking its batch")
        mapped[STREAM_KEY] = STREAM_NAMES[key.stream]
        if key.stream == 1:
            mapped["concept_id"] = int(key.concept_id)
            mapped["image_labels"] = image_labels(record)
            mapped[BOX_SUPERVISED] = False
        return mapped


def stream_input_sizes(cfg, stream: int) -> Tuple[tuple, int]:
    """(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN) of a stream: DATALOADER.DATASET_MIN_SIZES / MAX_SIZES, else INPUT's."""
    min_sizes = list(cfg.DATALOADER.DATASET_MIN_SIZES[stream]) or list(cfg.INPUT.MIN_SIZE_TRAIN)
    max_size = cfg.DATALOADER.DATASET_MAX_SIZES[stream] or cfg.INPUT.MAX_SIZE_TRAIN
    return tuple(int(s) for s in min_sizes), int(max_size)


def check_two_stream_config(cfg, world_size: int) -> None:
    """Config-time check of DATALOADER.DATASET_RATIO / DATASET_BS / DATASET_MIN_SIZES / DATASET_MAX_SIZES for
    `world_size` processes, before any data is read; the caption batch must hold whole concept groups."""
    loader = cfg.DATALOADER
    stream_probabilities(loader.DATASET_RATIO)
    for key in ("DATASET_BS", "DATASET_MIN_SIZES", "DATASET_MAX_SIZES"):
        if len(loader[key]) != len(STREAM_NAMES):
            raise ValueError(f"DATALOADER.{key} must have one entry per stream (box, caption), got {list(loader[key])}")
    if any(int(b) < 1 for b in loader.DATASET_BS):
        raise ValueError(f"DATALOADER.DATASET_BS must be per-process batch sizes >= 1, got {list(loader.DATASET_BS)}")
    if any(int(m) < 0 for m in loader.DATASET_MAX_SIZES) or any(int(s) < 1 for sizes in loader.DATASET_MIN_SIZES
                                                                for s in sizes):
        raise ValueError(f"DATALOADER.DATASET_MIN_SIZES {list(loader.DATASET_MIN_SIZES)} and DATASET_MAX_SIZES "
                         f"{list(loader.DATASET_MAX_SIZES)} must be positive sizes ([] or 0: INPUT's)")
    group = int(loader.CONCEPT_GROUP_SIZE)
    if loader.DATASET_RATIO[1] > 0 and int(loader.DATASET_BS[1]) % group:
        raise ValueError(f"DATALOADER.DATASET_BS[1] = {loader.DATASET_BS[1]} caption images per process is not a "
                         f"multiple of DATALOADER.CONCEPT_GROUP_SIZE = {group}: a caption batch holds whole groups")


def build_two_stream_loader(cfg, dataset_dicts: Sequence[dict], build_mapper: Callable, train_caption_stream: bool):
    """The two-stream training loader over `dataset_dicts` (after the weak-label split): box and caption streams
    (`split_streams`), each mapped at its own input size (`build_mapper(stream_cfg)`); `train_caption_stream`
    False (a model with no image-level loss) makes caption iterations placeholders that read no image."""
    world_size = comm.get_world_size()
    check_two_stream_config(cfg, world_size)
    box_records, caption_records = split_streams(dataset_dicts, cfg.DATASETS.TRAIN_BOX_FRACTION)
    box_bs, caption_bs = (int(b) for b in cfg.DATALOADER.DATASET_BS)
    skip_caption = not train_caption_stream
    caption_sampler = None
    if cfg.DATALOADER.DATASET_RATIO[1] > 0 and not skip_caption:
        if not caption_records:
            raise ValueError("DATALOADER.DATASET_RATIO gives the caption stream iterations, but no training image "
                             "has image-level findings for it")
        settings = dict(concept_group_sampler_config(cfg), ims_per_batch=caption_bs * world_size,
                        no_finding_per_batch=0, box_images_per_batch=0)
        caption_sampler = ConceptGroupSampler(caption_records, **settings, seed=run_seed(cfg))
    sampler = TwoStreamBatchSampler(len(box_records), caption_sampler, ratio=cfg.DATALOADER.DATASET_RATIO,
                                    box_batch_size=box_bs, seed=run_seed(cfg), skip_caption=skip_caption)
    mappers = []
    for stream in range(len(STREAM_NAMES)):
        stream_cfg = cfg.clone()
        stream_cfg.defrost()
        stream_cfg.INPUT.MIN_SIZE_TRAIN, stream_cfg.INPUT.MAX_SIZE_TRAIN = stream_input_sizes(cfg, stream)
        mappers.append(build_mapper(stream_cfg))
    logger.info(
        "Two-stream loader: box stream %d images x %d per batch at %s px, caption stream %d images x %d per batch at "
        "%s px%s, ratio %s (SOLVER.IMS_PER_BATCH is not used)", len(box_records), box_bs, stream_input_sizes(cfg, 0),
        len(caption_records), caption_bs, stream_input_sizes(cfg, 1),
        " (placeholders: the model trains nothing on captions, so its caption iterations are zero-gradient steps)"
        if skip_caption else "", list(cfg.DATALOADER.DATASET_RATIO))
    return torchdata.DataLoader(
        TwoStreamDataset(box_records, caption_records, *mappers),
        batch_sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_reset_seed,
    )


def batch_stream(batch: Sequence[dict]) -> str:
    """The stream name of a mapped training batch ("box" for batches of a one-stream loader)."""
    streams = {item.get(STREAM_KEY, BOX_STREAM) for item in batch}
    if len(streams) != 1:
        raise ValueError(f"a training batch mixes streams {sorted(streams)}; each iteration takes one stream")
    return streams.pop()


def is_placeholder(batch: Sequence[dict]) -> bool:
    """True for a caption iteration of a model that trains nothing on captions (no image was read)."""
    return len(batch) == 1 and bool(batch[0].get(PLACEHOLDER_KEY, False))
