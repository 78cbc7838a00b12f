"""Detection and localization metrics, evaluators and plots."""
from . import classification_evaluation, localization_evaluation, progression_evaluation  # noqa: F401  (register)
from .build import EVALUATOR_REGISTRY, build_configured_evaluator, build_evaluator, configured_evaluator_types
from .coco_evaluation import CXRCOCOEvaluator
from .plots import per_class_ap50_rows, plot_per_class_ap50
from .results_io import (
    CLASSES_WITHOUT_GT_KEY,
    EVAL_RESULTS_FILENAME,
    SIZE_BUCKETS_WITHOUT_GT_KEY,
    read_eval_results,
    with_missing_entries,
    write_eval_results,
)
from .size_buckets import SIZE_BUCKETS

__all__ = [
    "CLASSES_WITHOUT_GT_KEY",
    "CXRCOCOEvaluator",
    "EVALUATOR_REGISTRY",
    "EVAL_RESULTS_FILENAME",
    "SIZE_BUCKETS",
    "SIZE_BUCKETS_WITHOUT_GT_KEY",
    "build_configured_evaluator",
    "build_evaluator",
    "configured_evaluator_types",
    "per_class_ap50_rows",
    "plot_per_class_ap50",
    "read_eval_results",
    "with_missing_entries",
    "write_eval_results",
]
