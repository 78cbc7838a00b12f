"""The input pipeline: which mapper reads a dataset, which sampler draws the training stream, and the loaders.

The mapper comes from the datasets' metadata `mapper` (MAPPERS; "cxr" when unset): "image_pair" for comparison
datasets (cxr_phantom_pairs, Chest ImaGenome), whose records name two images, "cxr" (`CXRDatasetMapper`) for the
rest, in training and at test alike. `build_cxr_train_loader` checks every image once (image_check.py), applies
the weak-label split (DATASETS.TRAIN_BOX_FRACTION, box_supervision.py), then picks the loader by
cfg.DATALOADER.SAMPLER_TRAIN from TRAIN_LOADER_BUILDERS: detectron2's three training samplers, and
"ConceptGroupSampler" (CXR-CoDet), whose per-process batches are whole concept groups whose dicts carry
"concept_id" (concept_groups.py, samplers.py). The test loader reuses its images' start-up check.
"""
import logging
from typing import Callable, Dict, Sequence, Tuple

import torch.utils.data as torchdata
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
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

from ..config import run_seed
from .box_supervision import apply_box_fraction
from .concept_groups import image_labels
from .image_check import Resize, check_images
from .image_pairs import ImagePairMapper
from .mapper import CXRDatasetMapper
from .samplers import ConceptGroupSampler, concept_group_sampler_config
from .streams import build_two_stream_loader

logger = logging.getLogger(__name__)

# A dataset's metadata `mapper` -> the mapper class, built as `mapper_class(cfg, is_train)`.
MAPPERS: Dict[str, Callable] = {"cxr": CXRDatasetMapper, "image_pair": ImagePairMapper}
DEFAULT_MAPPER = "cxr"

# cfg.DATALOADER.SAMPLER_TRAIN -> function(cfg, dataset_dicts, mapper, train_caption_stream) returning the loader.
TRAIN_LOADER_BUILDERS: Dict[str, Callable] = {}

# Image checks this process made: (dataset names, file names, SKIP_BAD_IMAGES) -> file names of the images skipped.
_IMAGE_CHECKS: Dict[tuple, frozenset] = {}


def build_mapper(cfg, dataset_names: Sequence[str], is_train: bool):
    """The mapper the datasets' metadata `mapper` names (they must agree), built from cfg."""
    kinds = {name: MetadataCatalog.get(name).get("mapper", DEFAULT_MAPPER) for name in dataset_names}
    if len(set(kinds.values())) > 1:
        raise ValueError(f"datasets {list(dataset_names)} need different mappers {kinds}: train or test them apart")
    kind = next(iter(kinds.values()), DEFAULT_MAPPER)
    if kind not in MAPPERS:
        raise ValueError(f"dataset {next(iter(kinds))!r} has metadata mapper {kind!r}; known: {sorted(MAPPERS)}")
    return MAPPERS[kind](cfg, is_train=is_train)


def register_train_loader(sampler_name: str):
    """Decorator: make a loader builder selectable as DATALOADER.SAMPLER_TRAIN = `sampler_name`."""

    def decorator(builder):
        TRAIN_LOADER_BUILDERS[sampler_name] = builder
        return builder

    return decorator


def _standard_loader(cfg, dataset_dicts, mapper, sampler, aspect_ratio_grouping=None):
    """detectron2's training loader over `sampler` (aspect-ratio grouping as configured unless given)."""
    if aspect_ratio_grouping is None:
        aspect_ratio_grouping = cfg.DATALOADER.ASPECT_RATIO_GROUPING
    return build_detection_train_loader(
        dataset=dataset_dicts,
        mapper=mapper,
        sampler=sampler,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


@register_train_loader("TrainingSampler")
def _training_sampler_loader(cfg, dataset_dicts, mapper, train_caption_stream=False):
    sampler = TrainingSampler(len(dataset_dicts), seed=run_seed(cfg))
    return _standard_loader(cfg, dataset_dicts, mapper, sampler)


@register_train_loader("PairTrainingSampler")
def _deprecated_pair_training_loader(cfg, dataset_dicts, mapper, train_caption_stream=False):
    """The deprecated name of the image-pair loader: TrainingSampler without aspect-ratio grouping (the pair
    mapper now comes from the datasets' metadata)."""
    logger.warning("DATALOADER.SAMPLER_TRAIN 'PairTrainingSampler' is deprecated: use 'TrainingSampler' with "
                   "DATALOADER.ASPECT_RATIO_GROUPING False (the image-pair mapper comes from the datasets' metadata)")
    sampler = TrainingSampler(len(dataset_dicts), seed=run_seed(cfg))
    return _standard_loader(cfg, dataset_dicts, mapper, sampler, aspect_ratio_grouping=False)


@register_train_loader("RepeatFactorTrainingSampler")
def _repeat_factor_loader(cfg, dataset_dicts, mapper, train_caption_stream=False):
    repeat_factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
        dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD
    )
    sampler = RepeatFactorTrainingSampler(repeat_factors, seed=run_seed(cfg))
    return _standard_loader(cfg, dataset_dicts, mapper, sampler)


