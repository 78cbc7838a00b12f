"""Ablation tables in the paper's layout: one markdown row per setting, AP50 / APm / APl with deltas to a base.

A row holds one run (tools/ablation_table.py) or the seeds of one setting (tools/run_study.py); with seeds,
a cell is the mean over them and the half-width of its 95% t-interval, and the delta to the base row is
marked when the 95% Welch interval of the difference excludes 0, and separately when the t-interval of the
per-seed differences does (paired by seed: when a seed draws something both rows share, such as a study's boxed
subset, the per-seed differences vary less than the rows do). Pairs of rows that are not a row and its
reference (a method against its control) can get a second table of differences with both intervals.
Reads each run's OUTPUT_DIR/eval_results.json (`{dataset: {"bbox": {metric: value in percent}}}`, see results_io.py).
Deltas are computed from the means as printed (rounded to `precision`), so each row's arithmetic checks
out on the page. A metric without ground truth (null or NaN, or listed under
classes/size_buckets_without_ground_truth) prints as "n/a"; any other missing metric is an error.
"""
import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from scipy import stats

from ..numeric_args import number_problem, refuse
from .plots import per_class_ap50_rows
from .results_io import (
    CLASSES_WITHOUT_GT_KEY,
    EVAL_RESULTS_FILENAME as RESULTS_FILE,
    PER_CLASS_AP50_PREFIX,
    SIZE_BUCKETS_WITHOUT_GT_KEY,
    read_eval_results,
)

DEFAULT_METRICS = ("AP50", "APm", "APl")
CONFIDENCE = 0.95
# Box metrics that never become extra columns: COCO's other summary numbers, per-class APs, bookkeeping.
_NOT_EXTRA_COLUMNS = ("AP", "AP75", "APs", CLASSES_WITHOUT_GT_KEY, SIZE_BUCKETS_WITHOUT_GT_KEY)
# Per-class keys (COCO AP50 / AP, VOC "AP@<iou>-<class>", "FROC-CPM-<class>") and the FROC operating points
# ("FROC-sens@<rate>[-<class>]", summarised by the FROC-CPM column); a study lists them under `metrics` if wanted.
_PER_CLASS_PREFIXES = (PER_CLASS_AP50_PREFIX, "AP-", "AP@", "FROC-CPM-", "FROC-sens@")
SIGNIFICANT = "*"
PAIRED_SIGNIFICANT = "\u2020"  # a dagger: the paired-by-seed interval of the difference excludes 0
MISSING = "missing"


@dataclass(frozen=True)
class Run:
    """One evaluated run: its row label, the eval_results.json it came from and that file's content."""

    label: str
    results_file: Path
    results: dict


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


@dataclass(frozen=True)
class Summary:
    """One metric over a row's runs: mean of the finite values, sample std and 95% t-interval half-width
    (None below 2 values); `n` counts the finite values."""

    n: int
    mean: float
    std: float
    half_width: Optional[float]

    @property
    def interval(self) -> Optional[Tuple[float, float]]:
        if self.half_width is None:
            return None
        return (self.mean - self.half_width, self.mean + self.half_width)


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean and Student-t interval of the finite `values` (NaN: no ground truth, left out)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return Summary(0, math.nan, math.nan, None)
    mean = sum(finite) / n
    if n == 1:
        return Summary(1, mean, math.nan, None)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1))
    half_width = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, half_width)


def difference_interval(
    a: Summary, b: Summary, confidence: float = CONFIDENCE
) -> Optional[Tuple[float, float]]:
    """Welch's interval for mean(a) - mean(b); None unless both have at least 2 values."""
    if a.n < 2 or b.n < 2:
        return None
    difference = a.mean - b.mean
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    if va + vb == 0:
        return (difference, difference)
    dof = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    half_width = float(stats.t.ppf(0.5 + confidence / 2, dof)) * math.sqrt(va + vb)
    return (difference - half_width, difference + half_width)


def paired_difference(
    a: Dict[int, float], b: Dict[int, float], confidence: float = CONFIDENCE
) -> Tuple[Summary, List[int]]:
    """Mean and t-interval of a[seed] - b[seed] over the seeds both have finite values for, and those seeds."""
    seeds = [seed for seed in a if seed in b and math.isfinite(a[seed]) and math.isfinite(b[seed])]
    return summarize([a[seed] - b[seed] for seed in seeds], confidence), seeds


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


def format_cell(value: float, base: Optional[float], precision: int = 1) -> str:
    """'72.4' for the base row (base None), '72.4 (+1.3)' otherwise; NaN prints as 'n/a'."""
    return format_summary(summarize([value]), None if base is None else summarize([base]), precision)


