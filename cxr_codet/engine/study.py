"""Studies: train and evaluate every row x seed of a YAML study file, one subprocess per run, then tabulate.

A study file (studies/*.yaml) names rows (a config plus overrides) and seeds. Each run goes to
`<output-root>/<study>/<row>/seed<S>/` via `tools/train_net.py --config-file <cfg> OUTPUT_DIR <dir> SEED <S>
<study overrides> <row overrides>`, so a crash of one run leaves the others standing. A run whose folder
holds a final evaluation is skipped and one with a checkpoint is resumed, so rerunning the same command
after a kill loses nothing. `--evaluate-on DATASET` evaluates the finished runs' final weights on another
dataset (a held-out split) and adds it to their eval_results.json. The table (markdown, JSON, per-class AP50 PNG)
comes from ablation_table.py.
"""
import argparse
import ctypes
import difflib
import fcntl
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import yaml
from detectron2.data import DatasetCatalog

from ..evaluation.ablation_table import Row, load_run, render_markdown, table_data
from ..evaluation.plots import plot_per_class_ap50_panels
from ..evaluation.results_io import EVAL_RESULTS_FILENAME, read_eval_results, write_eval_results
from .launcher import build_cfg

STUDY_KEYS = {
    "name": "the study's folder under the output root (required)",
    "base": "the row deltas are computed against (default: the first row)",
    "seeds": "list of SEED values, every row runs each unless it lists its own (required)",
    "overrides": "KEY VALUE pairs appended to every row's command line",
    "rows": "list of rows (required)",
    "description": "free text, printed above the table",
    "dataset": "test dataset to tabulate (default: the only one all runs have)",
    "metrics": "table columns (default: AP50 APm APl and any other summary metric all runs report)",
    "comparisons": "list of [row, other row] pairs whose differences print under the table (e.g. against a control)",
}
ROW_KEYS = {
    "name": "the row's folder and table label (required)",
    "config": "config file, relative to the working directory (required)",
    "overrides": "this row's own KEY VALUE pairs",
    "label": "text shown in the table instead of the name",
    "compare_to": "the row this row's deltas are against, when not the study's base (e.g. same budget pairs)",
    "seeds": "this row's SEED values when not the study's (e.g. more seeds where three leave the interval wide)",
}
RUNNER_KEYS = ("OUTPUT_DIR", "SEED")  # set per run by the runner; a study may not override them
RUN_LOG = "study_run.log"
LOCK_FILE = ".study_lock"
TABLE_MD, TABLE_JSON, TABLE_PNG = "table.md", "table.json", "per_class_ap50.png"
FINAL_WEIGHTS = "model_final.pth"
EVAL_ON_PREFIX = "eval_on_"  # <run>/eval_on_<dataset>/: the output folder of an --evaluate-on evaluation
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_ITER = re.compile(r"\biter: (\d+)")
PROGRESS_PERIOD_S = 30.0


class StudyError(ValueError):
    """A study file that cannot run: the message names the file, the row and the key."""


@dataclass(frozen=True)
class StudyRow:
    """One row of a study: folder name, config file, its own overrides (as command-line strings), label."""

    name: str
    config: str
    overrides: Tuple[str, ...] = ()
    label: str = ""
    compare_to: Optional[str] = None
    seeds: Optional[Tuple[int, ...]] = None


@dataclass(frozen=True)
class Study:
    """A checked study file: its rows, seeds, shared overrides and table options."""

    path: Path
    name: str
    base: str
    seeds: Tuple[int, ...]
    rows: Tuple[StudyRow, ...]
    overrides: Tuple[str, ...] = ()
    description: str = ""
    dataset: Optional[str] = None
    metrics: Optional[Tuple[str, ...]] = None
    comparisons: Tuple[Tuple[str, str], ...] = ()

    def row(self, name: str) -> StudyRow:
        return next(row for row in self.rows if row.name == name)

    def seeds_of(self, row: StudyRow) -> Tuple[int, ...]:
        """The row's own seeds when it lists them, else the study's."""
        return self.seeds if row.seeds is None else row.seeds

    @property
    def all_seeds(self) -> Tuple[int, ...]:
        """Every seed some row runs: the study's, then the rows' extra ones in ascending order."""
        extra = {seed for row in self.rows for seed in self.seeds_of(row)} - set(self.seeds)
        return self.seeds + tuple(sorted(extra))


