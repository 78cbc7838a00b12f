"""Which evaluator scores a test dataset: the registry of evaluator builders, the per-dataset choice of
TEST.EVALUATORS_BY_DATASET, and the dataset's metadata `evaluator_type` otherwise; TEST.CLASS_MAPPING puts a
renaming of the model's classes in front of it."""
import os
from typing import List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils.registry import Registry

from ..modeling.vocabulary import training_class_names
from .class_mapped import ClassMappedEvaluator

EVALUATOR_REGISTRY = Registry("CXR_EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """
Evaluator builders keyed by a dataset's metadata `evaluator_type`. Register a function named after
the type, taking (cfg, dataset_name, output_folder) and returning a detectron2 DatasetEvaluator:

    @EVALUATOR_REGISTRY.register()
    def localization(cfg, dataset_name, output_folder): ...
"""


def configured_evaluator_types(cfg, dataset_name: str) -> Optional[List[str]]:
    """Evaluator types listed for `dataset_name` in TEST.EVALUATORS_BY_DATASET ([dataset, type, ...]
    entries), or None when it is not listed (then its metadata evaluator_type applies)."""
    for entry in cfg.TEST.EVALUATORS_BY_DATASET:
        if len(entry) < 2 or not all(isinstance(item, str) and item for item in entry):
            raise ValueError(f"TEST.EVALUATORS_BY_DATASET entry {list(entry)!r} must be [dataset_name, "
                             "evaluator_type, ...] (non-empty strings)")
        if entry[0] != dataset_name:
            continue
        unknown = [name for name in entry[1:] if name not in EVALUATOR_REGISTRY]
        if unknown:
            registered = sorted(name for name, _ in EVALUATOR_REGISTRY)
            raise ValueError(f"TEST.EVALUATORS_BY_DATASET: unknown evaluator type(s) {unknown} for "
                             f"{dataset_name!r}; registered: {registered}")
        return list(entry[1:])
    return None


def build_configured_evaluator(cfg, dataset_name: str, output_folder: str) -> Optional[DatasetEvaluator]:
    """The evaluators TEST.EVALUATORS_BY_DATASET lists for `dataset_name` (combined with DatasetEvaluators
    when there are several), or None when it lists none for it; `build_evaluator` asks this first."""
    types = configured_evaluator_types(cfg, dataset_name)
    if types is None:
        return None
    evaluators = [EVALUATOR_REGISTRY.get(name)(cfg, dataset_name, output_folder) for name in types]
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def build_evaluator(cfg, dataset_name, output_folder=None):
    """The evaluator for `dataset_name`: those TEST.EVALUATORS_BY_DATASET lists for it, else the one its
    metadata `evaluator_type` names in EVALUATOR_REGISTRY; `output_folder` defaults to OUTPUT_DIR/inference
    as in detectron2's tools."""
    if dataset_name not in DatasetCatalog.list():
        raise ValueError(f"Cannot build an evaluator for '{dataset_name}': no such registered dataset")
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    configured = build_configured_evaluator(cfg, dataset_name, output_folder)
    if configured is not None:
        return _with_class_mapping(cfg, dataset_name, configured)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    registered = sorted(name for name, _ in EVALUATOR_REGISTRY)
    if evaluator_type is None:
        raise ValueError(f"Dataset '{dataset_name}' has no evaluator_type in its metadata; set one of "
                         f"{registered} when registering it.")
    if evaluator_type not in EVALUATOR_REGISTRY:
        raise ValueError(
            f"Dataset '{dataset_name}' has evaluator_type '{evaluator_type}', for which no evaluator is "
            f"registered (registered: {registered}). Register a function named '{evaluator_type}' "
            "taking (cfg, dataset_name, output_folder) with @EVALUATOR_REGISTRY.register()."
        )
    return _with_class_mapping(cfg, dataset_name, EVALUATOR_REGISTRY.get(evaluator_type)(cfg, dataset_name, output_folder))


def _with_class_mapping(cfg, dataset_name: str, evaluator: DatasetEvaluator) -> DatasetEvaluator:
    """`evaluator` as is, or behind TEST.CLASS_MAPPING's renaming of the model's training classes."""
    if not cfg.TEST.CLASS_MAPPING:
        return evaluator
    dataset_classes = MetadataCatalog.get(dataset_name).get("thing_classes", [])
    return ClassMappedEvaluator(evaluator, dataset_classes, training_class_names(cfg), cfg.TEST.CLASS_MAPPING)
