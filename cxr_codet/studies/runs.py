"""Evaluated runs for study tables: a run's eval_results.json (`{dataset: {"bbox": {metric: value in percent}}}`,
see cxr_codet/evaluation/results_io.py), the dataset all runs share, a metric's value, and the summary metrics
all runs report. A metric without ground truth (null or NaN, or listed under classes/size_buckets_without_ground_truth)
reads as NaN; any other missing metric is an error naming the file and key."""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from ..evaluation.results_io import (
    CLASSES_WITHOUT_GT_KEY,
    EVAL_RESULTS_FILENAME as RESULTS_FILE,
    PER_CLASS_AP50_PREFIX,
    SIZE_BUCKETS_WITHOUT_GT_KEY,
    read_eval_results,
)

DEFAULT_METRICS = ("AP50", "APm", "APl")
# Box metrics that never become extra columns: COCO's other summary numbers, per-class APs, bookkeeping.
_NOT_EXTRA_COLUMNS = ("AP", "AP75", "APs", CLASSES_WITHOUT_GT_KEY, SIZE_BUCKETS_WITHOUT_GT_KEY)
# Per-class keys (COCO AP50 / AP, VOC "AP@<iou>-<class>", "FROC-CPM-<class>") and the FROC operating points
# ("FROC-sens@<rate>[-<class>]", summarised by the FROC-CPM column); a study lists them under `metrics` if wanted.
_PER_CLASS_PREFIXES = (PER_CLASS_AP50_PREFIX, "AP-", "AP@", "FROC-CPM-", "FROC-sens@")


@dataclass(frozen=True)
class Run:
    """One evaluated run: its row label, the eval_results.json it came from and that file's content."""

    label: str
    results_file: Path
    results: dict


def parse_run_spec(spec: str) -> Tuple[str, Path]:
    """Split a `label=path` command-line value into (label, path)."""
    label, sep, path = spec.partition("=")
    if not sep or not label.strip() or not path.strip():
        raise ValueError(
            f"--run {spec!r} must be 'label=path', path being a run's OUTPUT_DIR or its {RESULTS_FILE}"
        )
    return label.strip(), Path(path.strip())


def load_run(label: str, path: Union[str, Path]) -> Run:
    """Read a run's results from its OUTPUT_DIR, or directly from a `.json` file."""
    path = Path(path)
    results_file = path if path.suffix == ".json" else path / RESULTS_FILE
    if not results_file.is_file():
        raise FileNotFoundError(
            f"run {label!r}: {results_file} does not exist (expected the {RESULTS_FILE} that evaluating "
            "the run writes into its OUTPUT_DIR)"
        )
    try:
        results = read_eval_results(results_file)
    except ValueError as error:
        raise ValueError(f"run {label!r}: {error}") from None
    if not results:
        raise ValueError(f"run {label!r}: {results_file} holds no results")
    return Run(label, results_file, results)


def _without_ground_truth(metrics: dict, metric: str) -> bool:
    """Whether results_io lists `metric` as a class or size bucket that the split has no boxes for."""
    if metric.startswith(PER_CLASS_AP50_PREFIX):
        return metric[len(PER_CLASS_AP50_PREFIX):] in metrics.get(CLASSES_WITHOUT_GT_KEY, [])
    return metric in metrics.get(SIZE_BUCKETS_WITHOUT_GT_KEY, [])


def choose_dataset(runs: Sequence[Run], dataset: Optional[str] = None) -> str:
    """`dataset` if every run has it, else (when None) the only dataset that all runs share."""
    if dataset is not None:
        for run in runs:
            if dataset not in run.results:
                raise ValueError(
                    f"{run.results_file} (run {run.label!r}) has no dataset {dataset!r}; it has "
                    f"{sorted(run.results)}"
                )
        return dataset
    shared = [name for name in runs[0].results if all(name in run.results for run in runs[1:])]
    if len(shared) == 1:
        return shared[0]
    available = {run.label: sorted(run.results) for run in runs}
    reason = f"the runs share {len(shared)} datasets {shared}" if shared else "no dataset is in every run"
    raise ValueError(f"choose one with --dataset: {reason}; datasets per run: {available}")


def metric_value(run: Run, dataset: str, task: str, metric: str) -> float:
    """results[dataset][task][metric] of `run` as a float (NaN: no ground truth); absent: an error naming
    the file and key."""
    metrics = run.results.get(dataset, {}).get(task)
    if metrics is None:
        raise ValueError(f"{run.results_file} (run {run.label!r}) has no {task!r} results for {dataset!r}")
    if metric not in metrics:
        if _without_ground_truth(metrics, metric):
            return math.nan
        raise ValueError(
            f"{run.results_file} (run {run.label!r}) has no metric {dataset}/{task}/{metric!r}; it has "
            f"{sorted(metrics)}"
        )
    value = metrics[metric]
    return math.nan if value is None else float(value)


def available_metrics(runs: Sequence[Run], dataset: str, task: str = "bbox") -> List[str]:
    """DEFAULT_METRICS, then every other summary metric (e.g. mAP@0.4, FROC) that all `runs` report."""
    extra: List[str] = []
    for index, run in enumerate(runs):
        keys = [
            key for key in run.results.get(dataset, {}).get(task, {})
            if key not in DEFAULT_METRICS and key not in _NOT_EXTRA_COLUMNS
            and not key.startswith(_PER_CLASS_PREFIXES)
        ]
        extra = keys if index == 0 else [key for key in extra if key in keys]
    return list(DEFAULT_METRICS) + extra
