"""Train and test data loaders: detectron2's loaders with the CXR mapper, and the concept-group loader.

`build_cxr_train_loader` checks every image (image_check.py), applies the weak-label split
(DATASETS.TRAIN_BOX_FRACTION, box_supervision.py), then picks the loader by cfg.DATALOADER.SAMPLER_TRAIN from
TRAIN_LOADER_BUILDERS: detectron2's three training samplers, and "ConceptGroupSampler" (CXR-CoDet), whose
per-process batches are whole concept groups whose dicts carry "concept_id" (see samplers.py). The test
loader checks its images too.
"""
import logging
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch.utils.data as torchdata
from detectron2.data import (
    DatasetCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import trivial_batch_collator, worker_init_reset_seed
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import (
    RandomSubsetTrainingSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)

from .image_check import Resize, check_images
from .box_supervision import apply_box_fraction
from .mapper import CXRDatasetMapper
from .samplers import ConceptGroupSampler, image_concepts

logger = logging.getLogger(__name__)

# cfg.DATALOADER.SAMPLER_TRAIN -> function(cfg, dataset_dicts, mapper) returning the training loader.
TRAIN_LOADER_BUILDERS: Dict[str, Callable] = {}


def register_train_loader(sampler_name: str):
    """Decorator: make a loader builder selectable as DATALOADER.SAMPLER_TRAIN = `sampler_name`."""

    def decorator(builder):
        TRAIN_LOADER_BUILDERS[sampler_name] = builder
        return builder

    return decorator


def _sampler_seed(cfg) -> Optional[int]:
    """cfg.SEED when set (>= 0), so runs repeat; else None: the samplers draw one shared random seed."""
    return cfg.SEED if cfg.SEED >= 0 else None


def _standard_loader(cfg, dataset_dicts, mapper, sampler):
    """detectron2's training loader over `sampler` (aspect-ratio grouping as configured)."""
    return build_detection_train_loader(
        dataset=dataset_dicts,
        mapper=mapper,
        sampler=sampler,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


@register_train_loader("TrainingSampler")
def _training_sampler_loader(cfg, dataset_dicts, mapper):
    sampler = TrainingSampler(len(dataset_dicts), seed=_sampler_seed(cfg))
    return _standard_loader(cfg, dataset_dicts, mapper, sampler)


@register_train_loader("RepeatFactorTrainingSampler")
def _repeat_factor_loader(cfg, dataset_dicts, mapper):
    repeat_factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
        dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD
    )
    sampler = RepeatFactorTrainingSampler(repeat_factors, seed=_sampler_seed(cfg))
    return _standard_loader(cfg, dataset_dicts, mapper, sampler)


@register_train_loader("RandomSubsetTrainingSampler")
def _random_subset_loader(cfg, dataset_dicts, mapper):
    seed = _sampler_seed(cfg)
    sampler = RandomSubsetTrainingSampler(
        len(dataset_dicts), cfg.DATALOADER.RANDOM_SUBSET_RATIO, seed_shuffle=seed, seed_subset=seed
    )
    return _standard_loader(cfg, dataset_dicts, mapper, sampler)


class ConceptTaggedDataset(torchdata.Dataset):
    """Dataset indexed by (dataset index, concept_id): maps a fresh copy of the dict and tags the result.

    The output carries "concept_id" (-1 outside concept groups) and "image_labels" (kept by the mapper,
    or taken from the record's annotations when the dataset has none). Shared dicts are never mutated.
    """

    def __init__(self, dataset_dicts: Sequence[dict], mapper: Callable[[dict], dict]):
        self._records = DatasetFromList(list(dataset_dicts), copy=True, serialize=True)
        self._mapper = mapper

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, key: Tuple[int, int]) -> dict:
        index, concept_id = key
        record = self._records[index]  # a fresh copy: deserialised on every access
        labels = image_concepts(record)
        mapped = self._mapper(record)
        if mapped is None:
            raise RuntimeError(
                f"the mapper returned None for {record.get('file_name', index)!r}: the concept-group "
                "loader cannot replace an image without breaking its group"
            )
        mapped["concept_id"] = int(concept_id)
        mapped.setdefault("image_labels", labels)
        return mapped


