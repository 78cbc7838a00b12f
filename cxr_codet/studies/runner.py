"""Running a study: train and evaluate every pending run (skipping finished ones, resuming interrupted ones), and
`--evaluate-on`: evaluate the finished runs' final weights on another dataset (a held-out split) and add it to
their eval_results.json."""
import difflib
import shlex
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, List, Optional

from detectron2.data import DatasetCatalog

from ..evaluation.results_io import EVAL_RESULTS_FILENAME, read_eval_results, write_eval_results
from .layout import EVAL_ON_PREFIX, FINAL_WEIGHTS, RUN_LOG, run_dir, run_state
from .plan import PlannedRun, eval_command, plan_runs, train_command
from .processes import log_tail, execute, run_lock
from .spec import Study, StudyError, select_rows, selected_runs


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_study(study: Study, output_root, train_script, only=None, num_gpus=None, dry_run=False,
              say: Callable[[str], None] = print, seeds=None, torch_threads: Optional[int] = None) -> List[str]:
    """Train and evaluate every pending run, printing progress; returns one line per failed run."""
    plan = plan_runs(study, output_root, train_script, only, num_gpus, seeds)
    counts = {state: sum(run.state == state for run in plan) for state in ("done", "resume", "new")}
    say(f"[{study.name}] {len(plan)} runs: {counts['done']} done, {counts['resume']} to resume, "
        f"{counts['new']} to start; output {Path(output_root) / study.name}")
    failures: List[str] = []
    elsewhere = 0
    started = time.monotonic()
    durations: List[float] = []
    pending = sum(run.state != "done" for run in plan)
    for index, run in enumerate(plan, 1):
        prefix = f"[{study.name}] {index}/{len(plan)} {run.row.name} seed {run.seed}"
        if run.state == "done":
            say(f"{prefix}: done, skipped ({run.output_dir / EVAL_RESULTS_FILENAME} exists)")
            continue
        if dry_run:
            reported = (f"; the paper reports {', '.join(f'{k} {v:g}' for k, v in run.row.paper)}"
                        if run.row.paper else "")
            say(f"{prefix}: would {'resume' if run.state == 'resume' else 'start'}: {shlex.join(run.command)}{reported}")
            continue
        with run_lock(run.output_dir) as locked:
            pending -= 1
            state = run_state(run.output_dir)  # another runner may have finished or started it meanwhile
            if not locked or state == "done":
                elsewhere += not locked
                say(f"{prefix}: {'done by' if locked else 'being trained by'} another runner, skipped")
                continue
            run = replace(run, state=state, command=train_command(
                study, run.row, run.seed, run.output_dir, state, train_script, num_gpus))
            eta = _duration(sum(durations) / len(durations) * (pending + 1)) if durations else "unknown"
            say(f"{prefix}: {'resuming' if state == 'resume' else 'training'} | elapsed "
                f"{_duration(time.monotonic() - started)} | ETA {eta} | log {run.output_dir / RUN_LOG}")
            run_started = time.monotonic()
            status = execute(run, say, prefix, torch_threads)
            durations.append(time.monotonic() - run_started)
            if status == 0 and run_state(run.output_dir) == "done":
                say(f"{prefix}: finished in {_duration(durations[-1])}")
                continue
        reason = (f"exit status {status}" if status else
                  f"exited 0 without a final {EVAL_RESULTS_FILENAME}")
        failures.append(f"{run.row.name} seed {run.seed}: {reason}; log {run.output_dir / RUN_LOG}")
        say(f"{prefix}: FAILED ({reason}); last lines of {run.output_dir / RUN_LOG}:\n"
            f"{log_tail(run.output_dir / RUN_LOG)}")
    if not dry_run:
        other = f", {elsewhere} left to another runner" if elsewhere else ""
        say(f"[{study.name}] finished in {_duration(time.monotonic() - started)}: "
            f"{len(failures)} failed run(s){other}")
    return failures


def _has_results_for(output_dir: Path, dataset: str) -> bool:
    return dataset in read_eval_results(output_dir / EVAL_RESULTS_FILENAME)


def evaluate_on(study: Study, output_root, train_script, dataset: str, only=None, seeds=None,
                say: Callable[[str], None] = print, torch_threads: Optional[int] = None) -> List[str]:
    """Evaluate every finished run of the selected rows and seeds on `dataset` (e.g. a held-out split) and add
    its results to the run's eval_results.json; runs that have them are skipped, unfinished ones reported.
    Returns one line per run that could not be evaluated."""
    if dataset not in DatasetCatalog.list():
        close = difflib.get_close_matches(dataset, DatasetCatalog.list(), n=5, cutoff=0.6)
        raise StudyError(f"--evaluate-on {dataset!r}: not a registered dataset" +
                         (f"; did you mean one of {close}?" if close else ""))
    plan = [(row, seed, run_dir(output_root, study, row, seed))
            for row, seed in selected_runs(study, select_rows(study, only), seeds)]
    say(f"[{study.name}] evaluating {len(plan)} runs on {dataset}")
    failures: List[str] = []
    for index, (row, seed, output_dir) in enumerate(plan, 1):
        prefix = f"[{study.name}] {index}/{len(plan)} {row.name} seed {seed}"
        if run_state(output_dir) != "done":
            failures.append(f"{row.name} seed {seed}: not finished, nothing to evaluate ({output_dir})")
            say(f"{prefix}: not finished, skipped")
            continue
        if _has_results_for(output_dir, dataset):
            say(f"{prefix}: has {dataset} results, skipped")
            continue
        if not (output_dir / FINAL_WEIGHTS).is_file():
            failures.append(f"{row.name} seed {seed}: no {output_dir / FINAL_WEIGHTS} to evaluate")
            say(f"{prefix}: no {FINAL_WEIGHTS}, skipped")
            continue
        eval_dir = output_dir / f"{EVAL_ON_PREFIX}{dataset}"
        command = eval_command(study, row, seed, output_dir, dataset, train_script)
        with run_lock(eval_dir) as locked:
            if not locked or _has_results_for(output_dir, dataset):
                say(f"{prefix}: {'evaluated' if locked else 'being evaluated'} by another runner, skipped")
                continue
            say(f"{prefix}: evaluating on {dataset} | log {eval_dir / RUN_LOG}")
            status = execute(PlannedRun(row, seed, eval_dir, "eval", command, 0), say, prefix, torch_threads)
            results_file = eval_dir / EVAL_RESULTS_FILENAME
            results = read_eval_results(results_file) if status == 0 and results_file.is_file() else {}
            if dataset in results:
                write_eval_results({dataset: results[dataset]}, output_dir)
                say(f"{prefix}: {dataset} results added to {output_dir / EVAL_RESULTS_FILENAME}")
                continue
        reason = f"exit status {status}" if status else f"exited 0 without {dataset} results in {results_file}"
        failures.append(f"{row.name} seed {seed}: evaluation {reason}; log {eval_dir / RUN_LOG}")
        say(f"{prefix}: evaluation FAILED ({reason}); last lines of {eval_dir / RUN_LOG}:\n"
            f"{log_tail(eval_dir / RUN_LOG)}")
    return failures
