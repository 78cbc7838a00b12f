"""Concept-group batch sampler for CXR-CoDet: batches made of whole groups of G images sharing a finding.

CoDet's co-occurrence loss compares each image of a group (the query) with the other G-1 (its
supports), so every per-process batch must hold whole, consecutive groups. The sampler yields, per
process, lists of ``(dataset index, concept_id)`` pairs: ``groups_per_batch`` groups of G images that
all contain finding ``concept_id`` (a contiguous class id), followed by ``no_finding_per_batch``
"No finding" images (no boxes) tagged ``concept_id = -1`` that only feed the box-supervised loss, and
``box_images_per_batch`` box-annotated images with findings, also tagged -1 (box losses only): in the
weak-label regime (box_supervision.py) they keep box supervision at a fixed share of every batch, as
CoDet's separate box batches do, however few images keep boxes.

Choices (see also DATALOADER.* in cxr_codet/config.py):
- A group's finding is drawn "uniform"ly over the findings present in the data (default, so rare
  findings are seen as often as common ones) or by "frequency": P(c) proportional to
  (number of images containing c) ** frequency_power.
- A group starts from an image drawn uniformly among those containing the finding (so every such
  image can be drawn); the other G-1 come from the same aspect-ratio bucket (landscape w > h, or
  portrait w <= h, as detectron2's AspectRatioGroupedDataset splits them) when that bucket holds at
  least G images of the finding, otherwise from all of them. The G images are distinct whenever the
  finding has at least G images, and repeat only when it has fewer (warned once).
- No-finding images are counted inside SOLVER.IMS_PER_BATCH, so IMS_PER_BATCH keeps detectron2's
  meaning (images per iteration over all processes): per process,
  IMS_PER_BATCH / world_size - no_finding_per_batch - box_images_per_batch must be a positive multiple of G.
- Infinite and seeded: one global stream of per-process batches is drawn from the seed, and process
  ``rank`` takes batches ``rank, rank + world_size, ...`` (detectron2's TrainingSampler sharding),
  so processes get different whole groups and a (seed, rank) pair always gives the same stream.
"""
import itertools
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.utils import comm
from torch.utils.data.sampler import Sampler

from .box_supervision import is_box_supervised
from .concept_groups import NO_CONCEPT, groups_per_batch, image_labels

logger = logging.getLogger(__name__)

LANDSCAPE, PORTRAIT = 0, 1


def aspect_ratio_bucket(record: dict) -> int:
    """LANDSCAPE when width > height, else PORTRAIT (detectron2's AspectRatioGroupedDataset rule)."""
    try:
        width, height = record["width"], record["height"]
    except KeyError as missing:
        raise ValueError(
            f"dataset record {record.get('file_name', record.get('image_id', '?'))!r} has no "
            f"{missing} key; the concept-group sampler needs 'width' and 'height' for aspect-ratio buckets"
        ) from None
    return LANDSCAPE if width > height else PORTRAIT


def _uniform_weights(counts: np.ndarray, power: float) -> np.ndarray:
    return np.ones_like(counts, dtype=np.float64)


def _frequency_weights(counts: np.ndarray, power: float) -> np.ndarray:
    return counts.astype(np.float64) ** power


# How a group's finding is drawn: name -> weights over findings from their image counts and a power.
CONCEPT_WEIGHTINGS: Dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "uniform": _uniform_weights,
    "frequency": _frequency_weights,
}


def check_concept_sampling(concept_sampling: str) -> None:
    """A ValueError naming the key unless `concept_sampling` is a key of CONCEPT_WEIGHTINGS."""
    if concept_sampling not in CONCEPT_WEIGHTINGS:
        raise ValueError(
            f"DATALOADER.CONCEPT_SAMPLING = {concept_sampling!r} is unknown; choose one of "
            f"{sorted(CONCEPT_WEIGHTINGS)}"
        )