def rounded_difference(mean: float, reference: float, precision: int) -> float:
    """`mean - reference` as the table's rounded figures differ, so a printed delta matches its columns."""
    return round(mean, precision) - round(reference, precision) + 0.0  # + 0.0 turns -0.0 into 0.0


def format_summary(
    summary: Summary, base: Optional[Summary], precision: int = 1, significant: bool = False,
    paired_significant: bool = False,
) -> str:
    """'72.4 ± 1.3' (mean ± 95% half-width; no ± for one value), then ' (+1.2)' against `base` unless it
    is None, with SIGNIFICANT appended when `significant` and PAIRED_SIGNIFICANT when `paired_significant`;
    no finite value prints as 'n/a'."""
    if summary.n == 0:
        return "n/a"
    shown = f"{summary.mean:.{precision}f}"
    if summary.half_width is not None:
        shown += f" ± {summary.half_width:.{precision}f}"
    if base is None:
        return shown
    if base.n == 0:
        return f"{shown} (n/a)"
    delta = rounded_difference(summary.mean, base.mean, precision)
    marks = (SIGNIFICANT if significant else "") + (PAIRED_SIGNIFICANT if paired_significant else "")
    return f"{shown} ({delta:+.{precision}f}{marks})"


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


def _excludes_zero(interval: Optional[Sequence[float]]) -> bool:
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


def _summary_from_json(entry: dict) -> Summary:
    if entry["n"] == 0:
        return Summary(0, math.nan, math.nan, None)
    return Summary(entry["n"], entry["mean"], math.nan if entry["std"] is None else entry["std"],
                   entry["half_width"])


def _seeded(data: dict) -> bool:
    return any(row["expected"] != 1 or row["missing"] for row in data["rows"])


def render_markdown(data: dict, precision: int = 1) -> str:
    """A caption line and a markdown table from `table_data`; an "n" column (runs per row) appears when a
    row has several seeds or misses runs."""
    seeded = _seeded(data)
    metrics, percent = data["metrics"], round(100 * data["confidence"])
    paired = any("paired" in entry for row in data["rows"] for entry in row["metrics"].values())
    own = any(not row["is_base"] and row["compared_to"] != data["base"] for row in data["rows"])
    reference = f"base {'row' if seeded else 'run'} {data['base']!r}" + (" (or the row after 'vs')" if own else "")
    if seeded:
        caption = (
            f"{data['task']} results on {data['dataset']} (%): mean over n seeds ± half-width of the "
            f"{percent}% t-interval (no interval when n = 1); in parentheses: difference of means from the "
            f"{reference}, {SIGNIFICANT} where the {percent}% Welch interval of that difference excludes 0"
            + (f", {PAIRED_SIGNIFICANT} where the {percent}% t-interval of the per-seed differences (paired by "
               "seed) does." if paired else ".")
        )
    else:
        caption = (f"{data['task']} results on {data['dataset']} (%); in parentheses: difference from the "
                   f"{reference}.")
    first = ["Setting"] + (["n"] if seeded else [])
    lines: List[str] = [
        caption,
        "",
        "| " + " | ".join(first + list(metrics)) + " |",
        "|---|" + ("---:|" if seeded else "") + "---:|" * len(metrics),
    ]
    by_label = {row["label"]: row for row in data["rows"]}
    for row in data["rows"]:
        own_reference = not row["is_base"] and row["compared_to"] != data["base"]
        suffix = " (base)" if row["is_base"] else f" (vs {row['compared_to']})" if own_reference else ""
        label = (row["label"] + suffix).replace("|", "\\|")
        cells = [label]
        if seeded:
            n = len(row["results_files"])
            cells.append(str(n) if not row["missing"] else
                         f"{n} of {row['expected']} (missing: {', '.join(row['missing'])})")
        for metric in metrics:
            entry = row["metrics"][metric]
            if not row["results_files"]:
                cells.append(MISSING)
                continue
            base = None if row["is_base"] else _summary_from_json(
                by_label[row["compared_to"]]["metrics"][metric])
            cells.append(format_summary(
                _summary_from_json(entry), base, precision, _excludes_zero(entry.get("delta_ci95")),
                _excludes_zero(entry.get("paired", {}).get("ci95"))))
        lines.append("| " + " | ".join(cells) + " |")
    if data.get("comparisons"):
        lines += [""] + render_comparisons(data, precision)
    return "\n".join(lines) + "\n"


