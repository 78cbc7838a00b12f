"""Ablation tables in the paper's layout: one markdown row per run, AP50 / APm / APl with deltas to a base.

Reads each run's OUTPUT_DIR/eval_results.json (`{dataset: {"bbox": {metric: value in percent}}}`,
see results_io.py). Deltas are computed from the values as printed (rounded to `precision`), so each
row's arithmetic checks out on the page. A metric without ground truth (null or NaN, or listed under
classes/size_buckets_without_ground_truth) prints as "n/a"; any other missing metric is an error.
"""
import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from .results_io import (
    CLASSES_WITHOUT_GT_KEY,
    EVAL_RESULTS_FILENAME as RESULTS_FILE,
    PER_CLASS_AP50_PREFIX,
    SIZE_BUCKETS_WITHOUT_GT_KEY,
    read_eval_results,
)

DEFAULT_METRICS = ("AP50", "APm", "APl")


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


def format_cell(value: float, base: Optional[float], precision: int = 1) -> str:
    """'72.4' for the base row (base None), '72.4 (+1.3)' otherwise; NaN prints as 'n/a'."""
    if math.isnan(value):
        return "n/a"
    shown = f"{value:.{precision}f}"
    if base is None:
        return shown
    if math.isnan(base):
        return f"{shown} (n/a)"
    delta = round(value, precision) - round(base, precision) + 0.0
    return f"{shown} ({delta:+.{precision}f})"


def _find_base(runs: Sequence[Run], base_label: Optional[str]) -> Run:
    labels = [run.label for run in runs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"run labels must be unique; repeated: {duplicates}")
    if base_label is None:
        return runs[0]
    if base_label not in labels:
        raise ValueError(f"--base {base_label!r} is not a run label; labels: {labels}")
    return runs[labels.index(base_label)]


def ablation_table(
    runs: Sequence[Run],
    dataset: Optional[str] = None,
    base_label: Optional[str] = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    task: str = "bbox",
    precision: int = 1,
) -> str:
    """A markdown caption line and table: one row per run, `metrics` columns, deltas against the base run."""
    if not runs:
        raise ValueError("no runs given: pass at least one --run label=path")
    base = _find_base(runs, base_label)
    dataset = choose_dataset(runs, dataset)
    base_values = [metric_value(base, dataset, task, metric) for metric in metrics]
    lines: List[str] = [
        f"{task} results on {dataset} (%); in parentheses: difference from the base run {base.label!r}.",
        "",
        "| Setting | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for run in runs:
        is_base = run is base
        cells = [
            format_cell(value, None if is_base else base_value, precision)
            for value, base_value in zip(
                (metric_value(run, dataset, task, metric) for metric in metrics), base_values
            )
        ]
        label = run.label.replace("|", "\\|") + (" (base)" if is_base else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The command line of tools/ablation_table.py."""
    parser = argparse.ArgumentParser(
        description="Tabulate eval_results.json of several runs in the paper's ablation layout (markdown).",
        epilog="example: tools/ablation_table.py --run base=output/base --run lr0.01=output/lr0.01 "
        "--dataset vindr_cxr_test --output table.md",
    )
    parser.add_argument(
        "--run", action="append", required=True, metavar="LABEL=PATH",
        help=f"a row: its label and the run's OUTPUT_DIR (or {RESULTS_FILE}); repeat, base first",
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
    try:
        runs = [load_run(*parse_run_spec(spec)) for spec in args.run]
        table = ablation_table(runs, args.dataset, args.base, args.metrics, args.task, args.precision)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    print(table, end="")
    return table
