"""Read and write OUTPUT_DIR/eval_results.json: every dataset's metrics by task, merged across runs.

Layout: `{dataset_name: {task: {metric: value}}}` with metrics in percent, e.g.
`{"vindr_cxr_test": {"bbox": {"AP50": 31.2, "AP50-Nodule/Mass": 18.4, ...}, "localization": {...}}}`.
A "bbox" entry also lists `classes_without_ground_truth` and `size_buckets_without_ground_truth`:
classes and size buckets of the split that have no ground-truth box, so no AP (neither 0 nor NaN).
"""
import json
import math
import os
from numbers import Integral, Real

from detectron2.data import MetadataCatalog
from detectron2.utils import comm

EVAL_RESULTS_FILENAME = "eval_results.json"
CLASSES_WITHOUT_GT_KEY = "classes_without_ground_truth"
SIZE_BUCKETS_WITHOUT_GT_KEY = "size_buckets_without_ground_truth"
SIZE_BUCKET_METRICS = ("APs", "APm", "APl")
PER_CLASS_AP50_PREFIX = "AP50-"
NO_GROUND_TRUTH = "missing (no ground truth)"  # how logs print a metric the split has no ground truth for
_LIST_KEYS = (CLASSES_WITHOUT_GT_KEY, SIZE_BUCKETS_WITHOUT_GT_KEY)


def with_missing_entries(bbox_results, class_names):
    """A copy of box metrics listing the classes (of `class_names`) and size buckets with no AP entry,
    which CXRCOCOEvaluator omits because the split has no ground truth for them."""
    annotated = dict(bbox_results)
    annotated[CLASSES_WITHOUT_GT_KEY] = [
        name for name in class_names if PER_CLASS_AP50_PREFIX + name not in bbox_results
    ]
    annotated[SIZE_BUCKETS_WITHOUT_GT_KEY] = [
        bucket for bucket in SIZE_BUCKET_METRICS if bucket not in bbox_results
    ]
    return annotated


def write_eval_results(results, output_dir):
    """Merge `{dataset_name: {task: {metric: value}}}` into `output_dir`/eval_results.json; return its path.

    A task entry replaces that dataset's earlier entry for the same task; other tasks and datasets in the
    file are kept. Box results of CXRCOCOEvaluator (they carry per-class "AP50-<class>" keys) get the
    lists of classes and size buckets without ground truth, from the dataset's `thing_classes`. Only the
    main process writes; non-finite values are written as null so the file stays strict JSON.
    """
    _check_results(results, "results")
    path = os.path.join(output_dir, EVAL_RESULTS_FILENAME)
    if not comm.is_main_process():
        return path
    merged = read_eval_results(path) if os.path.exists(path) else {}
    for dataset_name, tasks in results.items():
        entry = merged.setdefault(dataset_name, {})
        for task, metrics in tasks.items():
            entry[task] = _annotated(dataset_name, task, metrics)
    os.makedirs(output_dir, exist_ok=True)
    tmp_path = path + ".tmp"
    with open(tmp_path, "w") as f:
        json.dump(_finite_or_null(merged), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp_path, path)
    return path


def read_eval_results(path):
    """Load an eval_results.json written by `write_eval_results`, checking its layout."""
    try:
        with open(path) as f:
            results = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such evaluation results file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    _check_results(results, path)
    return results


def _annotated(dataset_name, task, metrics):
    """`metrics` with the without-ground-truth lists added when they are CXRCOCOEvaluator box results."""
    metrics = dict(metrics)
    is_cxr_bbox = task == "bbox" and any(k.startswith(PER_CLASS_AP50_PREFIX) for k in metrics)
    if not is_cxr_bbox or dataset_name not in MetadataCatalog.list():
        return metrics
    class_names = MetadataCatalog.get(dataset_name).get("thing_classes")
    if not class_names:
        return metrics
    return with_missing_entries(metrics, class_names)


def _check_results(results, where):
    """Raise a ValueError naming the dataset, task or metric that breaks the layout."""
    if not isinstance(results, dict):
        raise ValueError(f"{where}: expected {{dataset_name: {{task: {{metric: value}}}}}}, got "
                         f"{type(results).__name__}")
    for dataset_name, tasks in results.items():
        if not isinstance(tasks, dict):
            raise ValueError(f"{where}: results of dataset '{dataset_name}' must be a dict of tasks, "
                             f"got {type(tasks).__name__}")
        for task, metrics in tasks.items():
            if not isinstance(metrics, dict):
                raise ValueError(f"{where}: task '{task}' of dataset '{dataset_name}' must be a dict "
                                 f"of metrics, got {type(metrics).__name__}")
            for metric, value in metrics.items():
                if not _valid_value(metric, value):
                    raise ValueError(
                        f"{where}: metric '{metric}' of task '{task}' of dataset '{dataset_name}' "
                        f"must be a number (or a list of names for {', '.join(_LIST_KEYS)}), "
                        f"got {value!r}"
                    )


def _valid_value(metric, value):
    if metric in _LIST_KEYS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value is None or (isinstance(value, Real) and not isinstance(value, bool))


def _finite_or_null(results):
    """`results` with plain Python numbers (NumPy scalars converted) and null for NaN or infinity."""
    return {
        dataset_name: {
            task: {metric: _json_value(v) for metric, v in metrics.items()}
            for task, metrics in tasks.items()
        }
        for dataset_name, tasks in results.items()
    }


def _json_value(value):
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value) if math.isfinite(value) else None
    return value
