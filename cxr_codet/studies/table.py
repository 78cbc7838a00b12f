"""The numbers of a study table, JSON-ready: per row (one setting: a run, or the runs of its seeds) and metric the
values, mean and 95% t-interval, the delta of means to the row's reference with Welch's interval and, for rows
with seeds, the paired-by-seed interval; per-class AP50 summaries; and differences between chosen pairs of rows."""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..evaluation.plots import per_class_ap50_rows
from ..evaluation.results_io import PER_CLASS_AP50_PREFIX
from .runs import Run, available_metrics, choose_dataset, metric_value
from .statistics import CONFIDENCE, Summary, difference_interval, paired_difference, summarize


@dataclass(frozen=True)
class Row:
    """One table row: a setting's label, its evaluated runs (one per seed), the runs it lacks, when its
    delta is not against the table's base row the label of the row it is compared with, and, when known,
    the seed of each run (in the order of `runs`), which pairs its runs with the reference row's."""

    label: str
    runs: Tuple[Run, ...]
    missing: Tuple[str, ...] = ()
    compare_to: Optional[str] = None
    seeds: Tuple[int, ...] = ()

    def __post_init__(self):
        if self.seeds and len(self.seeds) != len(self.runs):
            raise ValueError(f"row {self.label!r}: {len(self.seeds)} seeds for {len(self.runs)} runs")

    @property
    def expected(self) -> int:
        return len(self.runs) + len(self.missing)


def _find_base(rows: Sequence[Row], base_label: Optional[str]) -> Row:
    labels = [row.label for row in rows]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"run labels must be unique; repeated: {duplicates}")
    if base_label is None:
        return rows[0]
    if base_label not in labels:
        raise ValueError(f"--base {base_label!r} is not a run label; labels: {labels}")
    return rows[labels.index(base_label)]


def _summary_json(summary: Summary) -> dict:
    finite = (lambda x: None if x is None or not math.isfinite(x) else x)
    interval = summary.interval
    return {
        "n": summary.n,
        "mean": finite(summary.mean),
        "std": finite(summary.std),
        "half_width": summary.half_width,
        "ci95": None if interval is None else list(interval),
    }


def _per_class_summaries(row: Row, dataset: str, task: str, confidence: float) -> Dict[str, Summary]:
    names: List[str] = []
    for run in row.runs:
        names += [name for name, _ in per_class_ap50_rows(run.results[dataset][task]) if name not in names]
    return {
        name: summarize(
            [run.results[dataset][task].get(PER_CLASS_AP50_PREFIX + name) for run in row.runs], confidence
        )
        for name in names
    }


def table_data(
    rows: Sequence[Row],
    dataset: Optional[str] = None,
    base_label: Optional[str] = None,
    metrics: Optional[Sequence[str]] = None,
    task: str = "bbox",
    confidence: float = CONFIDENCE,
    comparisons: Sequence[Tuple[str, str]] = (),
) -> dict:
    """Every number of the table as JSON-ready data: per row and metric the values, n, mean, std, interval,
    delta of means to the base row and its Welch interval, and for rows with seeds the paired-by-seed
    interval under 'paired'; per row the per-class AP50 summaries; under 'comparisons' the same differences
    for each (row, minus row) label pair of `comparisons`, pairs that are not a row and its reference.

    `metrics` None: `available_metrics` of the evaluated runs. Rows without runs stay, marked missing.
    """
    if not rows:
        raise ValueError("no runs given: pass at least one --run label=path")
    base = _find_base(rows, base_label)
    by_label = {row.label: row for row in rows}
    for row in rows:
        if row.compare_to is not None and (row.compare_to not in by_label or row.compare_to == row.label):
            raise ValueError(f"row {row.label!r} is compared with {row.compare_to!r}, which is not another "
                             f"row; rows: {list(by_label)}")
    for pair in comparisons:
        if len(pair) != 2 or pair[0] == pair[1] or not all(label in by_label for label in pair):
            raise ValueError(f"comparison {list(pair)} must name two different rows; rows: {list(by_label)}")
    runs = [run for row in rows for run in row.runs]
    if not runs:
        raise ValueError(f"none of the rows {[row.label for row in rows]} has an evaluated run")
    dataset = choose_dataset(runs, dataset)
    metrics = available_metrics(runs, dataset, task) if metrics is None else list(metrics)
    summaries = {
        row.label: {
            metric: summarize([metric_value(run, dataset, task, metric) for run in row.runs], confidence)
            for metric in metrics
        }
        for row in rows
    }
    data_rows = []
    for row in rows:
        row_metrics = {}
        for metric in metrics:
            reference = row.compare_to or base.label
            entry = _summary_json(summaries[row.label][metric])
            entry["values"] = [metric_value(run, dataset, task, metric) for run in row.runs]
            entry["values"] = [v if math.isfinite(v) else None for v in entry["values"]]
            if row is not base:
                entry.update(_difference(row, by_label[reference], metric, summaries, dataset, task, confidence))
            row_metrics[metric] = entry
        data_rows.append({
            "label": row.label,
            "is_base": row is base,
            "compared_to": None if row is base else row.compare_to or base.label,
            "expected": row.expected,
            "missing": list(row.missing),
            "results_files": [str(run.results_file) for run in row.runs],
            "metrics": row_metrics,
            "per_class_ap50": {
                name: _summary_json(summary)
                for name, summary in _per_class_summaries(row, dataset, task, confidence).items()
            },
        })
    data_comparisons = [
        {"row": first, "minus": second,
         "metrics": {metric: _difference(by_label[first], by_label[second], metric, summaries, dataset, task,
                                         confidence) for metric in metrics}}
        for first, second in comparisons
    ]
    return {"dataset": dataset, "task": task, "base": base.label, "confidence": confidence,
            "metrics": metrics, "rows": data_rows, "comparisons": data_comparisons}


def _difference(row: Row, reference: Row, metric: str, summaries: Dict[str, Dict[str, Summary]], dataset: str,
                task: str, confidence: float) -> dict:
    """`row` minus `reference` on `metric`: delta of means, its Welch interval and, when both rows know their
    seeds, the paired-by-seed interval under 'paired'."""
    a, b = summaries[row.label][metric], summaries[reference.label][metric]
    entry = {"delta": a.mean - b.mean if a.n > 0 and b.n > 0 else None}
    interval = difference_interval(a, b, confidence)
    entry["delta_ci95"] = None if interval is None else list(interval)
    if row.seeds and reference.seeds:
        paired, seeds = paired_difference(
            _by_seed(row, dataset, task, metric), _by_seed(reference, dataset, task, metric), confidence)
        entry["paired"] = {"seeds": seeds, **_summary_json(paired)}
    return entry


def _by_seed(row: Row, dataset: str, task: str, metric: str) -> Dict[int, float]:
    return {seed: metric_value(run, dataset, task, metric) for seed, run in zip(row.seeds, row.runs)}


def rows_by_label(runs: Sequence[Run]) -> List[Row]:
    """One row per distinct label, in order of first appearance, holding every run with that label."""
    rows: Dict[str, List[Run]] = {}
    for run in runs:
        rows.setdefault(run.label, []).append(run)
    return [Row(label, tuple(group)) for label, group in rows.items()]