@dataclass(frozen=True)
class PlannedRun:
    """One row x seed: its folder, state ('done', 'resume' or 'new') and command line."""

    row: StudyRow
    seed: int
    output_dir: Path
    state: str
    command: Tuple[str, ...]
    max_iter: int


def _override_value(value) -> str:
    """A YAML value as detectron2's command line wants it (lists become tuples, literal_eval reads them)."""
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    return str(value)


def _overrides(where: str, value) -> Tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) % 2:
        raise StudyError(f"{where}: overrides must be a list of KEY, VALUE pairs (even length), got {value!r}")
    keys = value[0::2]
    for key in keys:
        if not isinstance(key, str) or not key:
            raise StudyError(f"{where}: override key {key!r} is not a config key such as SOLVER.MAX_ITER")
        if key in RUNNER_KEYS:
            raise StudyError(f"{where}: overrides set {key}, which the runner sets for every run")
    return tuple(_override_value(item) for item in value)


def _name(where: str, key: str, value) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise StudyError(f"{where}: {key} must be a folder name (letters, digits, . _ + -), got {value!r}")
    return value


def _seeds(where: str, seeds) -> Tuple[int, ...]:
    if not isinstance(seeds, list) or not seeds:
        raise StudyError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise StudyError(f"{where}: seed {seed!r} is not an integer")
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"{where}: seeds repeat: {seeds}")
    return tuple(seeds)


def _unknown_keys(where: str, mapping: dict, allowed: dict) -> None:
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _row(path: Path, index: int, entry, seen: dict) -> StudyRow:
    where = f"{path}: rows[{index}]"
    if not isinstance(entry, dict):
        raise StudyError(f"{where} must be a mapping with name and config, got {entry!r}")
    name = _name(where, "name", entry.get("name"))
    where = f"{path}: row {name!r}"
    if name in seen:
        raise StudyError(f"{where}: duplicate row name (rows[{seen[name]}] and rows[{index}])")
    seen[name] = index
    _unknown_keys(where, entry, ROW_KEYS)
    config = entry.get("config")
    if not isinstance(config, str) or not config:
        raise StudyError(f"{where}: config must be a config file path, got {config!r}")
    if not Path(config).is_file():
        raise StudyError(f"{where}: config file {config} does not exist (relative to {Path.cwd()})")
    label = entry.get("label", name)
    if not isinstance(label, str) or not label:
        raise StudyError(f"{where}: label must be text, got {label!r}")
    compare_to = entry.get("compare_to")
    if compare_to is not None and (not isinstance(compare_to, str) or compare_to == name):
        raise StudyError(f"{where}: compare_to must name another row, got {compare_to!r}")
    seeds = None if "seeds" not in entry else _seeds(where, entry["seeds"])
    return StudyRow(name, config, _overrides(where, entry.get("overrides")), label, compare_to, seeds)


