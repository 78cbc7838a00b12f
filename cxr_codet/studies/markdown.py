"""Study tables as markdown, in the paper's ablation layout: one row per setting, a cell the mean over seeds ±
the half-width of its 95% t-interval with the delta to the row's reference in parentheses, marked when the 95%
Welch interval of the difference excludes 0 (and separately when the paired-by-seed interval does), and an
optional second table of differences between chosen pairs of rows. Deltas are computed from the means as
printed (rounded to `precision`), so each row's arithmetic checks out on the page."""
import math
from typing import List, Optional, Sequence

from .runs import DEFAULT_METRICS, Run
from .statistics import Summary, summarize
from .table import Row, table_data

SIGNIFICANT = "*"
PAIRED_SIGNIFICANT = "\u2020"  # a dagger: the paired-by-seed interval of the difference excludes 0
MISSING = "missing"


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
    if any(row.get("paper") for row in data["rows"]):
        caption += " In brackets: the figure the paper reports for that setting."
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
            reported = row.get("paper", {}).get(metric)
            paper = "" if reported is None else f" [paper {reported:.{precision}f}]"
            if not row["results_files"]:
                cells.append(MISSING + paper)
                continue
            base = None if row["is_base"] else _summary_from_json(
                by_label[row["compared_to"]]["metrics"][metric])
            cell = format_summary(
                _summary_from_json(entry), base, precision, _excludes_zero(entry.get("delta_ci95")),
                _excludes_zero(entry.get("paired", {}).get("ci95")))
            cells.append(cell + paper)
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