@register_train_loader("RandomSubsetTrainingSampler")
def _random_subset_loader(cfg, dataset_dicts, mapper, train_caption_stream=False):
    seed = run_seed(cfg)
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
        labels = image_labels(record)
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
def _concept_group_loader(cfg, dataset_dicts, mapper, train_caption_stream=False):
    sampler = ConceptGroupSampler(dataset_dicts, **concept_group_sampler_config(cfg), seed=run_seed(cfg))
    return torchdata.DataLoader(
        ConceptTaggedDataset(dataset_dicts, mapper),
        batch_sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_reset_seed,
    )


@register_train_loader("TwoStreamSampler")
def _two_stream_loader(cfg, dataset_dicts, mapper, train_caption_stream=False):
    return build_two_stream_loader(cfg, dataset_dicts, lambda stream_cfg: build_mapper(stream_cfg, cfg.DATASETS.TRAIN,
                                                                                       is_train=True),
                                   train_caption_stream)


def build_cxr_train_loader(cfg, mapper=None, train_caption_stream: bool = False):
    """The infinite training loader for `cfg.DATASETS.TRAIN`: per-process batches as lists of mapped dicts.

    `mapper` defaults to the one the datasets' metadata names (`build_mapper`); the sampler is
    cfg.DATALOADER.SAMPLER_TRAIN, one of TRAIN_LOADER_BUILDERS. `train_caption_stream`: whether the model trains on
    the caption stream of "TwoStreamSampler" (else its caption iterations read no image, see streams.py).
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
    dataset_dicts = _checked(cfg, cfg.DATASETS.TRAIN, dataset_dicts, f"training set ({', '.join(cfg.DATASETS.TRAIN)})",
                             is_train=True)
    dataset_dicts = apply_box_fraction(cfg, dataset_dicts)
    if mapper is None:
        mapper = build_mapper(cfg, cfg.DATASETS.TRAIN, is_train=True)
    logger.info("Using training sampler %s", sampler_name)
    return TRAIN_LOADER_BUILDERS[sampler_name](cfg, dataset_dicts, mapper, train_caption_stream)


def build_cxr_test_loader(cfg, dataset_name):
    """The inference loader (batch 1) for one test dataset with the mapper its metadata names, in test mode; its
    images are checked first (once per process, see `check_test_images`)."""
    proposal_files = None
    if cfg.MODEL.LOAD_PROPOSALS:
        proposal_files = [cfg.DATASETS.PROPOSAL_FILES_TEST[list(cfg.DATASETS.TEST).index(dataset_name)]]
    dataset_dicts = get_detection_dataset_dicts([dataset_name], filter_empty=False, proposal_files=proposal_files)
    return build_detection_test_loader(
        dataset=_checked(cfg, [dataset_name], dataset_dicts, f"test set {dataset_name}"),
        mapper=build_mapper(cfg, [dataset_name], is_train=False),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def check_test_images(cfg) -> None:
    """Check the images of every DATASETS.TEST dataset now (e.g. before training, whose evaluation builds the test
    loaders at the end, then without checking them again); refuses bad images unless cfg.DATALOADER.SKIP_BAD_IMAGES."""
    for name in cfg.DATASETS.TEST:
        _checked(cfg, [name], DatasetCatalog.get(name), f"test set {name}")


def _checked(cfg, names: Sequence[str], dataset_dicts, what: str, is_train: bool = False):
    """`dataset_dicts` of the datasets `names` whose images pass the start-up check (cfg.DATALOADER.SKIP_BAD_IMAGES:
    skip, else refuse), including the mapper's resize: the smallest INPUT.MIN_SIZE_TRAIN (or MIN_SIZE_TEST) within
    its MAX_SIZE. A set this process checked already is not checked again, only its skipped images left out."""
    if is_train:
        resize = Resize(min(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN,
                        "INPUT.MIN_SIZE_TRAIN, INPUT.MAX_SIZE_TRAIN")
    else:
        resize = Resize(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST")
    skip_bad = cfg.DATALOADER.SKIP_BAD_IMAGES
    key = (tuple(names), hash(tuple(record.get("file_name") for record in dataset_dicts)), skip_bad, resize, is_train)
    if key in _IMAGE_CHECKS:
        return [record for record in dataset_dicts if record.get("file_name") not in _IMAGE_CHECKS[key]]
    kept = check_images(dataset_dicts, what, skip_bad=skip_bad, cache_file=cfg.DATALOADER.IMAGE_CHECK_CACHE,
                        resize=resize)
    kept_files = {record.get("file_name") for record in kept}
    _IMAGE_CHECKS[key] = frozenset(record.get("file_name") for record in dataset_dicts
                                   if record.get("file_name") not in kept_files)
    return kept