def load_study(path) -> Study:
    """Read and check a study file; a StudyError names the file, row and key of the first problem."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise StudyError(f"{path}: expected a mapping with keys {sorted(STUDY_KEYS)}, got {type(data).__name__}")
    _unknown_keys(str(path), data, STUDY_KEYS)
    name = _name(str(path), "name", data.get("name"))
    seeds = _seeds(str(path), data.get("seeds"))
    entries = data.get("rows")
    if not isinstance(entries, list) or not entries:
        raise StudyError(f"{path}: rows must be a non-empty list, got {entries!r}")
    seen: dict = {}
    rows = tuple(_row(path, index, entry, seen) for index, entry in enumerate(entries))
    for row in rows:
        if row.compare_to is not None and row.compare_to not in seen:
            raise StudyError(f"{path}: row {row.name!r}: compare_to {row.compare_to!r} is not a row; rows: "
                             f"{list(seen)}")
    base = data.get("base", rows[0].name)
    if base not in seen:
        raise StudyError(f"{path}: base {base!r} is not a row; rows: {list(seen)}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise StudyError(f"{path}: description must be text, got {description!r}")
    dataset = data.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise StudyError(f"{path}: dataset must be a dataset name, got {dataset!r}")
    metrics = data.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
            raise StudyError(f"{path}: metrics must be a non-empty list of metric names, got {metrics!r}")
        metrics = tuple(metrics)
    return Study(path, name, base, seeds, rows, _overrides(str(path), data.get("overrides")),
                 description, dataset, metrics, _comparisons(path, data.get("comparisons"), list(seen)))


def _comparisons(path: Path, value, rows: List[str]) -> Tuple[Tuple[str, str], ...]:
    """The study's `comparisons`: pairs of two different row names."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise StudyError(f"{path}: comparisons must be a list of [row, other row] pairs, got {value!r}")
    for index, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] != pair[1] and all(p in rows for p in pair)):
            raise StudyError(f"{path}: comparisons[{index}] = {pair!r} must be [row, other row]; rows: {rows}")
    return tuple(tuple(pair) for pair in value)


def select_rows(study: Study, only: Optional[Sequence[str]]) -> Tuple[StudyRow, ...]:
    """The rows named by --only (all when None), in the study's order."""
    if not only:
        return study.rows
    unknown = [name for name in only if name not in {row.name for row in study.rows}]
    if unknown:
        raise StudyError(f"--only {unknown}: not rows of {study.path}; rows: {[r.name for r in study.rows]}")
    return tuple(row for row in study.rows if row.name in only)


def select_seeds(study: Study, seeds: Optional[Sequence[int]]) -> Tuple[int, ...]:
    """The seeds named by --seed (all when None), in the study's order: splits one study over machines."""
    if not seeds:
        return study.all_seeds
    unknown = sorted(set(seeds) - set(study.all_seeds))
    if unknown:
        raise StudyError(f"--seed {unknown}: not seeds of {study.path}; seeds: {list(study.all_seeds)}")
    return tuple(seed for seed in study.all_seeds if seed in seeds)


def selected_runs(study: Study, rows: Sequence[StudyRow],
                  seeds: Optional[Sequence[int]]) -> List[Tuple[StudyRow, int]]:
    """(row, seed) of each run of `rows` that the --seed selection names, row-major, each row over its own seeds."""
    selected = select_seeds(study, seeds)
    return [(row, seed) for row in rows for seed in study.seeds_of(row) if seed in selected]


def run_dir(output_root, study: Study, row: StudyRow, seed: int) -> Path:
    return Path(output_root) / study.name / row.name / f"seed{seed}"


def run_state(output_dir: Path) -> str:
    """'done' when eval_results.json is the final evaluation (no checkpoint, or written after
    model_final.pth), 'resume' when a checkpoint exists, else 'new'."""
    output_dir = Path(output_dir)
    results = output_dir / EVAL_RESULTS_FILENAME
    tag = output_dir / "last_checkpoint"
    checkpoint = output_dir / tag.read_text().strip() if tag.is_file() else None
    if results.is_file():
        if checkpoint is None:
            return "done"
        if checkpoint.name == "model_final.pth" and (
            not checkpoint.is_file() or results.stat().st_mtime >= checkpoint.stat().st_mtime
        ):
            return "done"
    return "resume" if checkpoint is not None and checkpoint.is_file() else "new"


def train_command(study: Study, row: StudyRow, seed: int, output_dir: Path, state: str,
                  train_script, num_gpus: Optional[int] = None) -> Tuple[str, ...]:
    """The tools/train_net.py command line of one run (flags first: train_net's KEY VALUE list ends it)."""
    command = [sys.executable, str(train_script), "--config-file", row.config]
    if num_gpus is not None:
        command += ["--num-gpus", str(num_gpus)]
    if state == "resume":
        command.append("--resume")
    command += ["OUTPUT_DIR", str(output_dir), "SEED", str(seed), *study.overrides, *row.overrides]
    return tuple(command)