def render_comparisons(data: dict, precision: int = 1) -> List[str]:
    """The markdown lines of a second table: one row per pair of `data['comparisons']`, each cell the
    difference of the rounded means, its Welch interval in brackets and, for seeded rows, the paired one."""
    percent = round(100 * data["confidence"])
    paired = any("paired" in entry for item in data["comparisons"] for entry in item["metrics"].values())
    lines = [
        f"Differences between rows (points): first row minus second, from the means above; in brackets the "
        f"{percent}% Welch interval" + (f"; after 'paired' the {percent}% t-interval of the per-seed differences "
                                       "(n: seeds both rows have, when fewer than the rows' runs)." if paired else "."),
        "",
        "| Difference | " + " | ".join(data["metrics"]) + " |",
        "|---|" + "---:|" * len(data["metrics"]),
    ]
    by_label = {row["label"]: row for row in data["rows"]}
    for item in data["comparisons"]:
        first, second = by_label[item["row"]], by_label[item["minus"]]
        cells = [f"{item['row']} - {item['minus']}".replace("|", "\\|")]
        for metric in data["metrics"]:
            if not first["results_files"] or not second["results_files"]:
                cells.append(MISSING)
                continue
            runs = min(len(first["results_files"]), len(second["results_files"]))
            cells.append(format_difference(first["metrics"][metric]["mean"], second["metrics"][metric]["mean"],
                                           item["metrics"][metric], runs, precision))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_difference(mean: Optional[float], reference_mean: Optional[float], entry: dict, runs: int,
                      precision: int = 1) -> str:
    """'+3.4 [+1.7, +5.1]; paired [+1.2, +7.5]': the difference of the means rounded to `precision` (as the
    table prints them), Welch's interval, the paired interval (with its n when it pairs fewer than `runs`);
    'n/a' when either mean is missing."""
    if mean is None or reference_mean is None or not (math.isfinite(mean) and math.isfinite(reference_mean)):
        return "n/a"
    text = f"{rounded_difference(mean, reference_mean, precision):+.{precision}f}"
    bounds = (lambda interval: f"[{interval[0]:+.{precision}f}, {interval[1]:+.{precision}f}]")
    if entry.get("delta_ci95") is not None:
        text += " " + bounds(entry["delta_ci95"])
    paired = entry.get("paired")
    if paired is not None and paired["ci95"] is not None:
        text += "; paired " + bounds(paired["ci95"]) + (f" (n={paired['n']})" if paired["n"] < runs else "")
    return text


def ablation_table(
    runs: Sequence[Run],
    dataset: Optional[str] = None,
    base_label: Optional[str] = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    task: str = "bbox",
    precision: int = 1,
) -> str:
    """A markdown caption line and table: one row per run, `metrics` columns, deltas against the base run."""
    rows = [Row(run.label, (run,)) for run in runs]
    return render_markdown(table_data(rows, dataset, base_label, metrics, task), precision)


def rows_by_label(runs: Sequence[Run]) -> List[Row]:
    """One row per distinct label, in order of first appearance, holding every run with that label."""
    rows: Dict[str, List[Run]] = {}
    for run in runs:
        rows.setdefault(run.label, []).append(run)
    return [Row(label, tuple(group)) for label, group in rows.items()]


def build_parser() -> argparse.ArgumentParser:
    """The command line of tools/ablation_table.py."""
    parser = argparse.ArgumentParser(
        description="Tabulate eval_results.json of several runs in the paper's ablation layout (markdown).",
        epilog="example: tools/ablation_table.py --run base=output/base --run lr0.01=output/lr0.01 "
        "--dataset vindr_cxr_test --output table.md",
    )
    parser.add_argument(
        "--run", action="append", required=True, metavar="LABEL=PATH",
        help=f"a run: its row label and OUTPUT_DIR (or {RESULTS_FILE}); repeat, base first; runs with the "
        "same label are the seeds of one row (mean and 95%% t-interval)",
    )
    parser.add_argument("--base", help="label of the base run (default: the first --run)")
    parser.add_argument("--dataset", help="test dataset to tabulate (default: the only one all runs have)")
    parser.add_argument(
        "--metrics", nargs="+", default=list(DEFAULT_METRICS), help="columns (default: AP50 APm APl)"
    )
    parser.add_argument("--task", default="bbox", help="task key inside eval_results.json (default: bbox)")
    parser.add_argument("--precision", type=int, default=1, help="decimals (default: 1)")
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
    return parser


def main(argv: Sequence[str]) -> str:
    """Run the command line: print the table (and write --output); errors exit with a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse("ablation_table.py", [number_problem("--precision", args.precision, low=0, high=10)])
    try:
        rows = rows_by_label([load_run(*parse_run_spec(spec)) for spec in args.run])
        data = table_data(rows, args.dataset, args.base, args.metrics, args.task)
        table = render_markdown(data, args.precision)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    print(table, end="")
    return table