@register_train_loader("ConceptGroupSampler")
def _concept_group_loader(cfg, dataset_dicts, mapper):
    sampler = ConceptGroupSampler(
        dataset_dicts,
        group_size=cfg.DATALOADER.CONCEPT_GROUP_SIZE,
        ims_per_batch=cfg.SOLVER.IMS_PER_BATCH,
        concept_sampling=cfg.DATALOADER.CONCEPT_SAMPLING,
        frequency_power=cfg.DATALOADER.CONCEPT_FREQUENCY_POWER,
        no_finding_per_batch=cfg.DATALOADER.NO_FINDING_PER_BATCH,
        box_images_per_batch=cfg.DATALOADER.BOX_IMAGES_PER_BATCH,
        seed=_sampler_seed(cfg),
    )
    return torchdata.DataLoader(
        ConceptTaggedDataset(dataset_dicts, mapper),
        batch_sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_reset_seed,
    )


def build_cxr_train_loader(cfg, mapper=None):
    """The infinite training loader for `cfg.DATASETS.TRAIN`: per-process batches as lists of mapped dicts.

    `mapper` defaults to `CXRDatasetMapper(cfg, is_train=True)`; the sampler is
    cfg.DATALOADER.SAMPLER_TRAIN, one of TRAIN_LOADER_BUILDERS.
    """
    sampler_name = cfg.DATALOADER.SAMPLER_TRAIN
    if sampler_name not in TRAIN_LOADER_BUILDERS:
        raise ValueError(
            f"DATALOADER.SAMPLER_TRAIN = {sampler_name!r} is unknown; choose one of "
            f"{sorted(TRAIN_LOADER_BUILDERS)}"
        )
    dataset_dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    dataset_dicts = _checked(cfg, dataset_dicts, f"training set ({', '.join(cfg.DATASETS.TRAIN)})", is_train=True)
    dataset_dicts = apply_box_fraction(cfg, dataset_dicts)
    if mapper is None:
        mapper = CXRDatasetMapper(cfg, is_train=True)
    logger.info("Using training sampler %s", sampler_name)
    return TRAIN_LOADER_BUILDERS[sampler_name](cfg, dataset_dicts, mapper)


def build_cxr_test_loader(cfg, dataset_name):
    """The inference loader (batch 1) for one test dataset with `CXRDatasetMapper` in test mode; its images are
    checked first (see `image_check`)."""
    proposal_files = None
    if cfg.MODEL.LOAD_PROPOSALS:
        proposal_files = [cfg.DATASETS.PROPOSAL_FILES_TEST[list(cfg.DATASETS.TEST).index(dataset_name)]]
    dataset_dicts = get_detection_dataset_dicts([dataset_name], filter_empty=False, proposal_files=proposal_files)
    return build_detection_test_loader(
        dataset=_checked(cfg, dataset_dicts, f"test set {dataset_name}"),
        mapper=CXRDatasetMapper(cfg, is_train=False),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def check_test_images(cfg) -> None:
    """Check the images of every DATASETS.TEST dataset now (e.g. before training, whose evaluation builds the test
    loaders at the end); refuses bad images unless cfg.DATALOADER.SKIP_BAD_IMAGES."""
    for name in cfg.DATASETS.TEST:
        _checked(cfg, DatasetCatalog.get(name), f"test set {name}")


def _checked(cfg, dataset_dicts, what: str, is_train: bool = False):
    """`dataset_dicts` whose images pass the start-up check (cfg.DATALOADER.SKIP_BAD_IMAGES: skip, else refuse),
    including the mapper's resize: the smallest INPUT.MIN_SIZE_TRAIN (or MIN_SIZE_TEST) within its MAX_SIZE."""
    if is_train:
        resize = Resize(min(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN,
                        "INPUT.MIN_SIZE_TRAIN, INPUT.MAX_SIZE_TRAIN")
    else:
        resize = Resize(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST")
    return check_images(
        dataset_dicts, what, skip_bad=cfg.DATALOADER.SKIP_BAD_IMAGES, cache_file=cfg.DATALOADER.IMAGE_CHECK_CACHE,
        resize=resize,
    )