def check_configs(study: Study, rows: Sequence[StudyRow]) -> dict:
    """Build each row's config with all its overrides (catches misspelt keys and bad values before any
    training); returns {row name: SOLVER.MAX_ITER}."""
    max_iter = {}
    for row in rows:
        opts = ["OUTPUT_DIR", "study_check", "SEED", str(study.seeds[0]), *study.overrides, *row.overrides]
        try:
            cfg = build_cfg(row.config, opts)
        except Exception as error:  # detectron2 raises KeyError, ValueError, AssertionError, ...
            raise StudyError(f"{study.path}: row {row.name!r} ({row.config}): {type(error).__name__}: "
                             f"{error}") from None
        if not cfg.DATASETS.TEST:
            raise StudyError(f"{study.path}: row {row.name!r}: DATASETS.TEST is empty, so its runs would "
                             f"write no {EVAL_RESULTS_FILENAME} to tabulate")
        max_iter[row.name] = cfg.SOLVER.MAX_ITER
    return max_iter


def plan_runs(study: Study, output_root, train_script, only=None, num_gpus=None,
              seeds=None) -> List[PlannedRun]:
    """Every run of the selected rows and seeds, row-major, with its state and command."""
    rows = select_rows(study, only)
    runs = selected_runs(study, rows, seeds)
    max_iter = check_configs(study, rows)
    plan = []
    for row, seed in runs:
        output_dir = run_dir(output_root, study, row, seed)
        state = run_state(output_dir)
        command = train_command(study, row, seed, output_dir, state, train_script, num_gpus)
        plan.append(PlannedRun(row, seed, output_dir, state, command, max_iter[row.name]))
    return plan


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGKILL it when the runner dies, so a killed study leaves no orphan
    training that a rerun would race with (elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_environment(torch_threads: Optional[int] = None) -> dict:
    """The environment of a run's process: unbuffered output and, with `torch_threads`, torch's CPU thread count
    (OMP_NUM_THREADS, MKL_NUM_THREADS); on CPU a seed repeats a run exactly only at the same thread count."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if torch_threads is not None:
        env.update(OMP_NUM_THREADS=str(torch_threads), MKL_NUM_THREADS=str(torch_threads))
    return env


def execute(run: PlannedRun, say: Callable[[str], None], prefix: str, torch_threads: Optional[int] = None) -> int:
    """Run one training subprocess, its output appended to <run>/study_run.log; report its iteration every
    PROGRESS_PERIOD_S seconds; return its exit status. The run gets its own process group, so an interrupted
    runner stops it together with the processes it started (--num-gpus)."""
    run.output_dir.mkdir(parents=True, exist_ok=True)
    with open(run.output_dir / RUN_LOG, "a") as log:
        process = subprocess.Popen(run.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   bufsize=1, preexec_fn=_die_with_parent, start_new_session=True,
                                   env=run_environment(torch_threads))
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {run.state} run, pid {process.pid}\n"
                  f"$ {shlex.join(run.command)}\n")
        log.flush()
        last_report = time.monotonic()
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                match = _ITER.search(line)
                if match and time.monotonic() - last_report >= PROGRESS_PERIOD_S:
                    say(f"{prefix}   iteration {int(match.group(1)) + 1}/{run.max_iter}")
                    last_report = time.monotonic()
            return process.wait()
        except BaseException:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            raise


def _tail(path: Path, lines: int = 15) -> str:
    return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])


@contextmanager
def run_lock(output_dir: Path):
    """Hold <run>/.study_lock (flock) while the run trains; yields False when another runner holds it, so
    several runners of one study share its runs instead of racing on one. The lock goes with the runner."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
            say(f"{prefix}: would {'resume' if run.state == 'resume' else 'start'}: {shlex.join(run.command)}")
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
            f"{_tail(run.output_dir / RUN_LOG)}")
    if not dry_run:
        other = f", {elsewhere} left to another runner" if elsewhere else ""
        say(f"[{study.name}] finished in {_duration(time.monotonic() - started)}: "
            f"{len(failures)} failed run(s){other}")
    return failures


