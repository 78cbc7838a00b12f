"""`run_benchmarks`: run benchmark tasks on one config, or alternate two (A B, then B A, ...) over several rounds
and report each figure's median and the median of the per-round B/A ratios, so that a comparison holds on a
noisy machine."""
import logging
import statistics
from typing import Dict, Sequence

from .tasks import BENCHMARK_TASKS, BenchmarkSettings

logger = logging.getLogger(__name__)


def _median_figures(runs: Sequence[Dict[str, float]]) -> Dict[str, float]:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def _median_ratios(runs_a: Sequence[Dict[str, float]], runs_b: Sequence[Dict[str, float]]):
    """Per figure, the median over rounds of B/A (None when A's figure is 0 in a round)."""
    ratios = {}
    for name in runs_a[0]:
        pairs = [(a[name], b[name]) for a, b in zip(runs_a, runs_b)]
        ratios[name] = None if any(a == 0 for a, _ in pairs) else statistics.median(b / a for a, b in pairs)
    return ratios


def run_benchmarks(configs: Dict[str, object], tasks: Sequence[str], settings: BenchmarkSettings) -> Dict[str, dict]:
    """Run `tasks` on one or two configs ({"A": cfg} or {"A": cfg, "B": cfg}) for settings.rounds rounds.

    Returns {task: {label: {"median": figures, "rounds": [figures, ...]}, "B/A": ratios (two configs)}}.
    """
    unknown = [task for task in tasks if task not in BENCHMARK_TASKS]
    if unknown:
        raise ValueError(f"unknown benchmark task(s) {unknown}; choose from {sorted(BENCHMARK_TASKS)}")
    if not 1 <= len(configs) <= 2:
        raise ValueError(f"benchmark one config or compare two; got {len(configs)}")
    labels = list(configs)
    runs = {task: {label: [] for label in labels} for task in tasks}
    for round_index in range(settings.rounds):
        order = labels if round_index % 2 == 0 else labels[::-1]
        for task in tasks:
            for label in order:
                logger.info("Benchmark round %d/%d: %s on config %s", round_index + 1, settings.rounds, task, label)
                figures = BENCHMARK_TASKS[task](configs[label], settings)
                logger.info("  %s", ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))
                runs[task][label].append(figures)
    results = {}
    for task in tasks:
        results[task] = {label: {"median": _median_figures(runs[task][label]), "rounds": runs[task][label]}
                         for label in labels}
        if len(labels) == 2:
            results[task]["B/A"] = _median_ratios(runs[task][labels[0]], runs[task][labels[1]])
    return results