class _ConceptPool:
    """The images that contain one finding, split into aspect-ratio buckets, and how to draw G of them."""

    def __init__(self, indices: Sequence[int], buckets: np.ndarray, group_size: int):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.size = len(self.indices)
        self.group_size = group_size
        everyone = np.arange(self.size)
        own_bucket = buckets[self.indices]
        # For each image (by position): the positions it may be grouped with, and its own position there.
        self._partners = {}
        for bucket in (LANDSCAPE, PORTRAIT):
            members = everyone[own_bucket == bucket]
            pool = members if len(members) >= group_size else everyone
            for position in members:
                self._partners[int(position)] = (pool, int(np.searchsorted(pool, position)))

    def draw(self, rng: np.random.Generator) -> List[int]:
        """G dataset indices: a uniform first image, then G-1 others, from its bucket when possible."""
        first = int(rng.integers(self.size))
        if self.size < self.group_size:
            others = rng.integers(self.size, size=self.group_size - 1)
        else:
            pool, first_in_pool = self._partners[first]
            picks = rng.choice(len(pool) - 1, size=self.group_size - 1, replace=False)
            others = pool[picks + (picks >= first_in_pool)]  # skip the first image itself
        return [int(self.indices[first])] + [int(self.indices[p]) for p in others]


class ConceptGroupSampler(Sampler):
    """Infinite batch sampler: per-process batches of whole concept groups (+ optional No-finding images).

    Each item is a list of ``(dataset index, concept_id)`` of length IMS_PER_BATCH / world_size; use it
    as a DataLoader ``batch_sampler`` over a dataset indexed by such pairs (see ``build.py``).
    """

    def __init__(
        self,
        dataset_dicts: Sequence[dict],
        *,
        group_size: int,
        ims_per_batch: int,
        concept_sampling: str = "uniform",
        frequency_power: float = 0.5,
        no_finding_per_batch: int = 0,
        box_images_per_batch: int = 0,
        seed: Optional[int] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        """
        Args:
            dataset_dicts: detectron2 dicts with "width", "height", "image_labels" (or annotations).
            group_size: G, images per group (>= 2).
            ims_per_batch: images per iteration over all processes (SOLVER.IMS_PER_BATCH).
            concept_sampling: a key of CONCEPT_WEIGHTINGS ("uniform" or "frequency").
            frequency_power: exponent on image counts for "frequency".
            no_finding_per_batch: No-finding images at the end of each per-process batch.
            box_images_per_batch: box-supervised images with findings after them (drawn uniformly).
            seed: shared by all processes; None draws one shared seed (detectron2's convention).
            rank, world_size: this process and the number of processes; None reads detectron2's comm.
        """
        self._world_size = comm.get_world_size() if world_size is None else int(world_size)
        self._rank = comm.get_rank() if rank is None else int(rank)
        if not 0 <= self._rank < self._world_size:
            raise ValueError(f"rank {self._rank} is outside [0, world_size = {self._world_size})")
        self._group_size = int(group_size)
        self._num_groups = groups_per_batch(
            ims_per_batch, self._world_size, self._group_size, no_finding_per_batch, box_images_per_batch
        )
        self._no_finding_per_batch = int(no_finding_per_batch)
        self._box_images_per_batch = int(box_images_per_batch)
        check_concept_sampling(concept_sampling)
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._index_dataset(dataset_dicts)
        counts = np.array([self._pools[c].size for c in self.concepts], dtype=np.int64)
        weights = CONCEPT_WEIGHTINGS[concept_sampling](counts, float(frequency_power))
        self.concept_probs = weights / weights.sum()
        self._log_summary(concept_sampling, counts)

    def _index_dataset(self, dataset_dicts: Sequence[dict]) -> None:
        buckets = np.array([aspect_ratio_bucket(d) for d in dataset_dicts], dtype=np.int64)
        by_concept: Dict[int, List[int]] = {}
        no_finding: List[int] = []
        boxed: List[int] = []
        for index, record in enumerate(dataset_dicts):
            concepts = image_labels(record)
            if not concepts:
                no_finding.append(index)
            elif is_box_supervised(record):
                boxed.append(index)
            for concept in concepts:
                by_concept.setdefault(concept, []).append(index)
        if not by_concept:
            raise ValueError(
                f"none of the {len(dataset_dicts)} training images has a finding, so no concept group can "
                "be formed; use DATALOADER.SAMPLER_TRAIN 'TrainingSampler' for this data"
            )
        if self._no_finding_per_batch > 0 and not no_finding:
            raise ValueError(
                f"DATALOADER.NO_FINDING_PER_BATCH = {self._no_finding_per_batch} but the training data has "
                "no 'No finding' image (every image has a finding, or DATALOADER.FILTER_EMPTY_ANNOTATIONS "
                "removed them); set it to 0"
            )
        self.concepts = sorted(by_concept)
        self._pools = {c: _ConceptPool(by_concept[c], buckets, self._group_size) for c in self.concepts}
        if self._box_images_per_batch > 0 and not boxed:
            raise ValueError(
                f"DATALOADER.BOX_IMAGES_PER_BATCH = {self._box_images_per_batch} but no training image with a "
                "finding has boxes (DATASETS.TRAIN_BOX_FRACTION keeps none); set it to 0"
            )
        self._no_finding = np.asarray(no_finding, dtype=np.int64)
        self._boxed = np.asarray(boxed, dtype=np.int64)

    def _log_summary(self, concept_sampling: str, counts: np.ndarray) -> None:
        rare = {c: int(n) for c, n in zip(self.concepts, counts) if n < self._group_size}
        if rare:
            logger.warning(
                "%d finding(s) have fewer images than CONCEPT_GROUP_SIZE = %d, so their groups repeat "
                "images: {class id: images} = %s",
                len(rare), self._group_size, rare,
            )
        logger.info(
            "ConceptGroupSampler: %d findings (%s sampling), G = %d, %d groups + %d No-finding images per "
            "process batch + %d box images (of %d with findings and boxes), %d No-finding images available, "
            "rank %d of %d; {class id: images} = %s",
            len(self.concepts), concept_sampling, self._group_size, self._num_groups,
            self._no_finding_per_batch, self._box_images_per_batch, len(self._boxed), len(self._no_finding),
            self._rank, self._world_size,
            dict(zip(self.concepts, counts.tolist())),
        )

    @property
    def batch_size(self) -> int:
        """Images per per-process batch: groups * G + No-finding images + box images."""
        return self._num_groups * self._group_size + self._no_finding_per_batch + self._box_images_per_batch

    def _draw_batch(self, rng: np.random.Generator) -> List[Tuple[int, int]]:
        concepts = rng.choice(len(self.concepts), size=self._num_groups, p=self.concept_probs)
        batch = []
        for position in concepts:
            concept = self.concepts[position]
            batch.extend((index, concept) for index in self._pools[concept].draw(rng))
        if self._no_finding_per_batch:
            replace = len(self._no_finding) < self._no_finding_per_batch
            extra = rng.choice(self._no_finding, size=self._no_finding_per_batch, replace=replace)
            batch.extend((int(index), NO_CONCEPT) for index in extra)
        if self._box_images_per_batch:
            replace = len(self._boxed) < self._box_images_per_batch
            extra = rng.choice(self._boxed, size=self._box_images_per_batch, replace=replace)
            batch.extend((int(index), NO_CONCEPT) for index in extra)
        return batch

    def __iter__(self):
        rng = np.random.default_rng(self._seed)
        for step in itertools.count():
            batch = self._draw_batch(rng)
            if step % self._world_size == self._rank:
                yield batch


def concept_group_sampler_config(cfg) -> dict:
    """ConceptGroupSampler's batch layout and draw from cfg (DATALOADER.CONCEPT_*, NO_FINDING_PER_BATCH,
    BOX_IMAGES_PER_BATCH, SOLVER.IMS_PER_BATCH): the one place the data layer reads them (the loader and
    `check_concept_group_layout`); the loader adds the seed."""
    loader = cfg.DATALOADER
    return {
        "group_size": loader.CONCEPT_GROUP_SIZE,
        "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        "concept_sampling": loader.CONCEPT_SAMPLING,
        "frequency_power": loader.CONCEPT_FREQUENCY_POWER,
        "no_finding_per_batch": loader.NO_FINDING_PER_BATCH,
        "box_images_per_batch": loader.BOX_IMAGES_PER_BATCH,
    }


def check_concept_group_layout(cfg, world_size: int) -> int:
    """Config-time check of the concept-group batch layout for `world_size` processes, before any data is read;
    returns groups per process batch.

    Raises ValueError when G < 2 or IMS_PER_BATCH / world_size - NO_FINDING_PER_BATCH - BOX_IMAGES_PER_BATCH
    is not a positive multiple of G, or CONCEPT_SAMPLING is unknown.
    """
    settings = concept_group_sampler_config(cfg)
    check_concept_sampling(settings["concept_sampling"])
    return groups_per_batch(settings["ims_per_batch"], world_size, settings["group_size"],
                            settings["no_finding_per_batch"], settings["box_images_per_batch"])