def eval_command(study: Study, row: StudyRow, seed: int, output_dir: Path, dataset: str,
                 train_script) -> Tuple[str, ...]:
    """The tools/train_net.py --eval-only command that evaluates a finished run's final weights on `dataset`,
    with the run's own config and overrides, into <run>/eval_on_<dataset>/."""
    return (sys.executable, str(train_script), "--config-file", row.config, "--eval-only",
            "OUTPUT_DIR", str(output_dir / f"{EVAL_ON_PREFIX}{dataset}"), "SEED", str(seed), *study.overrides,
            *row.overrides, "MODEL.WEIGHTS", str(output_dir / FINAL_WEIGHTS), "DATASETS.TEST", repr((dataset,)))


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
            f"{_tail(eval_dir / RUN_LOG)}")
    return failures


def study_table(study: Study, output_root, precision: int = 1, dataset: Optional[str] = None) -> dict:
    """The table of all finished runs (missing seeds and rows marked): JSON-ready data plus 'markdown'. With
    `dataset` (one the runs were evaluated on by --evaluate-on), that dataset's figures; runs without them are
    missing."""
    evaluated_on = "" if dataset is None or dataset == study.dataset else f" --evaluate-on {dataset}"
    study = study if dataset is None else replace(study, dataset=dataset)
    rows = []
    for row in study.rows:
        runs, seeds, missing = [], [], []
        for seed in study.seeds_of(row):
            output_dir = run_dir(output_root, study, row, seed)
            run = load_run(f"{row.label} seed {seed}", output_dir) if run_state(output_dir) == "done" else None
            if run is not None and (study.dataset is None or study.dataset in run.results):
                runs.append(run)
                seeds.append(seed)
            else:
                missing.append(f"seed {seed}" if run is None else f"seed {seed} on {study.dataset}")
        compare_to = None if row.compare_to is None else study.row(row.compare_to).label
        rows.append(Row(row.label, tuple(runs), tuple(missing), compare_to, tuple(seeds)))
    comparisons = [(study.row(first).label, study.row(second).label) for first, second in study.comparisons]
    data = table_data(rows, study.dataset, study.row(study.base).label, study.metrics, comparisons=comparisons)
    for entry, row, table_row in zip(data["rows"], study.rows, rows):
        entry.update(name=row.name, config=row.config, overrides=list(row.overrides), seeds=list(table_row.seeds))
    data.update(study=study.name, study_file=str(study.path), seeds=list(study.seeds),
                overrides=list(study.overrides))
    heading = [f"### Study `{study.name}`", ""]
    if study.description:
        heading += [study.description.strip(), ""]
    overrides = f"; every row with `{' '.join(study.overrides)}`" if study.overrides else ""
    own_seeds = "".join(f"; {row.label}: seeds {', '.join(map(str, row.seeds))}" for row in study.rows
                        if row.seeds is not None and row.seeds != study.seeds)
    heading += [f"Command: `python tools/run_study.py {study.path}{evaluated_on}`; seeds "
                f"{', '.join(map(str, study.seeds))}{own_seeds}{overrides}.", ""]
    data["markdown"] = "\n".join(heading) + render_markdown(data, precision)
    return data


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def table_files(study: Study, dataset: Optional[str] = None) -> Tuple[str, str, str]:
    """table.md, table.json, per_class_ap50.png; with `_<dataset>` before the suffix for a dataset other
    than the study's own (a held-out split), so both tables stand side by side."""
    if dataset is None or dataset == study.dataset:
        return TABLE_MD, TABLE_JSON, TABLE_PNG
    return tuple(f"{Path(name).stem}_{dataset}{Path(name).suffix}" for name in (TABLE_MD, TABLE_JSON, TABLE_PNG))


def write_study_table(study: Study, output_root, precision: int = 1, dataset: Optional[str] = None) -> dict:
    """Write table.md, table.json and per_class_ap50.png (of `dataset` when given, named by table_files) into
    <output-root>/<study>/; return the data with the paths written under 'files'."""
    names = table_files(study, dataset)
    data = study_table(study, output_root, precision, dataset)
    folder = Path(output_root) / study.name
    folder.mkdir(parents=True, exist_ok=True)
    table_md, table_json, table_png = (folder / name for name in names)
    table_md.write_text(data["markdown"])
    panels = [
        (entry["label"] + (" (base)" if entry["is_base"] else ""),
         {name: (item["mean"], item["half_width"]) for name, item in entry["per_class_ap50"].items()})
        for entry in data["rows"]
    ]
    plot_per_class_ap50_panels(panels, table_png,
                               f"{study.name}: per-class AP50 on {data['dataset']} (mean, 95% interval)")
    data["files"] = [str(path) for path in (table_md, table_json, table_png)]
    with open(table_json, "w") as f:
        json.dump(_json_safe(data), f, indent=2, allow_nan=False)
        f.write("\n")
    return data


def build_parser() -> argparse.ArgumentParser:
    """The command line of tools/run_study.py."""
    parser = argparse.ArgumentParser(
        description="Train and evaluate every row x seed of a study file (skipping finished runs, resuming "
        "interrupted ones), then write its table: table.md, table.json, per_class_ap50.png.",
        epilog="example: tools/run_study.py studies/phantom_components.yaml; rerun the same command after "
        "an interruption to continue.",
    )
    parser.add_argument("study", type=Path, help="study file (YAML: name, base, seeds, overrides, rows)")
    parser.add_argument("--output-root", type=Path, default=Path("output/studies"),
                        help="runs go to OUTPUT_ROOT/<study name>/<row>/seed<S>/ (default: output/studies)")
    parser.add_argument("--only", action="append", metavar="ROW", help="run only this row (repeatable)")
    parser.add_argument("--seed", action="append", type=int, metavar="S", dest="seeds",
                        help="run only this seed of the study's seeds (repeatable); the table still shows all")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the study and print each run's state and command; train nothing")
    parser.add_argument("--table-only", action="store_true", help="train nothing, only write the table")
    parser.add_argument("--evaluate-on", metavar="DATASET",
                        help="train nothing: evaluate every finished run's model_final.pth on this registered "
                        "dataset (e.g. the held-out cxr_phantom_test), add it to the run's eval_results.json, "
                        "tabulate it into table_DATASET.md")
    parser.add_argument("--dataset", help="tabulate this dataset of the runs' results, not the study's "
                        "(files table_DATASET.*)")
    parser.add_argument("--num-gpus", type=int, help="passed to tools/train_net.py (GPUs, or CPU processes)")
    parser.add_argument("--torch-threads", type=_positive_int, metavar="N",
                        help="torch CPU threads of every run (OMP_NUM_THREADS; default: torch's choice). On CPU "
                        "a seed repeats a run exactly only at the same thread count (MODEL_ZOO.md says which)")
    parser.add_argument("--precision", type=int, default=1, help="decimals in table.md (default: 1)")
    return parser


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def main(argv: Sequence[str], train_script) -> int:
    """Run the command line; returns the exit status (1 when a run failed, 2 for a bad study file, 130 when
    interrupted by Ctrl-C or SIGTERM)."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill <runner>` acts as Ctrl-C
    try:
        return _main(build_parser().parse_args(argv), train_script)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace, train_script) -> int:
    try:
        study = load_study(args.study)
        if args.evaluate_on and (args.dry_run or args.table_only):
            raise StudyError("--evaluate-on evaluates, so it cannot go with --dry-run or --table-only")
        if args.evaluate_on:
            failures = evaluate_on(study, args.output_root, train_script, args.evaluate_on, args.only, args.seeds,
                                   torch_threads=args.torch_threads)
        elif args.table_only:
            failures = []
        else:
            failures = run_study(
                study, args.output_root, train_script, args.only, args.num_gpus, args.dry_run, seeds=args.seeds,
                torch_threads=args.torch_threads)
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n[{args.study}] interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    if args.dry_run:
        return 0
    try:
        data = write_study_table(study, args.output_root, args.precision, args.dataset or args.evaluate_on)
    except (ValueError, FileNotFoundError) as error:
        print(f"[{study.name}] no table: {error}", file=sys.stderr)
        return 1
    print(data["markdown"], end="")
    print(f"[{study.name}] table written: {', '.join(data['files'])}")
    if failures:
        print(f"[{study.name}] {len(failures)} run(s) failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0
